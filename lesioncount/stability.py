"""Enhancement that stays: foci enhancing at one place on many visits are not active lesions.

Gadolinium enhancement of an MS lesion lasts a few weeks (median about 3, rarely over
3 months): the blood-brain barrier closes again. Veins, the choroid plexus, dura and flow
artefacts enhance on every scan. A detector tuned to find faint lesions picks such a
structure on some visits and misses it on others, and each reappearance would be counted
as a *new* lesion. A reader recognises it because it is there on every scan.

:func:`stable_foci` does the same: for each detected focus it looks, in baseline space, at
the enhancement map of every visit of the subject at the focus's voxels, and calls it
stable when it is enhanced (median of the robust z-map over the focus >= ``stable_z``, below
the detector's seed threshold so a visit where the focus was missed still counts; the median,
so that another lesion overlapping a corner of a large focus, or the noisier residual next to
cortex, does not make it enhanced; and >= ``stable_relative`` x its brightest visit's median,
so that a lesion touching a vein is not "enhanced" by the vein's spill-over) on at least
``stable_min_sessions`` visits that span at least ``stable_min_days`` (when visit days
are known). Stable foci are left out of the subject's lesions and counts; the detector's
own mask (``desc-detected_mask``) keeps them for review.

:func:`transient_foci` is the converse, for what the detector rejected: a candidate that
enhanced like a lesion but was set aside because its shape, place or FLAIR looked like a
normal enhancing structure (a lesion touching a vein, a juxtacortical lesion half in
cortex, an active lesion with a faint FLAIR correlate; the detector's ``deferred`` mask)
is kept when its place enhances on only one or two visits. A reader does the same:
something bright that was not there last month and is gone next month is a lesion.

:func:`merge_stable_splits` applies the stability test to what tracking makes: the part of
a component that lies outside last visit's lesion is counted as a new lesion touching the
old one, unless that place enhances on many visits (a vessel the lesion touches).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .config import TrackingConfig
from .image import Image, apply_affine


@dataclass(frozen=True)
class Visit:
    """One session as the test needs it: its lesion labels, enhancement map and transform."""

    labels: Image                # int labels on the session's post-contrast grid
    enhancement: Image | None    # robust z-map on the same grid (None: not available)
    to_baseline: object | None   # SimpleITK transform, baseline (fixed) -> session (moving)
    days: float | None = None    # days since baseline, when known
    brain: Image | None = None   # brain mask on the session's grid (None: covers everything)


def _to_baseline(visit: Visit, pts: np.ndarray) -> np.ndarray:
    from .registration import points_to_fixed

    return pts if visit.to_baseline is None else points_to_fixed(visit.to_baseline, pts)


def _from_baseline(visit: Visit, pts: np.ndarray) -> np.ndarray:
    from .registration import transform_points_ras

    return pts if visit.to_baseline is None else transform_points_ras(visit.to_baseline, pts)


def _sample(img: Image, pts_ras: np.ndarray, order: int = 1) -> np.ndarray:
    """Samples of ``img`` at world points (trilinear; ``order=0`` nearest; 0 outside its grid)."""
    ijk = apply_affine(np.linalg.inv(img.affine), pts_ras)
    return ndi.map_coordinates(img.array, ijk.T, order=order, mode="constant", cval=0.0)


def _with_maps(visits: list[Visit]) -> list[Visit]:
    # float32 once per visit, not once per focus and visit (a no-op for the pipeline's maps)
    return [Visit(v.labels, v.enhancement.like(np.asarray(v.enhancement.array, np.float32)),
                  v.to_baseline, v.days, v.brain)
            for v in visits if v.enhancement is not None]


def _foci(v: Visit, labels: Image):
    """(label, voxel indices, their centres in baseline space) of each focus of ``labels``
    (on ``v``'s grid)."""
    lab = np.asarray(labels.array)
    if not lab.any():
        return
    for k, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        ijk = np.argwhere(lab[sl] == k) + [s.start for s in sl]
        yield k, ijk, _to_baseline(v, labels.world(ijk))


def _enhanced_days(pts: np.ndarray, with_map: list[Visit], cfg: TrackingConfig) -> list:
    """The days (None when unknown) of the visits whose map is enhanced over ``pts``."""
    if not len(pts):
        return []
    meds = _medians(pts, with_map)
    # relative to the focus's brightest visit too: a lesion beside a vein picks up the
    # vein's spill-over (z 2-3) on every visit, which is not the lesion enhancing again
    level = max(cfg.stable_z, cfg.stable_relative * max(meds))
    return [w.days for w, m in zip(with_map, meds) if m >= level]


def _medians(pts: np.ndarray, with_map: list[Visit]) -> list[float]:
    """Median of each visit's enhancement map over ``pts`` (baseline space)."""
    return [float(np.median(_sample(w.enhancement, _from_baseline(w, pts)))) for w in with_map]


def _covering(pts: np.ndarray, with_map: list[Visit], cfg: TrackingConfig) -> list[Visit]:
    """The visits whose brain mask holds at least ``cfg.transient_min_coverage`` of ``pts``:
    the enhancement map is 0 outside the brain, which says nothing about enhancement."""
    return [w for w in with_map if w.brain is None
            or float(np.mean(_sample(w.brain, _from_baseline(w, pts), order=0) > 0))
            >= cfg.transient_min_coverage]


def stable_foci(visits: list[Visit], cfg: TrackingConfig = TrackingConfig()) -> list[list[int]]:
    """Labels, per visit, of foci that enhance at the same place on many visits.

    Returns one list per visit (in order) of the labels in ``visit.labels`` that are stable
    (see the module docstring). Nothing is stable when ``cfg.stable_min_sessions`` is 0 or
    more than the number of visits with an enhancement map.
    """
    out: list[list[int]] = [[] for _ in visits]
    with_map = _with_maps(visits)
    if cfg.stable_min_sessions <= 0 or len(with_map) < cfg.stable_min_sessions:
        return out
    for i, v in enumerate(visits):
        for k, _, pts in _foci(v, v.labels):
            if _is_stable(pts, with_map, cfg):
                out[i].append(k)
    return out


def _is_stable(pts: np.ndarray, with_map: list[Visit], cfg: TrackingConfig) -> bool:
    days = _enhanced_days(pts, with_map, cfg)
    if len(days) < cfg.stable_min_sessions:
        return False
    known = [d for d in days if d is not None]
    return not (len(known) == len(days) and max(known) - min(known) < cfg.stable_min_days)


def transient_foci(visits: list[Visit], deferred: list[Image | None],
                   cfg: TrackingConfig = TrackingConfig()) -> list[list[int]]:
    """Labels, per visit, of deferred candidates whose enhancement comes and goes.

    ``deferred[i]`` labels the candidates the detector rejected as look-alikes of a normal
    enhancing structure on visit ``i`` (on that visit's grid; None: none). A candidate is
    returned when its place is enhanced (median z >= ``cfg.stable_z``) on at most
    ``cfg.transient_max_sessions`` visits, its own included (the time course of an active
    lesion, not of a vein, which enhances on every visit), and it peaks at
    ``cfg.transient_min_z`` or more on its visit's enhancement map, or at
    ``cfg.transient_quiet_min_z`` or more when the place is quiet on every other visit
    (median z under ``cfg.transient_quiet_z`` once the ``transient_max_sessions`` highest
    visits are set aside): a lesion appears on normal tissue, a structure at the edge of
    detection hovers around the threshold on most visits. Only visits whose brain mask
    (``Visit.brain``) covers the place count, and at least ``cfg.transient_min_visits`` must
    (a structure at the edge of the brain that most visits' masks leave out is not
    transient); nothing is returned when the rule is off (0).
    """
    out: list[list[int]] = [[] for _ in visits]
    with_map = _with_maps(visits)
    if cfg.transient_max_sessions <= 0 or len(with_map) < max(cfg.transient_min_visits, 1):
        return out
    for i, (v, cand) in enumerate(zip(visits, deferred)):
        if cand is None or v.enhancement is None:
            continue
        own = np.asarray(v.enhancement.array)
        for k, ijk, pts in _foci(v, cand):
            peak = float(own[tuple(ijk.T)].max())
            if peak < min(cfg.transient_min_z, cfg.transient_quiet_min_z):
                continue
            seen = _covering(pts, with_map, cfg)
            if len(seen) < cfg.transient_min_visits:
                continue
            meds = sorted(_medians(pts, seen), reverse=True)
            if sum(m >= cfg.stable_z for m in meds) > cfg.transient_max_sessions:
                continue
            # the visits left once the transient_max_sessions highest are set aside
            quiet = max(meds[cfg.transient_max_sessions:], default=0.0) < cfg.transient_quiet_z
            if peak >= cfg.transient_min_z or quiet:
                out[i].append(k)
    return out


def merge_stable_splits(tracked: list, keys: list, visits: list[Visit], grid: Image,
                        cfg: TrackingConfig = TrackingConfig()) -> tuple[list, dict]:
    """Tracked sessions (:func:`lesioncount.tracking.track` on ``grid``, in baseline space)
    with every part split off a persistent lesion (``TrackedLesion.split_from``) whose place
    is stable (the test of :func:`stable_foci`, which a component joining a lesion to a
    vessel passes as a whole, as the lesion part comes and goes) given back to that lesion;
    and, per session key (``keys`` names the tracked sessions in order), how many parts
    were given back. A later visit's lesion that tracking matched to a part given back is
    put on the lesion's track (:func:`lesioncount.tracking.rename_tracks`).
    """
    from .tracking import merge_split, rename_tracks

    out, merged = [], {}
    with_map = _with_maps(visits)
    if cfg.stable_min_sessions <= 0 or len(with_map) < cfg.stable_min_sessions:
        return list(tracked), merged
    renamed: dict[int, int] = {}  # track of a part given back -> its lesion's track
    for key, tr in zip(keys, tracked):
        if tr is not None and renamed:
            tr = rename_tracks(tr, renamed)
        splits = [] if tr is None else [les for les in tr.lesions if les.split_from is not None]
        if splits:
            stable = [les for les in splits
                      if _is_stable(grid.world(np.argwhere(tr.labels == les.label)), with_map, cfg)]
            if stable:
                track_of = {les.label: les.track for les in tr.lesions}
                renamed.update({les.track: track_of[les.split_from] for les in stable})
                tr = merge_split(tr, [les.label for les in stable])
                merged[key] = len(stable)
        out.append(tr)
    return out, merged
