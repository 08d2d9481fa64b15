"""Gd+ detectors behind one interface.

A detector takes the post-contrast image, the pre-contrast image already resampled
onto the post grid (or ``None``), and a brain mask on the post grid, and returns a
:class:`Detection` on the post grid. Labelling and tracking happen afterwards,
identically for every detector (lesioncount.lesions, lesioncount.tracking).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Detection:
    """Output of a detector, all arrays on the post-contrast grid."""

    # Enhancement in robust z-units above normal tissue (what a reader looks at).
    enhancement: np.ndarray  # float32
    # Per-voxel probability (or a calibrated score in [0, 1]) of enhancing lesion.
    probability: np.ndarray  # float32
    # Accepted lesion voxels after all suppression (vessels, dura, choroid plexus, size).
    mask: np.ndarray  # bool
    # Free-form notes for the session sidecar (e.g. which reference the enhancement used).
    info: dict
    # Candidates rejected only because they look like a normal enhancing structure although
    # they enhance as strongly as a lesion (classical detector; None for the others). The
    # tracking stage keeps those whose place enhances on few visits (lesioncount.stability).
    deferred: np.ndarray | None = None  # bool
