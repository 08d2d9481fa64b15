"""Foci that enhance at one place on many visits (veins) are not active lesions."""
from __future__ import annotations

import numpy as np
import pytest

from lesioncount.config import TrackingConfig
from lesioncount.image import Image
from lesioncount.registration import rigid_transform
from lesioncount.stability import Visit, stable_foci

AFF = np.diag([1.0, 1.0, 3.0, 1.0])
SHAPE = (40, 40, 14)


def _ball(centre, r=2.5):
    ii, jj, kk = np.indices(SHAPE)
    return ((ii - centre[0]) ** 2 + (jj - centre[1]) ** 2 + ((kk - centre[2]) * 3) ** 2) <= r ** 2


VEIN, LESION = (10, 10, 5), (28, 26, 8)


def _visits(days, vein_z, lesion_on, detected_vein, shift=None):
    """A vein enhancing (z = vein_z) on every visit but detected only on some, and a
    lesion enhancing (z = 12) on the visits in ``lesion_on``."""
    rng = np.random.default_rng(0)
    out = []
    for i, d in enumerate(days):
        z = rng.normal(0, 1, SHAPE).astype(np.float32)
        z[_ball(VEIN)] += vein_z
        lab = np.zeros(SHAPE, np.int32)
        if i in detected_vein:
            lab[_ball(VEIN)] = 1
        if i in lesion_on:
            z[_ball(LESION)] += 12
            lab[_ball(LESION)] = lab.max() + 1
        out.append(Visit(Image(lab, AFF), Image(z, AFF), None, d))
    return out


def test_vein_seen_on_every_visit_is_stable_lesion_is_not():
    v = _visits([0, 28, 56, 84, 112, 140], vein_z=4.0, lesion_on={2, 3}, detected_vein={0, 2, 5})
    res = stable_foci(v)
    assert res[0] == [1] and res[5] == [1]
    assert res[2] == [1]          # the vein (label 1), not the lesion (label 2)
    assert res[3] == []           # the lesion on its own: enhancing on 2 visits only


def test_faint_everywhere_else_is_not_stable():
    # the same place enhancing only on the visits where it was detected (z 4 elsewhere 0)
    v = _visits([0, 28, 56, 84, 112, 140], vein_z=0.0, lesion_on={1, 2, 3}, detected_vein=set())
    assert all(r == [] for r in stable_foci(v))


def test_short_span_or_disabled_is_not_stable():
    v = _visits([0, 7, 14, 21, 28, 35], vein_z=4.0, lesion_on=set(), detected_vein={0, 3})
    assert all(r == [] for r in stable_foci(v))  # 35 days < stable_min_days
    v = _visits([0, 28, 56, 84, 112, 140], vein_z=4.0, lesion_on=set(), detected_vein={0, 3})
    assert all(r == [] for r in stable_foci(v, TrackingConfig(stable_min_sessions=0)))
    # unknown days: the visit count alone decides
    v = _visits([None] * 4, vein_z=4.0, lesion_on=set(), detected_vein={1})
    assert stable_foci(v)[1] == [1]


def test_follows_the_transforms():
    """A follow-up acquired with the head moved: the vein is found through the transform."""
    tx = rigid_transform((0, 0, 0), (6.0, 0.0, 0.0))  # baseline -> follow-up: +6 mm in x
    days = [0, 28, 56, 84]
    v = _visits(days, vein_z=4.0, lesion_on=set(), detected_vein={0})
    moved = []
    for i, w in enumerate(v):
        if i == 0:
            moved.append(w)
            continue
        z = np.asarray(w.enhancement.array)
        lab = np.asarray(w.labels.array)
        # the follow-up's content sits 6 mm further along +x (6 voxels along i)
        moved.append(Visit(Image(np.roll(lab, 6, axis=0), AFF), Image(np.roll(z, 6, axis=0), AFF), tx, w.days))
    assert stable_foci(moved)[0] == [1]
    unmoved = [moved[0]] + [Visit(w.labels, w.enhancement, None, w.days) for w in moved[1:]]
    assert stable_foci(unmoved)[0] == []
