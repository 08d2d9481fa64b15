"""Binary morphology shared by the brain mask and the classical detector."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def slice_structure(axis: int) -> np.ndarray:
    """6-connectivity without neighbours along ``axis``: connects voxels within a slice only."""
    s = ndi.generate_binary_structure(3, 1)
    np.moveaxis(s, axis, 0)[[0, 2]] = False
    return s


def _fill_enclosed(mask: np.ndarray, structure: np.ndarray, faces: tuple[int, ...]) -> np.ndarray:
    """``mask`` plus the background components (connected by ``structure``) that touch
    none of the grid's faces along ``faces``: what ``ndi.binary_fill_holes`` returns, from
    one labelling instead of a dilation iterated until it stops (~3x faster on a head)."""
    bg, n = ndi.label(~mask, structure=structure)
    if n == 0:
        return mask.copy()
    open_ = np.zeros(n + 1, dtype=bool)
    open_[0] = True  # label 0 is the mask itself
    for ax in faces:
        for i in (0, -1):
            open_[np.take(bg, i, axis=ax).ravel()] = True
    return mask | ~open_[bg]


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """3D hole filling, then 2D per slice along each axis.

    The 2D passes close holes open at one end in 3D (a ventricle open at the foramina, a
    ring lesion open on one side) but closed in a slice. Each axis is one labelling: with
    a structure that has no neighbours along that axis the background only connects within
    a slice, so every slice is filled on its own, and only the faces along the other two
    axes are a slice's border.
    """
    mask = np.asarray(mask, dtype=bool)
    out = _fill_enclosed(mask, ndi.generate_binary_structure(3, 1), (0, 1, 2))
    for ax in range(3):
        out = _fill_enclosed(out, slice_structure(ax), tuple(a for a in range(3) if a != ax))
    return out
