"""The "both" detector keeps the classical lesions the U-Net's mask overlaps, whole."""
from __future__ import annotations

import numpy as np

from lesioncount.config import PipelineConfig
from lesioncount.image import Image
from lesioncount.pipeline import detect
from lesioncount.segmentation import Detection, classical, unet


def _det(mask, prob):
    return Detection(enhancement=mask * 8.0, probability=prob, mask=mask, info={"seconds": 1.0})


def test_both_keeps_whole_classical_lesions_the_unet_touches(monkeypatch):
    shape = (30, 30, 30)
    a = np.zeros(shape, bool)
    a[5:10, 5:10, 5:10] = True           # lesion 1 (125 mm^3)
    b = np.zeros(shape, bool)
    b[18:23, 18:23, 18:23] = True        # lesion 2
    u = np.zeros(shape, bool)
    u[8:12, 8:12, 8:12] = True           # the U-Net sees part of lesion 1 and nothing of 2
    monkeypatch.setattr(classical, "detect", lambda *a_, **k: _det(a | b, np.where(a | b, 0.9, 0.1)))
    monkeypatch.setattr(unet, "detect", lambda *a_, **k: _det(u, np.where(u, 0.8, 0.2)))
    brain = np.ones(shape, bool)
    det = detect(Image(np.ones(shape, np.float32), np.eye(4)), None, brain, PipelineConfig(detector="both"))
    assert np.array_equal(det.mask, a)   # lesion 1 with its classical extent, lesion 2 dropped
    assert det.info["n_classical"] == 2 and det.info["n_agreed"] == 1
    assert det.probability.max() <= 0.8 + 1e-6 and det.enhancement[a].min() == 8.0
