"""Binary morphology shared by the brain mask and the classical detector."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """3D hole filling, then 2D per slice along each axis.

    The 2D passes close holes open at one end in 3D (a ventricle open at the foramina, a
    ring lesion open on one side) but closed in a slice. Each axis is one scipy call: with
    a structure that has no neighbours along that axis the background only connects within
    a slice, so every slice is filled on its own (one call per slice was ~8x slower).
    """
    out = ndi.binary_fill_holes(mask)
    for ax in range(3):
        plane = ndi.generate_binary_structure(3, 1)
        idx = [slice(None)] * 3
        for off in (0, 2):
            idx[ax] = off
            plane[tuple(idx)] = False
        out = ndi.binary_fill_holes(out, structure=plane)
    return out
