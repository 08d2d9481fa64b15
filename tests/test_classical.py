"""The classical Gd+ detector on small synthetic heads with anisotropic, non-identity affines.

Each synthetic head is defined in world millimetres (an ellipsoidal brain: white matter
inside, a grey-matter rim, a ventricle) and sampled on the test grid with partial volume
(sub-samples along the thick axis), so 1 mm and 3 mm-slice versions show the same anatomy.
"""
from __future__ import annotations

import numpy as np
import pytest

from lesioncount.config import ClassicalConfig, LesionConfig
from lesioncount.image import Image
from lesioncount.lesions import label_lesions
from lesioncount.segmentation import Detection
from lesioncount.segmentation.classical import detect

CENTRE = np.array([3.0, -10.0, 12.0])        # world mm, away from the origin on purpose
BRAIN_RADII = np.array([34.0, 40.0, 30.0])
NOISE = 0.03                                  # relative to white matter (SNR ~33)


def grid(thick: bool, oblique: bool = False) -> np.ndarray:
    """A 4x4 affine: axes permuted and flipped, 1 mm or 1 x 1 x 3 mm (thick slices on array axis 0)."""
    sp = (3.0, 1.0, 1.0) if thick else (1.0, 1.0, 1.0)
    # array axis 0 -> world S (inferior to superior flipped), axis 1 -> world -R, axis 2 -> world A
    rot = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    if oblique:
        t = np.deg2rad(12.0)
        rz = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        rot = rz @ rot
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(sp)
    shape = np.ceil(2 * 44.0 / np.asarray(sp)).astype(int)
    aff[:3, 3] = CENTRE - aff[:3, :3] @ ((shape - 1) / 2.0)
    return aff, tuple(int(s) for s in shape)


def world_points(shape, aff) -> list[np.ndarray]:
    """World coordinates of sub-samples 1 mm apart along each voxel's axes (partial volume)."""
    sp = np.sqrt((aff[:3, :3] ** 2).sum(0))
    subs = [np.round(s).astype(int) for s in sp]
    offs = [(np.arange(n) + 0.5) / n - 0.5 for n in subs]
    ijk = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij"), -1)
    out = []
    for a in offs[0]:
        for b in offs[1]:
            for c in offs[2]:
                out.append((ijk + np.array([a, b, c], np.float32)) @ aff[:3, :3].T.astype(np.float32)
                           + aff[:3, 3].astype(np.float32))
    return out


def head(thick=False, lesions=(), oblique=False, seed=0, pre_map=None):
    """Post (and pre) images and a brain mask.

    ``lesions``: tuples (kind, centre offset from CENTRE, size, value) with kinds
    ``ball`` (radius), ``ring`` (radius; rim 40 % of it), ``tube`` (radius, along world x,
    40 mm), ``sheet`` (thickness, tangent to the brain surface at the top), ``dark``
    (radius; hypointense). ``value`` multiplies white matter on post.
    """
    aff, shape = grid(thick, oblique)
    acc_post = np.zeros(shape, np.float32)
    acc_pre = np.zeros(shape, np.float32)
    acc_brain = np.zeros(shape, np.float32)
    pts = world_points(shape, aff)
    for p in pts:
        d = p - CENTRE
        rr = np.sqrt(((d / BRAIN_RADII) ** 2).sum(-1))
        brain = rr < 1.0
        tissue = np.where(rr < 0.88, 1.0, 0.75).astype(np.float32)       # WM, GM rim
        vent = (((d - np.array([0, 5, 3])) / np.array([6.0, 14.0, 5.0])) ** 2).sum(-1) < 1
        tissue = np.where(vent, 0.3, tissue)
        pre = tissue.copy()
        post = tissue.copy()
        for kind, off, size, val in lesions:
            q = d - np.asarray(off, float)
            r = np.sqrt((q ** 2).sum(-1))
            if kind == "ball":
                post = np.where(r < size, val, post)
            elif kind == "ring":
                post = np.where((r < size) & (r > 0.6 * size), val, post)
                post = np.where(r <= 0.6 * size, 0.8, post)
                pre = np.where(r < size, 0.8, pre)
            elif kind == "dark":
                post = np.where(r < size, val, post)
                pre = np.where(r < size, val, pre)
            elif kind == "tube":
                rt = np.sqrt(q[..., 1] ** 2 + q[..., 2] ** 2)
                post = np.where((rt < size) & (np.abs(q[..., 0]) < 20), val, post)
            elif kind == "sheet":
                # a thin shell just inside the brain surface over its top (dura-like)
                post = np.where((rr > 1.0 - size / BRAIN_RADII[2]) & (rr < 1.0) & (d[..., 2] > 12),
                                val, post)
        acc_post += np.where(brain, post, 0)
        acc_pre += np.where(brain, pre, 0)
        acc_brain += brain
    n = len(pts)
    rng = np.random.default_rng(seed)
    post = acc_post / n
    pre = acc_pre / n
    brain = acc_brain / n >= 0.5
    # a smooth bias field, different on pre and post
    ijk = np.indices(shape, dtype=np.float32)
    world = np.tensordot(aff[:3, :3], ijk, 1) + aff[:3, 3][:, None, None, None]
    post = post * (1 + 0.1 * np.tanh((world[0] - CENTRE[0]) / 40.0))
    pre = pre * (1 - 0.08 * np.tanh((world[2] - CENTRE[2]) / 40.0))
    if pre_map is not None:
        pre = pre_map(pre)
    post = post * 500 + rng.normal(0, NOISE * 500 / np.sqrt(1.0), shape)
    pre = pre * 300 + rng.normal(0, NOISE * 300, shape)
    post = np.where(brain, post, 0).astype(np.float32)
    pre = np.where(brain, pre, 0).astype(np.float32)
    return Image(post, aff), Image(pre, aff), brain


