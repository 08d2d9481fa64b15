"""The one definition of a lesion: connected components, minimum size, per-lesion measures.

Every detector, the tracking and the evaluation label through :func:`label_lesions`
(or :func:`components` for raw candidates), so connectivity and minimum size are
set once, in :class:`lesioncount.config.LesionConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import LesionConfig
from .image import Image, apply_affine

LABEL_DTYPE = np.int32


def structure(cfg: LesionConfig = LesionConfig()) -> np.ndarray:
    """The neighbourhood that makes two voxels part of one lesion."""
    return ndi.generate_binary_structure(3, cfg.connectivity)


def components(mask: np.ndarray, cfg: LesionConfig = LesionConfig()) -> tuple[np.ndarray, int]:
    """Connected components of a boolean mask, labelled 1..n (no size filter)."""
    labels, n = ndi.label(np.asarray(mask, dtype=bool), structure=structure(cfg))
    return labels.astype(LABEL_DTYPE, copy=False), int(n)


def component_volumes(labels: np.ndarray, voxel_volume: float) -> np.ndarray:
    """Volume in mm^3 of labels 0..max (index = label)."""
    return np.bincount(labels.ravel(), minlength=int(labels.max()) + 1) * float(voxel_volume)


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..n in order of first appearance by label value, 0 kept."""
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=LABEL_DTYPE)
    lut[present] = np.arange(1, present.size + 1, dtype=LABEL_DTYPE)
    return lut[labels]


def label_lesions(mask: np.ndarray, affine: np.ndarray,
                  cfg: LesionConfig = LesionConfig()) -> np.ndarray:
    """Label a lesion mask: components of at least ``cfg.min_volume_mm3``, numbered 1..n.

    Numbering follows the order of the components' first voxel in C order, so the
    same mask always gives the same labels.
    """
    labels, n = components(mask, cfg)
    if n == 0:
        return labels
    vox = float(abs(np.linalg.det(np.asarray(affine)[:3, :3])))
    vols = component_volumes(labels, vox)
    keep = vols >= cfg.min_volume_mm3
    keep[0] = False
    labels = np.where(keep[labels], labels, 0)
    return relabel_sequential(labels)


@dataclass(frozen=True)
class LesionStats:
    label: int
    volume_mm3: float
    n_voxels: int
    centroid_ijk: tuple[float, float, float]
    centroid_ras: tuple[float, float, float]  # world mm on the grid the labels live on
    max_enhancement: float
    mean_enhancement: float


def measure(labels: Image, enhancement: np.ndarray | None = None) -> list[LesionStats]:
    """Per-lesion volume, centroid (voxel and world mm) and enhancement statistics."""
    lab = labels.array
    n = int(lab.max()) if lab.size else 0
    if n == 0:
        return []
    idx = np.arange(1, n + 1)
    counts = ndi.sum_labels(np.ones_like(lab, dtype=np.float64), lab, idx)
    cents = np.asarray(ndi.center_of_mass(np.ones_like(lab, dtype=np.float64), lab, idx))
    world = apply_affine(labels.affine, cents)
    if enhancement is not None:
        mx = ndi.maximum(enhancement, lab, idx)
        mn = ndi.mean(enhancement, lab, idx)
    else:
        mx = mn = np.full(n, np.nan)
    out = []
    for k in range(n):
        if counts[k] == 0:
            continue
        out.append(LesionStats(
            label=int(idx[k]),
            volume_mm3=float(counts[k] * labels.voxel_volume),
            n_voxels=int(counts[k]),
            centroid_ijk=tuple(float(c) for c in cents[k]),
            centroid_ras=tuple(float(c) for c in world[k]),
            max_enhancement=float(mx[k]),
            mean_enhancement=float(mn[k]),
        ))
    return out
