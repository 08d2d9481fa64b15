"""Tracking: the contract's convention and the tricky cases, on hand-made label maps."""
import numpy as np
import pytest

from lesioncount.config import TrackingConfig
from lesioncount.tracking import BASELINE, NEW, PERSISTENT, track

SHAPE = (40, 40, 40)
SP = (1.0, 1.0, 1.0)


def ball(center, r, shape=SHAPE):
    g = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((x - c) ** 2 for x, c in zip(g, center)) <= r * r


def lab(*masks):
    out = np.zeros(SHAPE, np.int32)
    for k, m in enumerate(masks, 1):
        out[m & (out == 0)] = k
    return out


def statuses(s):
    return sorted(les.status for les in s.lesions)


def test_baseline_then_new_and_persistent():
    a, b = ball((10, 10, 10), 3), ball((28, 28, 28), 3)
    out = track([lab(a), lab(a, b)], SP)
    assert statuses(out[0]) == [BASELINE]
    assert statuses(out[1]) == [NEW, PERSISTENT]
    persistent = [x for x in out[1].lesions if x.status == PERSISTENT][0]
    assert persistent.track == out[0].lesions[0].track


def test_enhancing_on_two_consecutive_scans_counts_once():
    a = ball((20, 20, 20), 3)
    empty = np.zeros(SHAPE, np.int32)
    out = track([empty, lab(a), lab(a), empty], SP)
    assert [s.count(NEW) for s in out] == [0, 1, 0, 0]
    assert out[2].count(PERSISTENT) == 1
    assert out[1].lesions[0].track == out[2].lesions[0].track


def test_re_enhancing_lesion_is_new_again_with_same_track():
    a = ball((20, 20, 20), 3)
    empty = np.zeros(SHAPE, np.int32)
    out = track([empty, lab(a), empty, lab(a)], SP)
    assert out[3].count(NEW) == 1
    assert out[3].lesions[0].track == out[1].lesions[0].track


def test_any_earlier_convention_does_not_recount_re_enhancement():
    a = ball((20, 20, 20), 3)
    empty = np.zeros(SHAPE, np.int32)
    out = track([empty, lab(a), empty, lab(a)], SP, TrackingConfig(convention="any_earlier"))
    assert out[3].count(NEW) == 0 and out[3].count(PERSISTENT) == 1


def test_two_lesions_that_merge_are_one_persistent_lesion():
    a, b = ball((20, 13, 20), 3), ball((20, 22, 20), 3)
    merged = ball((20, 13, 20), 4) | ball((20, 22, 20), 4)  # both grew by 1 mm and touch
    from lesioncount.lesions import components
    assert components(lab(a, b) > 0)[1] == 2 and components(merged)[1] == 1
    out = track([lab(a, b), lab(merged)], SP)
    assert out[1].count() == 1 and out[1].count(PERSISTENT) == 1
    assert set(out[1].lesions[0].matched) == {1, 2}


def test_one_lesion_that_splits_is_two_persistent_lesions_on_distinct_tracks():
    big = ball((20, 20, 20), 7)
    p1, p2 = ball((20, 16, 20), 3), ball((20, 25, 20), 2)
    out = track([lab(big), lab(p1, p2)], SP)
    assert statuses(out[1]) == [PERSISTENT, PERSISTENT]
    tracks = {x.track for x in out[1].lesions}
    assert len(tracks) == 2 and out[0].lesions[0].track in tracks


def test_new_lesion_touching_an_old_one_is_split_off_and_counted_new():
    old = ball((20, 14, 20), 4)
    touching = ball((20, 22, 20), 4)  # touches the old one: one connected component
    both = old | touching
    from lesioncount.lesions import components
    assert components(both)[1] == 1
    out = track([lab(old), lab(both)], SP)
    assert statuses(out[1]) == [NEW, PERSISTENT]
    new = [x for x in out[1].lesions if x.status == NEW][0]
    assert (out[1].labels == new.label).sum() > 100  # the touching ball, not a rim
    # the part knows which lesion it was split from, and can be given back to it
    (pers,) = [x for x in out[1].lesions if x.status == PERSISTENT]
    assert new.split_from == pers.label
    from lesioncount.tracking import merge_split
    back = merge_split(out[1], [new.label])
    assert statuses(back) == [PERSISTENT] and back.count(NEW) == 0
    assert np.array_equal(back.labels > 0, out[1].labels > 0)  # no voxel lost
    assert set(np.unique(back.labels)) == {0, pers.label}
    assert merge_split(out[1], []) is out[1]


def test_a_grown_lesion_is_persistent_not_new():
    out = track([lab(ball((20, 20, 20), 4)), lab(ball((20, 20, 20), 5))], SP)
    assert statuses(out[1]) == [PERSISTENT]


def test_small_shift_within_tolerance_is_persistent():
    a = ball((20, 20, 20), 2)
    b = ball((20, 20, 24), 1)  # 1 voxel gap from a: overlaps only after 1 mm tolerance
    assert not (a & b).any()
    out = track([lab(a), lab(b)], SP)
    assert statuses(out[1]) == [PERSISTENT]
    out0 = track([lab(a), lab(b)], SP, TrackingConfig(match_tolerance_mm=0.0))
    assert statuses(out0[1]) == [NEW]


def test_failed_session_is_skipped_and_next_compares_with_last_good_one():
    a = ball((20, 20, 20), 3)
    out = track([lab(a), None, lab(a)], SP)
    assert out[1] is None
    assert out[2].reference == 0 and statuses(out[2]) == [PERSISTENT]


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.5)])
def test_result_does_not_depend_on_label_numbering(spacing):
    a, b = ball((10, 10, 10), 3), ball((28, 28, 28), 3)
    x = track([lab(a, b), lab(b)], spacing)
    y = track([lab(b, a), lab(b)], spacing)
    assert statuses(x[1]) == statuses(y[1]) == [PERSISTENT]