def count(det: Detection, aff) -> int:
    return int(label_lesions(det.mask, aff).max())


def volume(det: Detection, aff) -> float:
    return float(det.mask.sum() * abs(np.linalg.det(aff[:3, :3])))


BALL = ("ball", (8.0, 6.0, -4.0), 4.0, 1.6)


def test_ball_found_with_its_volume():
    post, pre, brain = head(lesions=[BALL])
    det = detect(post, None, brain)
    assert count(det, post.affine) == 1
    v_true = 4 / 3 * np.pi * 4.0 ** 3
    assert abs(volume(det, post.affine) - v_true) / v_true < 0.2
    # the detection is where the ball is
    ijk = np.argwhere(det.mask).mean(0)
    xyz = post.affine[:3, :3] @ ijk + post.affine[:3, 3]
    assert np.linalg.norm(xyz - (CENTRE + BALL[1])) < 1.5


def test_ball_with_pre_found_and_nothing_else():
    post, pre, brain = head(lesions=[BALL], oblique=True)
    det = detect(post, pre, brain)
    assert count(det, post.affine) == 1
    assert det.info["reference"] == "pre_contrast"


def test_ring_lesion_is_one_lesion_with_full_volume():
    post, pre, brain = head(lesions=[("ring", (-8.0, 4.0, 8.0), 5.0, 1.7)])
    for p in (None, pre):
        det = detect(post, p, brain)
        assert count(det, post.affine) == 1
        v_true = 4 / 3 * np.pi * 5.0 ** 3
        assert abs(volume(det, post.affine) - v_true) / v_true < 0.25


def test_bright_tube_is_rejected_as_vessel():
    post, pre, brain = head(lesions=[("tube", (0.0, -12.0, -6.0), 1.5, 1.8)])
    det = detect(post, pre, brain)
    assert count(det, post.affine) == 0
    assert det.info["n_candidates"] >= 1          # it did light up ...
    reasons = [c["reason"] for c in det.info["candidates"]]
    assert any(r in ("elongated", "thin") for r in reasons)   # ... and was rejected as a vessel


def test_bright_sheet_at_the_surface_is_rejected_as_dura():
    post, pre, brain = head(lesions=[("sheet", (0, 0, 0), 1.5, 1.8)])
    for p in (None, pre):
        det = detect(post, p, brain)
        assert count(det, post.affine) == 0
        assert det.info["n_candidates"] >= 1


def test_dark_lesion_is_not_detected():
    post, pre, brain = head(lesions=[("dark", (8.0, 6.0, -4.0), 5.0, 0.55)])
    for p in (None, pre):
        det = detect(post, p, brain)
        assert count(det, post.affine) == 0


def test_pre_of_different_contrast_only_the_lesion_fires():
    # pre is a different sequence: a nonlinear monotone function of the tissue contrast
    post, pre, brain = head(lesions=[BALL], pre_map=lambda x: x ** 2.5 + 0.1 * x)
    det = detect(post, pre, brain)
    assert count(det, post.affine) == 1
    lab = label_lesions(det.mask, post.affine)
    ijk = np.argwhere(lab == 1).mean(0)
    xyz = post.affine[:3, :3] @ ijk + post.affine[:3, 3]
    assert np.linalg.norm(xyz - (CENTRE + BALL[1])) < 1.5
    # outside the lesion, the enhancement map is noise (no tissue-contrast residue)
    from scipy import ndimage as ndi

    near = ndi.distance_transform_edt(lab == 0, sampling=post.spacing) <= 3.0
    far = brain & ~near
    assert np.percentile(det.enhancement[far], 99.9) < ClassicalConfig().seed_z


