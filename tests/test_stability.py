"""Foci that enhance at one place on many visits (veins) are not active lesions."""
from __future__ import annotations

import numpy as np
import pytest

from lesioncount.config import TrackingConfig
from lesioncount.image import Image
from lesioncount.registration import rigid_transform
from lesioncount.stability import Visit, merge_stable_splits, stable_foci, transient_foci

AFF = np.diag([1.0, 1.0, 3.0, 1.0])
SHAPE = (40, 40, 14)


def _ball(centre, r=2.5):
    ii, jj, kk = np.indices(SHAPE)
    return ((ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + ((kk - centre[2]) * 3) ** 2) <= r ** 2


VEIN, LESION = (10, 10, 5), (28, 26, 8)


def _visits(days, vein_z, lesion_on, detected_vein, shift=None):
    """A vein enhancing (z = vein_z) on every visit but detected only on some, and a
    lesion enhancing (z = 12) on the visits in ``lesion_on``."""
    rng = np.random.default_rng(0)
    out = []
    for i, d in enumerate(days):
        z = rng.normal(0, 1, SHAPE).astype(np.float32)
        z[_ball(VEIN)] += vein_z
        lab = np.zeros(SHAPE, np.int32)
        if i in detected_vein:
            lab[_ball(VEIN)] = 1
        if i in lesion_on:
            z[_ball(LESION)] += 12
            lab[_ball(LESION)] = lab.max() + 1
        out.append(Visit(Image(lab, AFF), Image(z, AFF), None, d))
    return out


def test_vein_seen_on_every_visit_is_stable_lesion_is_not():
    v = _visits([0, 28, 56, 84, 112, 140], vein_z=4.0, lesion_on={2, 3}, detected_vein={0, 2, 5})
    res = stable_foci(v)
    assert res[0] == [1] and res[5] == [1]
    assert res[2] == [1]          # the vein (label 1), not the lesion (label 2)
    assert res[3] == []           # the lesion on its own: enhancing on 2 visits only


def test_faint_everywhere_else_is_not_stable():
    # the same place enhancing only on the visits where it was detected (z 4 elsewhere 0)
    v = _visits([0, 28, 56, 84, 112, 140], vein_z=0.0, lesion_on={1, 2, 3}, detected_vein=set())
    assert all(r == [] for r in stable_foci(v))


def test_short_span_or_disabled_is_not_stable():
    v = _visits([0, 7, 14, 21, 28, 35], vein_z=4.0, lesion_on=set(), detected_vein={0, 3})
    assert all(r == [] for r in stable_foci(v))  # 35 days < stable_min_days
    v = _visits([0, 28, 56, 84, 112, 140], vein_z=4.0, lesion_on=set(), detected_vein={0, 3})
    assert all(r == [] for r in stable_foci(v, TrackingConfig(stable_min_sessions=0)))
    # unknown days: the visit count alone decides
    v = _visits([None] * 4, vein_z=4.0, lesion_on=set(), detected_vein={1})
    assert stable_foci(v)[1] == [1]


def test_follows_the_transforms():
    """A follow-up acquired with the head moved: the vein is found through the transform."""
    tx = rigid_transform((0, 0, 0), (6.0, 0.0, 0.0))  # baseline -> follow-up: +6 mm in x
    days = [0, 28, 56, 84]
    v = _visits(days, vein_z=4.0, lesion_on=set(), detected_vein={0})
    moved = []
    for i, w in enumerate(v):
        if i == 0:
            moved.append(w)
            continue
        z = np.asarray(w.enhancement.array)
        lab = np.asarray(w.labels.array)
        # the follow-up's content sits 6 mm further along +x (6 voxels along i)
        moved.append(Visit(Image(np.roll(lab, 6, axis=0), AFF), Image(np.roll(z, 6, axis=0), AFF), tx, w.days))
    assert stable_foci(moved)[0] == [1]
    unmoved = [moved[0]] + [Visit(w.labels, w.enhancement, None, w.days) for w in moved[1:]]
    assert stable_foci(unmoved)[0] == []


# --- transient_foci: look-alikes the detector set aside, kept when they come and go


def _deferred(visits, which):
    """Per visit: the vein (label 1) and/or the lesion (label 2) as deferred candidates."""
    out = []
    for i, v in enumerate(visits):
        lab = np.zeros(SHAPE, np.int32)
        if "vein" in which.get(i, ()):
            lab[_ball(VEIN)] = 1
        if "lesion" in which.get(i, ()):
            lab[_ball(LESION)] = 2
        out.append(Image(lab, AFF) if lab.any() else None)
    return out


def _no_detections(visits):
    return [Visit(Image(np.zeros(SHAPE, np.int32), AFF), v.enhancement, v.to_baseline, v.days)
            for v in visits]


def test_transient_lesion_kept_vein_is_not():
    # the vein enhances (z 9) on all 6 visits; the lesion (z 12) on visits 2 and 3 only;
    # the detector rejected both as look-alikes on visits 2 and 3
    v = _no_detections(_visits([0, 28, 56, 84, 112, 140], vein_z=9.0, lesion_on={2, 3},
                               detected_vein=set()))
    res = transient_foci(v, _deferred(v, {2: ("vein", "lesion"), 3: ("vein", "lesion")}))
    assert res[2] == [2] and res[3] == [2]
    assert all(r == [] for i, r in enumerate(res) if i not in (2, 3))


def test_transient_needs_strong_enhancement_visits_and_rule_on():
    v = _no_detections(_visits([0, 28, 56, 84, 112, 140], vein_z=0.0, lesion_on={2},
                               detected_vein=set()))
    d = _deferred(v, {2: ("lesion",)})
    assert transient_foci(v, d)[2] == [2]
    # peaks under transient_min_z (12 + noise < 20) but its place is quiet on every other
    # visit: still kept; under both floors: not strong enough to overrule the detector
    assert transient_foci(v, d, TrackingConfig(transient_min_z=20.0))[2] == [2]
    assert transient_foci(v, d, TrackingConfig(transient_min_z=20.0,
                                               transient_quiet_min_z=20.0))[2] == []
    assert transient_foci(v, d, TrackingConfig(transient_max_sessions=0))[2] == []
    # three visits are too few to tell a lesion from an intermittently enhanced vessel
    assert all(r == [] for r in transient_foci(v[:3], d[:3]))
    # on three visits (max 2): not transient
    v3 = _no_detections(_visits([0, 28, 56, 84, 112, 140], vein_z=0.0, lesion_on={1, 2, 3},
                                detected_vein=set()))
    assert transient_foci(v3, _deferred(v3, {2: ("lesion",)}))[2] == []


def test_track_subject_counts_a_transient_deferred_lesion_as_new(tmp_path):
    """Through the pipeline's tracking stage: a deferred candidate enhancing on one visit of
    five becomes a new lesion (and is written to the label map); a deferred vein does not."""
    from lesioncount.config import PipelineConfig
    from lesioncount.dataset import Session, Subject
    from lesioncount.io import save_image
    from lesioncount.outputs import SessionPaths
    from lesioncount.longitudinal import track_subject
    from lesioncount.pipeline import _save_transform

    rng = np.random.default_rng(1)
    sessions, sidecars = [], {}
    for i in range(5):
        ses = f"ses-M{i:02d}"
        post = tmp_path / "in" / f"sub-01_{ses}_ce-gadolinium_T1w.nii.gz"
        save_image(Image(np.zeros(SHAPE, np.float32), AFF), post)
        sessions.append(Session("sub-01", ses, post, days=28.0 * i))
        p = SessionPaths(tmp_path / "out", "sub-01", ses)
        z = rng.normal(0, 1, SHAPE).astype(np.float32)
        z[_ball(VEIN)] += 9.0
        deferred = _ball(VEIN).copy()
        if i == 2:
            z[_ball(LESION)] += 12.0
            deferred |= _ball(LESION)
        save_image(Image(np.zeros(SHAPE, np.uint8), AFF), p.detected)
        save_image(Image(deferred.astype(np.uint8), AFF), p.deferred)
        save_image(Image(z, AFF), p.enhancement, dtype=np.int16)
        if i:
            _save_transform(rigid_transform((0, 0, 0), (0.0, 0.0, 0.0)), p.to_baseline)
        sidecars[ses] = {"registration": {}, "pre_used": True, "detector": "classical"}
    subject = Subject("sub-01", tuple(sessions), "placebo")

    res = track_subject(subject, sidecars, PipelineConfig(), tmp_path / "out")
    assert [c["new_gd_count"] for c in res.counts] == [0, 0, 1, 0, 0]
    assert [c["transient_kept"] for c in res.counts] == [0, 0, 1, 0, 0]
    assert res.subject["cumulative_new_gd"] == 1
    (les,) = res.lesions
    assert les["session"] == "ses-M02" and les["status"] == "new"
    assert les["transient"] is True  # flagged for the reader: the detector had set it aside
    assert abs(les["x"] - LESION[0]) < 1 and abs(les["z"] - 3 * LESION[2]) < 1
    lab = np.asarray(nib_load(SessionPaths(tmp_path / "out", "sub-01", "ses-M02").lesions).dataobj)
    assert lab[LESION] == 1 and lab[VEIN] == 0

    off = PipelineConfig().replace(tracking=TrackingConfig(transient_max_sessions=0))
    res = track_subject(subject, sidecars, off, tmp_path / "out")
    assert res.subject["cumulative_new_gd"] == 0 and not res.lesions


def nib_load(path):
    import nibabel as nib

    return nib.load(str(path))


def test_transient_counts_only_visits_whose_brain_mask_covers_the_place():
    """A focus at the edge of the brain that most visits' masks leave out (their enhancement
    map is 0 there) is not evidence of a transient lesion."""
    v = _no_detections(_visits([0, 28, 56, 84, 112, 140], vein_z=9.0, lesion_on=set(),
                               detected_vein=set()))
    d = _deferred(v, {2: ("vein",)})
    assert transient_foci(v, d)[2] == []          # the vein enhances on all 6 visits
    cut = np.ones(SHAPE, np.uint8)
    cut[_ball(VEIN, r=4.0)] = 0
    masked = []
    for i, w in enumerate(v):
        outside = i not in (2, 3)                   # 4 visits' masks leave the vein out...
        z = np.where(cut == 0, 0, np.asarray(w.enhancement.array)) if outside else w.enhancement.array
        brain = Image(cut if outside else np.ones(SHAPE, np.uint8), AFF)
        masked.append(Visit(w.labels, Image(z.astype(np.float32), AFF), None, w.days, brain))
    assert transient_foci(masked, d)[2] == []     # ...so only 2 visits say anything
    no_masks = [Visit(w.labels, w.enhancement, None, w.days) for w in masked]
    assert transient_foci(no_masks, d)[2] == [1]  # read as "enhanced on 2 of 6" without them


def _faint_lesion_visits(elsewhere: float):
    """A lesion peaking at z ~6.5 (under transient_min_z) on visit 2 of 6; its place reads
    ``elsewhere`` (median z) on the other visits."""
    rng = np.random.default_rng(1)
    out = []
    for i in range(6):
        z = rng.normal(0, 0.3, SHAPE).astype(np.float32)
        z[_ball(LESION)] += 6.0 if i == 2 else elsewhere
        out.append(Visit(Image(np.zeros(SHAPE, np.int32), AFF), Image(z, AFF), None, 28.0 * i))
    return out


def test_a_faint_deferred_lesion_is_kept_only_where_its_place_is_quiet_on_the_other_visits():
    quiet = _faint_lesion_visits(0.0)
    d = _deferred(quiet, {2: ("lesion",)})
    assert transient_foci(quiet, d)[2] == [2]
    # the same peak where the place hovers at z 1.9 on every other visit (under stable_z, so
    # "enhanced" on one visit only): a structure at the edge of detection, not kept
    hover = _faint_lesion_visits(1.9)
    assert transient_foci(hover, _deferred(hover, {2: ("lesion",)}))[2] == []
    # ...unless it peaks at transient_min_z, as before the quiet rule
    assert transient_foci(hover, _deferred(hover, {2: ("lesion",)}),
                          TrackingConfig(transient_min_z=6.0))[2] == [2]
    # the quiet floor itself
    assert transient_foci(quiet, d, TrackingConfig(transient_quiet_min_z=7.0))[2] == []


@pytest.mark.parametrize("vein_on_every_visit", [True, False])
def test_a_part_split_off_a_persistent_lesion_is_given_back_when_its_place_always_enhances(
        vein_on_every_visit):
    """Tuning seed 17: a persistent lesion and the falx it touched were one component at one
    visit; tracking split the falx part off as a new lesion. Where that part enhances on
    every visit it is given back to the lesion; where it enhances on this visit only (a new
    lesion touching an old one) it stays new."""
    from lesioncount.tracking import NEW, PERSISTENT, track

    days = [0, 28, 56, 84, 112, 140]
    rng = np.random.default_rng(3)
    old, part = _ball(LESION, 3.5), _ball((28, 19, 8), 3.5)  # touching along j
    assert not (old & part).any() and (old | part).sum() > old.sum()
    labels, visits = [], []
    for i, d in enumerate(days):
        z = rng.normal(0, 1, SHAPE).astype(np.float32)
        z[old] += 12.0 if i in (1, 2) else 0.0
        if vein_on_every_visit or i == 2:
            z[part] += 8.0
        lab = np.zeros(SHAPE, np.int32)
        if i == 1:
            lab[old] = 1
        if i == 2:
            lab[old | part] = 1  # one component: the lesion joined by the part
        if i == 3 and vein_on_every_visit:
            lab[part] = 1  # the part alone on the next visit (the lesion has faded)
        labels.append(lab)
        visits.append(Visit(Image(lab, AFF), Image(z, AFF), None, d))
    tracked = track(labels, (1.0, 1.0, 3.0))
    assert sorted(x.status for x in tracked[2].lesions) == [NEW, PERSISTENT]  # the premise
    grid = Image(np.zeros(SHAPE, np.uint8), AFF)  # the tracking grid is the visits' here
    out, merged = merge_stable_splits(tracked, [f"v{i}" for i in range(6)], visits, grid)
    lesion_track = tracked[1].lesions[0].track
    if vein_on_every_visit:
        assert merged == {"v2": 1}
        assert [(x.track, x.status) for x in out[2].lesions] == [(lesion_track, PERSISTENT)]
        assert np.array_equal(out[2].labels > 0, old | part)
        # the part alone at the next visit was matched to the part's track; it now carries
        # the lesion's (the part's own track is used nowhere any more)
        assert [x.track for x in tracked[3].lesions] != [lesion_track]  # the premise
        assert [(x.track, x.status) for x in out[3].lesions] == [(lesion_track, PERSISTENT)]
        assert np.array_equal(out[3].labels, tracked[3].labels)
    else:
        assert merged == {}
        assert out[2] is tracked[2] and out[3] is tracked[3]
    assert all(a is b for k, (a, b) in enumerate(zip(out, tracked)) if k not in (2, 3))


def test_a_lesion_beside_a_vein_is_not_stable_for_the_veins_spill_over():
    """A lesion enhancing strongly on one visit picks up a touching vein's spill-over
    (median z ~2.5) on every visit: over stable_z, far under the lesion's own level
    (stable_relative). It stays a lesion; the vein, alike on every visit, stays stable."""
    rng = np.random.default_rng(1)
    days = [0, 28, 56, 84, 112, 140]
    out = []
    for i, d in enumerate(days):
        z = rng.normal(0, 0.3, SHAPE).astype(np.float32)
        lab = np.zeros(SHAPE, np.int32)
        z[_ball(LESION)] += 2.5                      # the vein's spill-over, every visit
        z[_ball(VEIN)] += 6.0 if i % 2 else 4.0      # a vein, brighter on some visits
        lab[_ball(VEIN)] = 1
        if i == 2:
            z[_ball(LESION)] += 15.0
            lab[_ball(LESION)] = 2
        out.append(Visit(Image(lab, AFF), Image(z, AFF), None, d))
    res = stable_foci(out)
    assert res[2] == [1]                              # the vein, not the lesion
    assert all(r == [1] for r in res)
    # without the relative level, the spill-over made the lesion "stable" too
    assert stable_foci(out, TrackingConfig(stable_relative=0.0))[2] == [1, 2]
