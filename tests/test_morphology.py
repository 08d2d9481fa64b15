"""Hole filling: 3D, then every slice along each axis (one scipy call per axis)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lesioncount.morphology import fill_holes


def _per_slice(mask):
    m = ndi.binary_fill_holes(mask)
    for ax in range(3):
        m = m | np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(m, ax, 0)], axis=ax)
    return m


def test_same_as_filling_each_slice_on_its_own():
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = ndi.binary_opening(rng.random((24, 20, 16)) > 0.45)
        assert np.array_equal(fill_holes(m), _per_slice(m))


def test_a_tube_open_at_both_ends_is_filled_slice_by_slice():
    m = np.zeros((20, 20, 20), bool)
    m[5:15, 5:15, :] = True
    m[8:12, 8:12, :] = False          # a channel through the whole volume: no 3D hole
    assert not ndi.binary_fill_holes(m)[10, 10, 10]
    assert fill_holes(m)[10, 10, 10] and fill_holes(m).sum() == 10 * 10 * 20