def test_same_result_for_1mm_and_3mm_slices():
    big = ("ball", (-6.0, -8.0, 4.0), 5.0, 1.6)
    vols = []
    for thick in (False, True):
        post, pre, brain = head(thick=thick, lesions=[big])
        assert np.allclose(sorted(post.spacing), [1, 1, 3] if thick else [1, 1, 1])
        det = detect(post, pre, brain)
        assert count(det, post.affine) == 1
        vols.append(volume(det, post.affine))
    assert abs(vols[0] - vols[1]) / vols[0] < 0.2


def test_outputs_are_finite_typed_and_bounded():
    post, pre, brain = head(thick=True, lesions=[BALL])
    arr = post.array.copy()
    arr[~brain] = np.nan                         # NaN outside the brain must not leak
    det = detect(Image(arr, post.affine), pre, brain)
    assert det.enhancement.dtype == np.float32 and det.probability.dtype == np.float32
    assert det.mask.dtype == bool and det.mask.shape == post.shape
    assert np.isfinite(det.enhancement).all() and np.isfinite(det.probability).all()
    assert det.probability.min() >= 0 and det.probability.max() <= 1
    assert (det.probability[det.mask] >= 0.5).all()
    assert count(det, post.affine) == 1


def test_minimum_size_from_lesion_config():
    post, pre, brain = head(lesions=[("ball", (8.0, 6.0, -4.0), 2.0, 1.8)])  # ~34 mm^3
    assert count(detect(post, pre, brain), post.affine) == 1
    big_min = LesionConfig(min_volume_mm3=60.0)
    assert count(detect(post, pre, brain, lesion_cfg=big_min), post.affine) == 0


def test_grid_mismatch_is_a_typed_error():
    from lesioncount.errors import GridError

    post, pre, brain = head()
    with pytest.raises(GridError):
        detect(post, pre, brain[:-1])


def test_thickness_of_small_lesions_on_thick_slices():
    """On 1x1x3 mm slices the ratio is measured in-plane: a 4-5 mm nodule on 1-2 slices stays
    thick, a bent in-plane vessel stays thin, and isotropic grids keep the 3D measure. (The
    phantom lesions that the 3D measure rejected, 0.58-0.69, were irregular partial-volume
    shapes from noisy scans; see ClassicalConfig.min_thickness_ratio.)"""
    from lesioncount.segmentation.classical import _thickness

    sp = np.array([1.0, 1.0, 3.0])
    ii, jj, kk = np.indices((15, 15, 5))
    for r in (2.0, 2.5):
        ball = ((ii - 7) ** 2 + (jj - 7) ** 2 + ((kk - 2) * 3.0) ** 2) <= r ** 2
        vol = ball.sum() * 3.0
        assert ball.any() and _thickness(ball, sp, vol) >= 0.7
    vessel = np.zeros((15, 15, 5), bool)
    vessel[2:13, 6:8, 2] = True          # 11 mm long, 2 mm wide, one slice
    vessel[11:13, 8:13, 2] = True        # ... with a bend
    assert _thickness(vessel, sp, vessel.sum() * 3.0) < 0.7
    # isotropic grids keep the 3D measure
    iso = ((ii - 7) ** 2 + (jj - 7) ** 2 + (kk - 2) ** 2) <= 2.0 ** 2
    assert _thickness(iso, np.ones(3), float(iso.sum())) >= 0.7


def test_shape_is_skipped_only_where_it_cannot_change_the_decision():
    """Candidates rejected on volume or surface carry no shape features; their reason is
    the one the full features would give."""
    from lesioncount.segmentation.classical import SHAPE_FEATURES, _reason

    post, pre, brain = head(lesions=[("sheet", (0, 0, 0), 1.5, 1.8), BALL])
    det = detect(post, pre, brain)
    cands = det.info["candidates"]
    skipped = [c for c in cands if c["elongation"] is None]
    measured = [c for c in cands if c["elongation"] is not None]
    assert skipped and measured                      # the sheet at the surface, the ball
    for c in skipped:
        assert c["reason"] in ("surface", "large")
        assert all(c[k] is None for k in SHAPE_FEATURES)
        full = dict(c, **{k: 1.0 for k in SHAPE_FEATURES})   # any shape: same reason
        assert _reason(full, ClassicalConfig()) == c["reason"]
    assert any(c["reason"] is None for c in measured)


