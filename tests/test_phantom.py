"""The phantom: truth consistent with itself and with the images, determinism, grids and dtypes."""
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi
import pytest

from lesioncount.image import Image, apply_affine
from lesioncount.io import load_image, read_tsv, save_image
from lesioncount.phantom import inject_lesions, make_study, random_shape, render
from lesioncount.phantom.acquisition import acquire, rigid, scanner_grid, slice_axis, to_storage

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data" / "open_ms_data"
# Small and fast: every 2nd template voxel (2 mm grids, 2x2x6 mm "thick" slices), high
# lesion rates so that every status occurs.
SMALL = dict(n_subjects=3, n_sessions=3, seed=5, step_mm=2, whole_head_fraction=0.5,
             thick_slice_fraction=0.5, arm_rates={"placebo": 2.5, "il2": 1.5})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return make_study(tmp_path_factory.mktemp("phantom") / "study", **SMALL)


def _truth(study):
    t = study / "derivatives" / "truth"
    return t, read_tsv(t / "truth_counts.tsv"), read_tsv(t / "truth_lesions.tsv"), \
        read_tsv(t / "truth_subjects.tsv"), read_tsv(t / "truth_motion.tsv")


def _dseg(study, sub, ses, desc="truth", kind="dseg"):
    p = study / "derivatives" / "truth" / sub / ses / "anat" / f"{sub}_{ses}_ce-gadolinium_desc-{desc}_{kind}.nii.gz"
    img = nib.load(str(p))
    return np.asarray(img.dataobj).astype(int), img.affine


def _post(study, sub, ses):
    hits = list((study / sub / ses / "anat").glob(f"{sub}_{ses}_ce-gadolinium_T1w.nii*"))
    assert len(hits) == 1
    return hits[0]


def test_bids_layout(study):
    assert (study / "dataset_description.json").exists()
    parts = read_tsv(study / "participants.tsv")
    assert [p["participant_id"] for p in parts] == ["sub-01", "sub-02", "sub-03"]
    assert {p["group"] for p in parts} <= {"placebo", "il2"}
    for p in parts:
        ses = read_tsv(study / p["participant_id"] / f"{p['participant_id']}_sessions.tsv")
        assert [s["session_id"] for s in ses] == ["ses-M00", "ses-M01", "ses-M02"]
        assert all(len(s["acq_time"]) == 19 and s["acq_time"][10] == "T" for s in ses)
        for s in ses:
            anat = study / p["participant_id"] / s["session_id"] / "anat"
            assert len(list(anat.glob("*_ce-gadolinium_T1w.nii*"))) == 1
            assert len(list(anat.glob("*_ses-M??_T1w.nii*"))) == 1


def test_truth_labels_match_tables(study):
    _, counts, lesions, subjects, _ = _truth(study)
    by = defaultdict(list)
    for r in lesions:
        by[(r["subject"], r["session"])].append(r)
    assert sum(int(c["gd_count"]) for c in counts) > 3, "the small study should have lesions"
    for c in counts:
        sub, ses = c["subject"], c["session"]
        lab, aff = _dseg(study, sub, ses)
        post = nib.load(str(_post(study, sub, ses)))
        assert lab.shape == post.shape and np.allclose(aff, post.affine, atol=1e-4)
        rows = by[(sub, ses)]
        ids = sorted(int(r["lesion"]) for r in rows)
        assert ids == sorted(int(v) for v in np.unique(lab) if v > 0)
        assert int(c["gd_count"]) == len(rows)
        assert int(c["new_gd_count"]) == sum(r["status"] == "new" for r in rows)
        for r in rows:
            assert int(r["n_voxels"]) == int((lab == int(r["lesion"])).sum())
            # the world centre lies within the lesion's voxels' extent (orientation is right)
            ijk = np.argwhere(lab == int(r["lesion"]))
            w = apply_affine(aff, ijk)
            centre = np.array([float(r["x"]), float(r["y"]), float(r["z"])])
            assert np.all(centre >= w.min(0) - 3.5) and np.all(centre <= w.max(0) + 3.5)
    for s in subjects:
        rows = [c for c in counts if c["subject"] == s["subject"]]
        assert int(rows[0]["new_gd_count"]) == 0
        assert int(s["cumulative_new_gd"]) == sum(int(c["new_gd_count"]) for c in rows[1:])
        assert int(rows[-1]["cumulative_new_gd"]) == int(s["cumulative_new_gd"])
        assert int(s["baseline_gd_count"]) == int(rows[0]["gd_count"])
        assert (s["eligible"] == "true") == (int(s["baseline_gd_count"]) <= 2)


