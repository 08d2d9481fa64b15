"""Rigid/affine registration: known motions, contrasts, grids, failure, transforms, points."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lesioncount.config import RegistrationConfig
from lesioncount.errors import InputError
from lesioncount.image import Image, resample
from lesioncount.registration import (
    alignment_quality,
    displacement_error,
    identity,
    load_transform,
    points_to_fixed,
    register,
    rigid_transform,
    save_transform,
    transform_points_ras,
)
from test_brain import grid_like, load_template, rotation_matrix, whole_head

# One thread: reproducible and polite on a shared 2-core machine.
CFG = RegistrationConfig(threads=1)
CENTRE = (0.0, -18.0, 18.0)  # about the middle of the MNI brain (RAS mm)


@pytest.fixture(scope="module")
def tpl1() -> Image:
    return load_template(1.0)


@pytest.fixture(scope="module")
def fixed2(tpl1) -> Image:
    return resample(tpl1, grid_like(tpl1, (2.0, 2.0, 2.0)))


def other_contrast(img: Image) -> Image:
    """A second sequence: lower grey/white contrast (gamma 0.5) with a constant offset."""
    a = img.array
    return img.like(np.where(a > 0, 40 + 255 * (a / 255.0) ** 0.5, 0).astype(np.float32))


def moved(content: Image, true_tx, grid: Image, noise: float = 5.0, seed: int = 0) -> Image:
    """``content`` seen through a fixed->moving motion ``true_tx`` on ``grid`` (+ noise)."""
    m = resample(content, grid, true_tx.GetInverse())
    rng = np.random.default_rng(seed)
    return m.like(m.array + rng.normal(0, noise, m.shape).astype(np.float32))


def test_recovers_rigid_motion_between_contrasts(tpl1, fixed2):
    true = rigid_transform((6, -5, 8), (7, -5, 6), center_ras=CENTRE)
    moving = moved(other_contrast(tpl1), true, grid_like(tpl1, (2.0, 2.0, 2.0)))
    brain = fixed2.array > 0
    start = displacement_error(true, identity().transform, fixed2, brain)
    reg = register(fixed2, moving, CFG, fixed_mask=brain)
    err = displacement_error(true, reg.transform, fixed2, brain)
    assert start > 10.0  # the motion is real
    assert err < 0.5
    assert not reg.failed and reg.quality > 0.8
    assert reg.iterations > 0 and reg.seconds > 0
    # the quality figure drops clearly before alignment
    assert alignment_quality(fixed2, moving, None, fixed_mask=brain, cfg=CFG) < 0.5


def test_three_mm_slices_oblique_moving(tpl1, fixed2):
    true = rigid_transform((-8, 6, -10), (-6, 8, 5), center_ras=CENTRE)
    grid = grid_like(tpl1, (1.5, 1.5, 3.0), rotation=rotation_matrix(10, 0, -15))
    moving = moved(other_contrast(tpl1), true, grid)
    brain = fixed2.array > 0
    reg = register(fixed2, moving, CFG, fixed_mask=brain)
    assert displacement_error(true, reg.transform, fixed2, brain) < 0.5
    assert not reg.failed


def test_anisotropic_oblique_fixed_and_affine_option(tpl1):
    grid = grid_like(tpl1, (2.0, 1.6, 3.0), rotation=rotation_matrix(-12, 9, 25))
    fixed = resample(tpl1, grid)
    brain = fixed.array > 0
    true = rigid_transform((5, 7, -6), (5, 6, -8), center_ras=CENTRE)
    moving = moved(other_contrast(tpl1), true, grid_like(tpl1, (2.0, 2.0, 2.0)))
    reg = register(fixed, moving, CFG, fixed_mask=brain)
    assert displacement_error(true, reg.transform, fixed, brain) < 0.5
    aff = register(fixed, moving, RegistrationConfig(threads=1, transform="affine"),
                   fixed_mask=brain)
    assert aff.transform.GetName() == "AffineTransform"
    assert displacement_error(true, aff.transform, fixed, brain) < 1.0


def test_whole_head_moving_to_brain_only_fixed(tpl1, fixed2):
    from lesioncount.brain import brain_mask

    head2, _ = whole_head(load_template(2.0), post=True)
    true = rigid_transform((7, -6, 5), (-8, 6, 7), center_ras=CENTRE)
    moving = moved(head2, true, head2)
    brain = fixed2.array > 0
    reg = register(fixed2, moving, CFG, fixed_mask=brain, moving_mask=brain_mask(moving))
    assert displacement_error(true, reg.transform, fixed2, brain) < 0.5


def test_registration_to_noise_is_failed(fixed2):
    rng = np.random.default_rng(3)
    noise = fixed2.like(rng.uniform(0, 255, fixed2.shape).astype(np.float32))
    cfg = RegistrationConfig(threads=1, retry=False, iterations=40)
    reg = register(fixed2, noise, cfg,
                   fixed_mask=fixed2.array > 0)
    assert reg.failed
    assert reg.quality < CFG.min_quality


def test_quality_drops_for_misalignment(tpl1, fixed2):
    moving = other_contrast(resample(tpl1, grid_like(tpl1, (2.0, 2.0, 2.0))))
    brain = fixed2.array > 0
    aligned = alignment_quality(fixed2, moving, None, fixed_mask=brain)
    off = alignment_quality(fixed2, moving, rigid_transform((0, 0, 0), (4, 0, 0)),
                            fixed_mask=brain)
    assert aligned > 0.8
    assert off < aligned - 0.3


def test_deterministic(tpl1, fixed2):
    """One thread: bit-identical reruns. Several threads: ITK sums per-thread parts in a
    varying order, so reruns agree to rounding (~1e-15), far below any distance that matters."""
    true = rigid_transform((4, 3, -5), (3, -4, 2), center_ras=CENTRE)
    moving = moved(other_contrast(tpl1), true, grid_like(tpl1, (2.0, 2.0, 2.0)))
    brain = fixed2.array > 0
    kw = dict(shrink_factors=(4, 2), smoothing_sigmas_mm=(2.0, 1.0))
    one = RegistrationConfig(threads=1, **kw)
    a = register(fixed2, moving, one, fixed_mask=brain)
    b = register(fixed2, moving, one, fixed_mask=brain)
    assert a.transform.GetParameters() == b.transform.GetParameters()
    two = RegistrationConfig(threads=2, **kw)
    c = register(fixed2, moving, two, fixed_mask=brain)
    d = register(fixed2, moving, two, fixed_mask=brain)
    assert displacement_error(c.transform, d.transform, fixed2, brain) < 1e-6


def test_tfm_round_trip(tmp_path):
    tx = rigid_transform((3, -4, 5), (1.5, -2.5, 3.5), center_ras=CENTRE)
    p = tmp_path / "t.tfm"
    save_transform(tx, p)
    back = load_transform(p)
    assert back.GetName() == "Euler3DTransform"
    np.testing.assert_allclose(back.GetParameters(), tx.GetParameters(), atol=1e-9)
    np.testing.assert_allclose(back.GetFixedParameters(), tx.GetFixedParameters(), atol=1e-9)
    with pytest.raises(InputError):
        load_transform(tmp_path / "missing.tfm")
    (tmp_path / "bad.tfm").write_text("not a transform")
    with pytest.raises(InputError):
        load_transform(tmp_path / "bad.tfm")


def test_displacement_error_of_a_translation_is_its_length():
    ref = Image(np.zeros((10, 12, 8), np.uint8), np.diag([2.0, 1.0, 3.0, 1.0]))
    t = rigid_transform((0, 0, 0), (3.0, 4.0, 0.0))
    assert displacement_error(t, identity().transform, ref) == pytest.approx(5.0)
    m = np.zeros(ref.shape, bool)
    m[2:5, 2:5, 2:5] = True
    assert displacement_error(t, t, ref, m) == pytest.approx(0.0, abs=1e-9)


def test_points_follow_resample():
    """A bright dot moved by resample lands where the point functions say."""
    aff = np.eye(4)
    aff[:3, :3] = rotation_matrix(20, -10, 30) @ np.diag([1.0, 1.2, 2.0])
    aff[:3, 3] = [-30.0, -35.0, -40.0]
    grid = Image(np.zeros((60, 60, 40), np.float32), aff)
    tx = rigid_transform((8, -6, 12), (4.0, -3.0, 5.0), center_ras=grid.world(np.array([30, 30, 20])))
    p_fixed = grid.world(np.array([28.0, 33.0, 21.0]))
    p_moving = transform_points_ras(tx, p_fixed)
    np.testing.assert_allclose(points_to_fixed(tx, p_moving), p_fixed, atol=1e-9)
    # a dot (blurred ball) at p_moving in the moving image, moving image on the same grid
    xyz = grid.world(np.indices(grid.shape).transpose(1, 2, 3, 0).astype(float))
    dot = np.exp(-((xyz - p_moving) ** 2).sum(-1) / (2 * 2.0 ** 2)).astype(np.float32)
    out = resample(grid.like(dot), grid, tx).array  # onto the fixed grid
    w = out / out.sum()
    centroid = (xyz * w[..., None]).reshape(-1, 3).sum(0)
    np.testing.assert_allclose(centroid, p_fixed, atol=0.3)
    # vectorised shape handling
    pts = np.stack([p_fixed, p_fixed + 1.0])
    assert transform_points_ras(tx, pts).shape == (2, 3)


def test_identity_and_sidecar_are_json():
    reg = identity()
    assert not reg.failed and reg.quality == 1.0
    d = reg.to_dict()
    json.dumps(d)
    np.testing.assert_allclose(d["matrix_fixed_to_moving_ras"], np.eye(4), atol=1e-12)


def test_matrix_ras_matches_points():
    tx = rigid_transform((10, 0, 0), (0, 0, 5), center_ras=(1, 2, 3))
    from lesioncount.registration import Registration

    reg = Registration(tx, 1.0, False, 0.0, 0, 0.0, "")
    p = np.array([10.0, -20.0, 30.0])
    m = reg.matrix_ras
    np.testing.assert_allclose(m[:3, :3] @ p + m[:3, 3], transform_points_ras(tx, p), atol=1e-9)
    # the rotation about the RAS x axis (= -LPS x) keeps x and the centre fixed
    np.testing.assert_allclose(transform_points_ras(tx, (1, 2, 3)), (1, 2, 8), atol=1e-9)


def test_mask_shape_mismatch_is_input_error(fixed2):
    with pytest.raises(InputError):
        register(fixed2, fixed2, CFG, fixed_mask=np.ones((3, 3, 3), bool))


def test_matrix_round_trip():
    from lesioncount.registration import Registration, transform_from_matrix_ras

    tx = rigid_transform((7, -3, 11), (2, -5, 4), center_ras=CENTRE)
    m = Registration(tx, 1.0, False, 0.0, 0, 0.0, "").matrix_ras
    back = transform_from_matrix_ras(m)
    ref = Image(np.zeros((20, 20, 20), np.uint8), np.diag([3.0, 3.0, 3.0, 1.0]))
    assert displacement_error(tx, back, ref) < 1e-9


def test_cropping_to_the_brain_box_keeps_the_transform(tpl1, fixed2):
    """The pyramid is built on the masks' boxes; on a whole head (moving, with and without
    its mask) the result is within 0.1 mm of the whole-grid registration, and both find
    the true motion."""
    from lesioncount.brain import brain_mask

    head2, _ = whole_head(load_template(2.0), post=True)
    true = rigid_transform((3, -2, 4), (-4, 3, 5), center_ras=CENTRE)
    moving = moved(head2, true, head2)
    brain = fixed2.array > 0
    for moving_mask in (brain_mask(moving), None):
        on = register(fixed2, moving, CFG, fixed_mask=brain, moving_mask=moving_mask)
        off = register(fixed2, moving, RegistrationConfig(threads=1, crop_margin_mm=0),
                       fixed_mask=brain, moving_mask=moving_mask)
        assert displacement_error(on.transform, off.transform, fixed2, brain) < 0.1
        assert displacement_error(true, on.transform, fixed2, brain) < 0.5
        assert abs(on.quality - off.quality) < 0.02


def test_pyramid_level_keeps_world_positions():
    """A pyramid level is a coarser picture of the same place: a bright blob's world
    centroid stays put (block centres, not corners), a 3 mm slice axis is not shrunk as
    much as the 1 mm axes, and the blur reaches the level's sigma."""
    from lesioncount.registration import _level_image

    rng = np.random.default_rng(3)
    for spacing in ((1.0, 1.0, 1.0), (1.0, 1.0, 3.0)):
        shape = tuple(int(96 / s) for s in spacing)
        R = rotation_matrix(10, -5, 20)
        aff = np.eye(4)
        aff[:3, :3] = R @ np.diag(spacing)
        aff[:3, 3] = (-40.0, 12.0, 7.0)
        img = Image(np.zeros(shape, np.float32), aff)
        centre_ijk = np.array([37.3, 51.8, 40.2]) / np.asarray(spacing)
        ijk = np.indices(shape).reshape(3, -1).T * np.asarray(spacing)
        d2 = ((ijk - centre_ijk * np.asarray(spacing)) ** 2).sum(axis=1)
        img.array[...] = np.exp(-d2 / (2 * 4.0 ** 2)).reshape(shape) \
            + 0.01 * rng.standard_normal(shape)
        world = img.affine[:3, :3] @ centre_ijk + img.affine[:3, 3]
        for shrink, sigma in ((4, 2.0), (2, 1.0), (1, 0.0)):
            lev = _level_image(img, shrink, sigma)
            a = np.clip(lev.array, 0, None) ** 4  # the blob, not the noise
            c = (np.indices(a.shape).reshape(3, -1) * a.ravel()).sum(axis=1) / a.sum()
            got = lev.affine[:3, :3] @ c + lev.affine[:3, 3]
            assert np.linalg.norm(got - world) < 0.3, (spacing, shrink, got, world)
            want = [max(1, round(shrink * min(spacing) / s)) * s for s in spacing]
            np.testing.assert_allclose(lev.spacing, want, rtol=1e-6)
            if shrink > 1:
                # the blob (sigma 4 mm) has been blurred towards sqrt(4^2 + sigma^2)
                assert lev.array.max() < img.array.max()
            else:
                np.testing.assert_array_equal(lev.array, img.array)