def test_without_pre_a_blob_beside_the_ventricle_needs_white_matter_around_it():
    """From the post-contrast scan alone the shell is measured on that scan, where veins and
    plexus beside CSF or grey matter look like lesions (a 3 mm slice cuts a vein round):
    min_shell_level_post and max_csf_fraction_post apply; with a pre-contrast scan the
    ordinary thresholds do, and a blob deep in white matter is kept either way."""
    from dataclasses import replace

    post, pre, brain = head(thick=True, lesions=[("ball", (7.5, 5.0, 3.0), 3.0, 1.6)])
    aff = post.affine
    det = detect(post, None, brain)
    assert count(det, aff) == 0
    assert [c["reason"] for c in det.info["candidates"]] == ["csf"]
    loose = replace(ClassicalConfig(), min_shell_level_post=0.8, max_csf_fraction_post=0.3)
    assert count(detect(post, None, brain, cfg=loose), aff) == 1     # the rule rejected it
    assert count(detect(post, pre, brain), aff) == 1                 # with pre: ordinary rule
    post, pre, brain = head(thick=True, lesions=[BALL])
    assert count(detect(post, None, brain), post.affine) == 1        # deep white matter


def test_without_pre_a_focus_of_a_few_thick_voxels_is_too_small():
    """From the post-contrast scan alone a candidate needs min_voxels_post voxels (a vein cut
    across by a 3 mm slice is 4-5 of them); with a pre-contrast scan or a FLAIR the lesion
    minimum volume alone applies. The voxel count is measured on the candidate itself."""
    from dataclasses import replace

    from lesioncount.segmentation.classical import _reason

    post, pre, brain = head(thick=True, lesions=[BALL])
    (c,) = [c for c in detect(post, None, brain).info["candidates"] if c["reason"] is None]
    assert c["n_voxels"] == round(c["volume_mm3"] / 3.0)          # 1 x 1 x 3 mm voxels
    cfg = ClassicalConfig()
    few = dict(c, n_voxels=cfg.min_voxels_post - 1, volume_mm3=3.0 * (cfg.min_voxels_post - 1))
    assert _reason(few, cfg, with_pre=False) == "small"
    assert _reason(few, cfg, with_pre=True) is None
    assert _reason(dict(few, flair_ratio=1.5), cfg, with_pre=False) is None     # a FLAIR
    assert _reason(dict(few, n_voxels=cfg.min_voxels_post), cfg, with_pre=False) is None
    assert _reason(few, replace(cfg, min_voxels_post=0), with_pre=False) is None


def test_vessel_piece_rule():
    """A minor part of a vessel-shaped component is a vessel piece unless it is lesion-sized."""
    from lesioncount.segmentation.classical import _is_vessel_piece

    cfg = ClassicalConfig()
    vessel = {"elongation": cfg.max_elongation + 1, "thickness": 0.9, "volume_mm3": 1000.0}
    round_ = {"elongation": 1.2, "thickness": 0.9, "volume_mm3": 1000.0}
    assert _is_vessel_piece({"volume_mm3": 60.0}, vessel, cfg)
    assert not _is_vessel_piece({"volume_mm3": 60.0}, round_, cfg)           # parent not a vessel
    assert not _is_vessel_piece({"volume_mm3": 60.0}, None, cfg)             # opening cut nothing
    assert not _is_vessel_piece({"volume_mm3": 600.0}, vessel, cfg)          # most of the parent
    big = cfg.vessel_piece_max_mm3 + 10
    assert not _is_vessel_piece({"volume_mm3": big}, dict(vessel, volume_mm3=10 * big), cfg)


