"""Crops of a grid: the box around a mask, the cropped image's world positions, the way back."""
from __future__ import annotations

import numpy as np

from lesioncount.image import Image, crop, mask_box, resample, uncrop


def oblique_image(shape=(40, 50, 30), spacing=(1.0, 1.2, 3.0), seed=0) -> Image:
    t = np.deg2rad(17.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = (-20.0, 5.0, 12.0)
    return Image(np.random.default_rng(seed).normal(size=shape).astype(np.float32), aff)


def test_mask_box_grows_by_the_margin_in_mm_clips_and_aligns():
    img = oblique_image()
    m = np.zeros(img.shape, bool)
    m[10:20, 30:45, 5:8] = True
    box = mask_box(m, img.spacing, 3.0)
    # 3 mm = 3 voxels of 1 mm, 3 of 1.2 mm (ceil 2.5), 1 of 3 mm
    assert box == (slice(7, 23), slice(27, 48), slice(4, 9))
    assert mask_box(m, img.spacing, 100.0) == tuple(slice(0, n) for n in img.shape)
    aligned = mask_box(m, img.spacing, 3.0, align=(4, 4, 4))
    assert [s.start for s in aligned] == [4, 24, 4] and [s.stop for s in aligned] == [23, 48, 9]
    assert mask_box(np.zeros(img.shape, bool), img.spacing, 3.0) == tuple(
        slice(0, n) for n in img.shape)


def test_crop_keeps_every_voxel_at_its_world_position_and_uncrop_puts_it_back():
    img = oblique_image()
    box = (slice(5, 31), slice(12, 40), slice(3, 20))
    c = crop(img, box)
    assert c.shape == (26, 28, 17)
    ijk = np.array([[0, 0, 0], [25, 27, 16], [3, 9, 4]], float)
    lo = np.array([5, 12, 3], float)
    np.testing.assert_allclose(c.world(ijk), img.world(ijk + lo), atol=1e-9)
    # resampling the whole image onto the crop's grid gives the crop (no transform)
    np.testing.assert_allclose(resample(img, c).array, c.array, atol=1e-5)
    back = uncrop(np.asarray(c.array), box, img.shape)
    assert back.dtype == img.array.dtype
    np.testing.assert_array_equal(back[box], img.array[box])
    outside = np.ones(img.shape, bool)
    outside[box] = False
    assert not back[outside].any()