def test_status_follows_convention_through_true_motion(study):
    """new <=> the lesion, mapped through the TRUE motion, overlaps no lesion of the previous scan."""
    _, counts, lesions, _, motion = _truth(study)
    mot = {(m["subject"], m["session"], m["transform"]): m for m in motion}

    def mat(sub, ses):
        m = mot[(sub, ses, "baseline_post_to_post")]
        a = np.eye(4)
        a[:3] = np.array([[float(m[f"m{r}{c}"]) for c in range(4)] for r in range(3)])
        return a

    statuses = set()
    sessions = defaultdict(list)
    for c in counts:
        sessions[c["subject"]].append(c["session"])
    for sub, sess in sessions.items():
        assert np.allclose(mat(sub, sess[0]), np.eye(4), atol=1e-9)
        for prev, cur in zip(sess, sess[1:]):
            lab_c, aff_c = _dseg(study, sub, cur)
            lab_p, aff_p = _dseg(study, sub, prev)
            to_prev = np.linalg.inv(aff_p) @ mat(sub, prev) @ np.linalg.inv(mat(sub, cur)) @ aff_c
            for r in (r for r in lesions if r["subject"] == sub and r["session"] == cur):
                ijk = apply_affine(to_prev, np.argwhere(lab_c == int(r["lesion"])))
                ijk = np.round(ijk).astype(int)
                ok = np.all((ijk >= 0) & (ijk < lab_p.shape), axis=1)
                overl = (lab_p[tuple(ijk[ok].T)] > 0).any()
                assert r["status"] == ("persistent" if overl else "new"), (sub, cur, r["lesion"])
                statuses.add(r["status"])
    assert "new" in statuses


def test_variants_load_and_agree(study):
    _, counts, _, _, _ = _truth(study)
    dtypes, orients = set(), set()
    for c in counts:
        p = _post(study, c["subject"], c["session"])
        img = load_image(p)
        assert np.isfinite(img.array).all() and img.array.max() > 0
        hdr = nib.load(str(p)).header
        dtypes.add(str(hdr.get_data_dtype()))
        if str(hdr.get_data_dtype()) == "int16":
            assert float(hdr["scl_slope"]) != 1.0
        orients.add("".join(nib.aff2axcodes(img.affine)))
        assert c["orientation"] == "".join(nib.aff2axcodes(img.affine))
        thick = c["acquisition"] == "2d3mm"
        sp = img.spacing
        assert np.isclose(sp.max(), 6.0 if thick else 2.0) and np.isclose(sp.min(), 2.0)
    assert len(orients) > 1 and len(dtypes) > 1


def test_white_matter_level_and_lesion_contrast(study):
    """On post, an enhancing lesion is brighter than its white-matter surroundings."""
    _, counts, lesions, _, _ = _truth(study)
    checked = 0
    for r in lesions:
        if float(r["contrast"]) < 0.4 or r["kind"] != "nodular" or float(r["volume_mm3"]) < 150:
            continue
        img = load_image(_post(study, r["subject"], r["session"]))
        lab, _ = _dseg(study, r["subject"], r["session"])
        m = lab == int(r["lesion"])
        from scipy import ndimage as ndi
        ring = ndi.binary_dilation(m, iterations=2) & ~ndi.binary_dilation(m, iterations=1) & (lab == 0)
        assert img.array[m].mean() > 1.1 * np.median(img.array[ring])
        checked += 1
    assert checked >= 1


def test_deterministic(tmp_path):
    kw = dict(n_subjects=1, n_sessions=2, seed=11, step_mm=2, arm_rates={"placebo": 2.0, "il2": 2.0})
    a = make_study(tmp_path / "a", **kw)
    b = make_study(tmp_path / "b", **kw)
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert fa == fb
    for rel in fa:
        if rel.name.endswith((".nii", ".nii.gz")):
            ia, ib = nib.load(str(a / rel)), nib.load(str(b / rel))
            assert np.array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj)), rel
            assert np.array_equal(ia.affine, ib.affine)
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    c = make_study(tmp_path / "c", **{**kw, "seed": 12})
    assert (c / "derivatives/truth/truth_lesions.tsv").read_bytes() != \
        (a / "derivatives/truth/truth_lesions.tsv").read_bytes()


