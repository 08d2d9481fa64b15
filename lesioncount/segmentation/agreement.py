"""Detectors that combine the classical detector and the U-Net.

The two detectors fail on different things: the classical one on small vessel pieces and
other bright foci that pass its shape rules, and on large faint lesions its thresholds do
not seed; the U-Net on small bright foci its synthetic training did not show it.

- ``both``: a classical lesion is kept only when the U-Net's mask overlaps it (precision at
  a cost in sensitivity);
- ``union``: every classical lesion, plus each U-Net lesion that overlaps no classical
  lesion and is at least ``cfg.unet.union_min_volume_mm3`` large (sensitivity: the
  U-Net's own false positives were small on the tuning injections; not all of them are on
  held-out phantom seed 2026, see models/README.md).

See models/README.md for both sides of each trade. The enhancement map, the deferred
look-alikes and everything downstream are the classical detector's.
"""
from __future__ import annotations

import numpy as np

from ..config import PipelineConfig
from ..image import Image
from ..lesions import label_lesions
from . import Detection


def detect(post: Image, pre: Image | None, brain: np.ndarray,
           cfg: PipelineConfig = PipelineConfig(), flair: Image | None = None) -> Detection:
    """Classical detection, each lesion kept only if the U-Net's mask overlaps it.

    Returns the classical :class:`~lesioncount.segmentation.Detection` with ``mask``
    reduced to the agreed lesions, ``probability`` the voxelwise minimum of the two
    detectors' (so a reader sees where either doubts), and ``info`` holding both
    detectors' info and the number of classical lesions dropped. ``flair`` (on ``post``'s
    grid) goes to both detectors.
    """
    c, u, info = _run_both(post, pre, brain, cfg, flair)
    labels = label_lesions(c.mask, post.affine, cfg.lesion)
    keep = np.setdiff1d(np.unique(labels[u.mask]), [0])
    mask = np.isin(labels, keep)
    info = dict(info, detector="both", n_classical=int(labels.max()), n_agreed=int(len(keep)))
    prob = np.minimum(c.probability, u.probability).astype(np.float32)
    return Detection(enhancement=c.enhancement, probability=prob, mask=mask, info=info)


def detect_union(post: Image, pre: Image | None, brain: np.ndarray,
                 cfg: PipelineConfig = PipelineConfig(), flair: Image | None = None) -> Detection:
    """Classical detection plus the U-Net's large lesions the classical detector missed.

    A U-Net lesion (``cfg.lesion``'s definition on the U-Net mask) is added, with the
    U-Net's extent, when it overlaps no classical lesion and its volume is at least
    ``cfg.unet.union_min_volume_mm3``. Returns the classical
    :class:`~lesioncount.segmentation.Detection` (enhancement, deferred look-alikes) with
    ``mask`` the union, ``probability`` the voxelwise maximum of the two detectors', and
    ``info`` holding both detectors' info and the number of lesions added. ``flair`` (on
    ``post``'s grid) goes to both detectors.
    """
    from ..lesions import component_volumes

    c, u, info = _run_both(post, pre, brain, cfg, flair)
    ul = label_lesions(u.mask, post.affine, cfg.lesion)
    large = np.flatnonzero(component_volumes(ul, post.voxel_volume)[1:]
                           >= cfg.unet.union_min_volume_mm3) + 1
    add = np.setdiff1d(large, ul[c.mask])
    mask = c.mask | np.isin(ul, add)
    info = dict(info, detector="union",
                n_classical=int(label_lesions(c.mask, post.affine, cfg.lesion).max()),
                n_unet=int(ul.max()), n_added=int(add.size))
    prob = np.maximum(c.probability, u.probability).astype(np.float32)
    deferred = None if c.deferred is None else (c.deferred & ~mask)
    return Detection(enhancement=c.enhancement, probability=prob, mask=mask, info=info,
                     deferred=deferred)


def _run_both(post: Image, pre: Image | None, brain: np.ndarray, cfg: PipelineConfig,
              flair: Image | None) -> tuple[Detection, Detection, dict]:
    """The classical and U-Net detections of one scan, and the info both combinations share."""
    from .classical import detect as classical_detect
    from .unet import detect as unet_detect

    c = classical_detect(post, pre, brain, cfg.classical, cfg.lesion, flair=flair)
    u = unet_detect(post, pre, brain, cfg, flair=flair)
    info = {"classical": c.info, "unet": u.info,
            "seconds": round(float(c.info.get("seconds", 0)) + float(u.info.get("seconds", 0)), 2)}
    return c, u, info