@pytest.mark.parametrize("thick", [False, True])
def test_detection_on_the_brain_box_is_the_whole_grid_result(thick):
    """The pipeline detects on the brain's box (a whole head is twice that): aligned to
    the coarse blocks of the smoothing, the result is the whole grid's, voxel for voxel."""
    from lesioncount.config import PipelineConfig
    from lesioncount.image import crop, mask_box
    from lesioncount.pipeline import _uncrop_detection
    from lesioncount.segmentation.normalise import coarse_factor

    tube = ("tube", (0.0, -12.0, 8.0), 1.2, 1.8)
    post, pre, brain = head(thick=thick, lesions=[BALL, tube], seed=3)
    pad = [(13, 9), (7, 15), (11, 10)]  # a larger field of view, off the block grid
    lo = np.array([p[0] for p in pad], float)
    aff = post.affine.copy()
    aff[:3, 3] = post.world(-lo)
    post = Image(np.pad(post.array, pad), aff)
    pre = Image(np.pad(pre.array, pad), aff)
    brain = np.pad(brain, pad)
    whole = detect(post, pre, brain)
    box = mask_box(brain, post.spacing, PipelineConfig().crop_margin_mm,
                   align=coarse_factor(post.spacing))
    assert np.prod([s.stop - s.start for s in box]) < 0.8 * brain.size
    part = _uncrop_detection(detect(crop(post, box), crop(pre, box), brain[box]), box, post.shape)
    assert count(whole, aff) == 1
    np.testing.assert_array_equal(part.mask, whole.mask)
    np.testing.assert_allclose(part.enhancement, whole.enhancement, rtol=0, atol=1e-4)  # float32 sums in another order
    np.testing.assert_allclose(part.probability, whole.probability, rtol=0, atol=1e-5)
    assert ([c["centroid_ijk"] for c in part.info["candidates"]]
            == [c["centroid_ijk"] for c in whole.info["candidates"]])


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 3.0)])
def test_surface_depth_on_a_box_is_the_whole_grid_one_near_the_surface(spacing):
    """The detector measures a candidate's surface depth on its box only: wherever the
    whole grid's distance is under the surface margin it must be the same, also in boxes
    that touch the grid's edge (which bounds the brain), and never under it elsewhere."""
    from scipy import ndimage as ndi

    from lesioncount.brain import brain_surface_distance
    from lesioncount.segmentation.classical import _surface_depth

    sp = np.asarray(spacing)
    rng = np.random.default_rng(5)
    shape = tuple(int(60 / s) for s in spacing)
    aff = np.diag([*spacing, 1.0])
    # a lumpy brain cut by the grid's edge on one side, with sulci-like holes
    ijk = np.indices(shape).transpose(1, 2, 3, 0) * sp
    brain = ((ijk - (34.0, 30.0, 30.0)) ** 2).sum(-1) < 27.0 ** 2
    brain &= ~ndi.binary_dilation(rng.random(shape) > 0.999, iterations=2)
    whole = brain_surface_distance(brain, aff)
    cfg = ClassicalConfig()
    margin = cfg.surface_margin_mm
    pad = np.ceil(max(cfg.shell_mm, margin) / sp).astype(int) + 2
    n_checked = 0
    n = np.asarray(shape)
    # random boxes, and boxes on the face where the grid's edge cuts the brain
    edge_boxes = [(np.array([n[0] - k, *(n[1:] // 2 - 3)]), np.array([n[0], *(n[1:] // 2 + 3)]))
                  for k in (1, 3, 6)]
    for lo0, hi0 in edge_boxes + [(None, None)] * 60:
        if lo0 is None:
            lo0 = rng.integers(0, n - 3)
            hi0 = np.minimum(lo0 + rng.integers(1, 8, 3), shape)
        box = tuple(slice(max(0, a - p), min(n, b + p))
                    for a, b, p, n in zip(lo0, hi0, pad, shape))
        inner = tuple(slice(a - s.start, b - s.start) for a, b, s in zip(lo0, hi0, box))
        got = _surface_depth(brain, box, sp)[inner]
        want = whole[box][inner]
        near = want < margin
        np.testing.assert_allclose(got[near], want[near], rtol=1e-6)
        assert (got[~near] >= margin - 1e-6).all()
        n_checked += int(near.sum())
    assert n_checked > 100


def test_morphology_on_a_parts_own_window_equals_the_whole_arrays():
    """_reach: a dilation or opening on a part's bounding box grown by the ball's half-width
    gives the voxels it gives on the whole array, at the array's edge too (the detector
    runs them on that window, not on the box of the vessel tree the part came from)."""
    from scipy import ndimage as ndi

    from lesioncount.segmentation.classical import _ball, _reach

    rng = np.random.default_rng(5)
    for spacing in ((1.0, 1.0, 1.0), (1.0, 1.0, 3.0)):
        ball = _ball(2.0, np.asarray(spacing))
        for centre in ((20, 20, 8), (1, 30, 0), (38, 2, 15)):  # inside, and at the edges
            part = np.zeros((40, 40, 16), bool)
            lo = [max(0, c - 4) for c in centre]
            part[tuple(slice(a, a + 8) for a in lo)] = rng.random((8, 8, 8))[
                tuple(slice(0, min(8, n - a)) for a, n in zip(lo, part.shape))] > 0.3
            w = _reach(part, ball)
            assert all(s.stop - s.start < n for s, n in zip(w, part.shape) if n > 20)
            for op in (ndi.binary_dilation, ndi.binary_opening):
                whole = op(part, structure=ball)
                win = np.zeros_like(part)
                win[w] = op(part[w], structure=ball)
                assert np.array_equal(whole, win), (spacing, centre, op.__name__)
