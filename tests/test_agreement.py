"""The combined detectors: "both" keeps the classical lesions the U-Net's mask overlaps, whole;
"union" adds the U-Net's large lesions the classical detector missed."""
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


def test_union_adds_only_large_unet_lesions_the_classical_detector_missed(monkeypatch):
    shape = (40, 40, 40)
    a = np.zeros(shape, bool)
    a[5:10, 5:10, 5:10] = True           # classical lesion (125 mm^3)
    defer = np.zeros(shape, bool)
    defer[30:33, 2:5, 2:5] = True        # a classical look-alike set aside
    u = np.zeros(shape, bool)
    u[8:12, 8:12, 8:12] = True           # U-Net: part of the classical lesion (not added again)
    u[20:25, 20:25, 20:25] = True        # U-Net only, 125 mm^3: added whole
    u[30:33, 30:33, 30:33] = True        # U-Net only, 27 mm^3: a small focus, not added
    c_det = Detection(enhancement=a * 8.0, probability=np.where(a, 0.9, 0.1), mask=a,
                      info={"seconds": 1.0}, deferred=defer)
    monkeypatch.setattr(classical, "detect", lambda *a_, **k: c_det)
    monkeypatch.setattr(unet, "detect", lambda *a_, **k: _det(u, np.where(u, 0.8, 0.2)))
    brain = np.ones(shape, bool)
    det = detect(Image(np.ones(shape, np.float32), np.eye(4)), None, brain,
                 PipelineConfig(detector="union"))
    added = np.zeros(shape, bool)
    added[20:25, 20:25, 20:25] = True
    assert np.array_equal(det.mask, a | added)
    assert det.info["n_classical"] == 1 and det.info["n_unet"] == 3 and det.info["n_added"] == 1
    assert np.array_equal(det.deferred, defer)  # the classical look-alikes go on to tracking
    assert det.probability[a].min() == 0.9 and det.probability[added].min() == 0.8
    # the volume floor is a setting: at 20 mm^3 the small focus is added too
    from lesioncount.config import UNetConfig
    det = detect(Image(np.ones(shape, np.float32), np.eye(4)), None, brain,
                 PipelineConfig(detector="union", unet=UNetConfig(union_min_volume_mm3=20.0)))
    assert det.info["n_added"] == 2