@pytest.mark.parametrize("orient", ["RAS", "LAS", "LPS", "PIR", "ASR", "LPI"])
def test_orientations_map_to_same_world(orient):
    """A bright point acquired on grids of every orientation lands at the same world position."""
    model = Image(np.zeros((40, 40, 40), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    model.array[25, 12, 30] = 1000.0
    point = apply_affine(model.affine, np.array([25.0, 12.0, 30.0]))
    pose = rigid((0, 0, 0), (3.0, -2.0, 1.0))
    grid = scanner_grid((20.0, 20.0, 20.0), (51.0, 51.0, 51.0), (1.0, 1.0, 1.0), orient)
    assert "".join(nib.aff2axcodes(grid.affine)) == orient
    arr = acquire(model, pose, grid)
    ijk = np.unravel_index(np.argmax(arr), arr.shape)
    assert np.allclose(apply_affine(grid.affine, np.array(ijk, float)), point + [3.0, -2.0, 1.0], atol=1e-6)
    # with a rotation the point lands where the pose sends it (to the nearest voxel)
    pose = rigid((5.0, -8.0, 20.0), (1.0, 2.0, -1.5), center=(18.0, 22.0, 19.0))
    arr = acquire(model, pose, grid)
    ijk = np.unravel_index(np.argmax(arr), arr.shape)
    got = apply_affine(grid.affine, np.array(ijk, float))
    assert np.linalg.norm(got - apply_affine(pose, point)) < 0.9


def test_thick_slice_profile_averages():
    """A 1 mm-thin bright sheet on a 3 mm slice grid shows at one third of its value."""
    model = Image(np.zeros((30, 30, 30), np.float32), np.eye(4))
    model.array[:, :, 15] = 90.0
    grid = scanner_grid((15.0, 15.0, 15.0), (12.0, 12.0, 15.0), (1.0, 1.0, 3.0), "LAI")
    ax = slice_axis(grid)
    assert ax == 2
    arr = acquire(model, np.eye(4), grid, thick_axis=ax, thickness=3)
    assert np.isclose(arr.max(), 30.0, atol=1e-3)
    assert np.isclose(arr.sum(axis=ax).max(), 30.0, atol=1e-3)  # seen in one slice only


def test_render_volume_on_anisotropic_grid():
    rng = np.random.default_rng(0)
    shape = random_shape(rng, (1.3, -0.4, 2.2), 10.0, jitter=False)
    aff = np.array([[0.0, 0.0, -1.0, 20.0], [1.0, 0.0, 0.0, -20.0], [0.0, 3.0, 0.0, -21.0],
                    [0, 0, 0, 1.0]])
    r = render(shape, (40, 15, 40), aff)
    vol = r.coverage.sum() * 3.0
    assert abs(vol - 4 / 3 * np.pi * 125) / (4 / 3 * np.pi * 125) < 0.03
    assert r.label_mask().sum() * 3.0 == pytest.approx(vol, rel=0.15)


def test_int16_storage_keeps_values(tmp_path):
    arr = np.linspace(0, 1234.5, 1000, dtype=np.float32).reshape(10, 10, 10)
    data, dt = to_storage(arr, "int16")
    p = save_image(Image(data, np.diag([-1.0, 1.0, 2.0, 1.0])), tmp_path / "x.nii.gz", dtype=np.dtype(dt))
    hdr = nib.load(str(p)).header
    assert hdr.get_data_dtype() == np.int16 and float(hdr["scl_slope"]) != 1.0
    assert np.allclose(load_image(p).array, arr, atol=0.05)


def test_inject_lesions_synthetic():
    rng = np.random.default_rng(3)
    shape = (60, 60, 40)
    aff = np.array([[-1.0, 0, 0, 30], [0, 1.0, 0, -30], [0, 0, 1.5, -30], [0, 0, 0, 1]])
    base = np.full(shape, 100.0, np.float32)
    post = Image(base + rng.normal(0, 2, shape).astype(np.float32), aff)
    pre = Image(base.copy(), aff)
    wm = np.zeros(shape, bool)
    wm[10:50, 10:50, 8:32] = True
    avoid = np.zeros(shape, bool)
    avoid[30, 30, 20] = True
    p2, q2, labels, recs, _ = inject_lesions(post, pre, wm, 4, rng, diameter_mm=(4, 8), contrast=(0.5, 0.5),
                                          avoid=avoid)
    assert len(recs) == 4 and labels.max() == 4
    assert sorted(np.unique(labels[labels > 0]).tolist()) == [r["lesion"] for r in recs]
    assert not labels[30, 30, 20] and not np.any(labels[~wm] & 0)
    changed = np.abs(p2.array - post.array) > 1e-3
    from scipy import ndimage as ndi
    assert not np.any(changed & ~ndi.binary_dilation(labels > 0, iterations=3))
    for r in recs:
        m = labels == r["lesion"]
        assert p2.array[m].mean() > 115 and p2.array[m].max() > 135  # 50 % contrast on WM ~100
        assert q2.array[m].mean() < 100  # pre: iso- to hypointense
        ijk = apply_affine(np.linalg.inv(aff), np.array([r["x"], r["y"], r["z"]]))
        assert labels[tuple(np.round(ijk).astype(int))] == r["lesion"]
    assert post.array.max() < 120  # the input is not modified


def test_chronic_lesions_are_flair_bright_not_enhancing_and_injected_lesions_avoid_them():
    """paint_chronic_lesions (the U-Net's template look-alikes): FLAIR-bright, never
    brighter than white matter on post, darker or iso on pre; enhancing lesions injected
    with ``avoid`` keep away from them."""
    from lesioncount.phantom.lesions import FLAIR_CHRONIC, paint_chronic_lesions

    rng = np.random.default_rng(5)
    shape = (60, 60, 60)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    post, pre, flair = (np.full(shape, v, np.float32) for v in (100.0, 80.0, 50.0))
    wm = np.zeros(shape, bool)
    wm[8:52, 8:52, 8:52] = True
    chronic = paint_chronic_lesions(post, pre, flair, wm, aff, 4, rng, levels=(100.0, 80.0, 50.0),
                                    diameter_mm=(5, 9))
    from lesioncount.lesions import components

    lab, n = components(chronic)
    assert n == 4
    assert post[chronic].max() <= 100.0 + 1e-3 and pre[chronic].max() <= 80.0 + 1e-3
    for k in range(1, n + 1):
        assert 50.0 * (FLAIR_CHRONIC[0] - 0.1) < np.median(flair[lab == k]) <= 50.0 * FLAIR_CHRONIC[1]
    assert np.all(flair[~ndi.binary_dilation(chronic, iterations=3)] == 50.0)
    _, _, labels, recs, _ = inject_lesions(Image(post, aff), Image(pre, aff), wm, 4, rng,
                                           diameter_mm=(4, 6), avoid=chronic)
    assert len(recs) == 4
    assert not np.any(ndi.binary_dilation(labels > 0, iterations=2) & chronic)


@pytest.mark.skipif(not (SHARED / "patient07" / "T1POST.nii.gz").exists(),
                    reason="shared real patient data not present")
def test_patient_background(tmp_path):
    s = make_study(tmp_path / "p", n_subjects=1, n_sessions=2, seed=2, step_mm=2,
                   backgrounds=("patients",), arm_rates={"placebo": 3.0, "il2": 3.0})
    counts = read_tsv(s / "derivatives/truth/truth_counts.tsv")
    assert {c["background"] for c in counts} == {"patient07"}
    assert all(c["whole_head"] == "false" for c in counts)
    chronic, _ = _dseg(s, "sub-01", "ses-M00", "chronic", "mask")
    assert chronic.sum() > 0  # the real non-enhancing lesions are in the chronic mask
    assert not (s / "derivatives/truth/sub-01/ses-M00/anat/sub-01_ses-M00_ce-gadolinium_desc-mimics_dseg.nii.gz").exists()


def test_loaders(tmp_path):
    from lesioncount.errors import InputError
    from lesioncount.phantom import load_patient, load_template

    with pytest.raises(InputError, match="patient07"):
        load_patient("patient07", root=tmp_path)
    t1, gm, wm = load_template(step_mm=4)
    assert t1.shape == gm.shape == wm.shape and np.isclose(t1.spacing, 4.0).all()
    assert 0.0 <= gm.min() and wm.max() <= 1.0 and wm.max() > 0.9
    with pytest.raises(InputError, match="not empty"):
        make_study(Path(__file__).parent, n_subjects=1, n_sessions=1)
