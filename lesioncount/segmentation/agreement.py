"""The ``both`` detector: classical lesions that the U-Net agrees with.

The two detectors fail on different things: the classical one on small vessel pieces and
other bright foci that pass its shape rules, the U-Net on whatever its synthetic training
did not show it. Keeping a classical lesion only when the U-Net's mask overlaps it trades
sensitivity for precision (see models/README.md for both sides of that trade). Lesion
extents, the enhancement map and everything downstream are the classical detector's.
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
    from .classical import detect as classical_detect
    from .unet import detect as unet_detect

    c = classical_detect(post, pre, brain, cfg.classical, cfg.lesion, flair=flair)
    u = unet_detect(post, pre, brain, cfg, flair=flair)
    labels = label_lesions(c.mask, post.affine, cfg.lesion)
    keep = np.setdiff1d(np.unique(labels[u.mask]), [0])
    mask = np.isin(labels, keep)
    info = {"detector": "both", "classical": c.info, "unet": u.info,
            "n_classical": int(labels.max()), "n_agreed": int(len(keep)),
            "seconds": round(float(c.info.get("seconds", 0)) + float(u.info.get("seconds", 0)), 2)}
    prob = np.minimum(c.probability, u.probability).astype(np.float32)
    return Detection(enhancement=c.enhancement, probability=prob, mask=mask, info=info)
