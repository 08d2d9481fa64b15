"""Matching lesions across visits on a common grid in baseline space.

:func:`track` takes each session's lesion labels already resampled onto one grid
(baseline space, see :mod:`lesioncount.longitudinal`) and decides, per lesion, its
``status`` and its ``track`` (the same id for the same lesion across sessions).

The default convention (output contract): a Gd+ lesion at session k is **new**
when it overlaps no Gd+ lesion of session k-1, otherwise **persistent**; a lesion
that enhances again after a session without enhancement is new again (and keeps
its old track id, because it is the same place). With ``convention="any_earlier"``
it is new only when it overlaps no Gd+ lesion of any earlier session.

Two refinements that readers apply and a plain overlap test misses:

- *tolerance*: earlier lesions are dilated by ``match_tolerance_mm`` before the
  overlap test (registration error, borders that shift by a voxel);
- *a new lesion touching an old one*: when a component overlaps an earlier lesion
  but a thick part of it (at least ``min_new_part_mm3`` after a one-voxel opening)
  lies outside every earlier lesion, that part is split off as a separate new
  lesion (``TrackedLesion.split_from``; :func:`merge_split` gives it back, e.g. when
  the part is a vessel that enhances on every visit). A lesion that merely grew leaves
  a thin rim, which the opening removes.

Merges (two earlier lesions now one component) are one persistent lesion on the
track it overlaps most; splits (one earlier lesion now two components) are two
persistent lesions, the larger on the earlier track, the other on a fresh track.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage as ndi

from .config import LesionConfig, TrackingConfig
from .lesions import LABEL_DTYPE, components

BASELINE, NEW, PERSISTENT = "baseline", "new", "persistent"


@dataclass(frozen=True)
class TrackedLesion:
    label: int  # label in the session's tracked label map
    track: int
    status: str
    matched: tuple[int, ...]  # labels of the reference session(s) it overlaps
    # a new part split off a persistent component: the label of that persistent lesion
    split_from: int | None = None


@dataclass(frozen=True, eq=False)
class TrackedSession:
    labels: np.ndarray  # int32 on the tracking grid, 1..n, may differ from the input by splits
    lesions: tuple[TrackedLesion, ...]
    reference: int | None  # index of the session used as "previous" (None at baseline)

    def count(self, status: str | None = None) -> int:
        return sum(1 for les in self.lesions if status is None or les.status == status)


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    r = np.maximum(np.floor(radius_mm / spacing + 1e-6), 0).astype(int)
    grids = np.ogrid[tuple(slice(-k, k + 1) for k in r)]
    d2 = sum((g * s) ** 2 for g, s in zip(grids, spacing))
    return d2 <= radius_mm ** 2 + 1e-6


def _dilate(mask: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    if radius_mm <= 0 or not mask.any():
        return mask
    return ndi.binary_dilation(mask, structure=_ball(radius_mm, spacing))


def _dilate_labels(labels: np.ndarray, radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Grow each label by up to ``radius_mm`` (each voxel takes its nearest label)."""
    if radius_mm <= 0 or not labels.any():
        return labels
    dist, idx = ndi.distance_transform_edt(labels == 0, sampling=spacing, return_indices=True)
    grown = labels[tuple(idx)]
    grown[dist > radius_mm] = 0
    return grown


def track(
    label_maps: list[np.ndarray | None],
    spacing: tuple[float, float, float] | np.ndarray,
    cfg: TrackingConfig = TrackingConfig(),
    lesion_cfg: LesionConfig = LesionConfig(),
) -> list[TrackedSession | None]:
    """Track lesions through ordered sessions on one grid.

    Parameters
    ----------
    label_maps
        One integer label map per session, in visit order, all on the same grid;
        ``None`` for a session that failed (the next session is then compared with
        the last session that did not fail).
    spacing
        Voxel size of the grid in mm.

    Returns
    -------
    list of TrackedSession (``None`` where the input was ``None``).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((20, 20, 20), np.int32); a[2:6, 2:6, 2:6] = 1
    >>> b = a.copy(); b[12:16, 12:16, 12:16] = 2
    >>> out = track([a, b], (1.0, 1.0, 1.0))
    >>> [les.status for les in out[1].lesions]
    ['persistent', 'new']
    """
    spacing = np.asarray(spacing, dtype=float)
    voxel_volume = float(np.prod(spacing))
    opening = ndi.generate_binary_structure(3, 1)
    out: list[TrackedSession | None] = []
    next_track = 1
    # Each track's lesion mask, for re-enhancing lesions that return after a gap.
    history: list[tuple[int, np.ndarray]] = []  # (session index, tracked labels)
    track_of: list[dict[int, int]] = []  # per session: label -> track

    for k, labels in enumerate(label_maps):
        if labels is None:
            out.append(None)
            track_of.append({})
            continue
        labels = np.asarray(labels).astype(LABEL_DTYPE, copy=False)
        ref_k = next((j for j in range(k - 1, -1, -1) if out[j] is not None), None)
        if ref_k is None:  # baseline (or first usable session)
            comps, n = components(labels > 0, lesion_cfg)
            lesions, mapping = [], {}
            for lab in range(1, n + 1):
                mapping[lab] = next_track
                lesions.append(TrackedLesion(lab, next_track, BASELINE, ()))
                next_track += 1
            out.append(TrackedSession(comps, tuple(lesions), None))
            track_of.append(mapping)
            history.append((k, comps))
            continue

        if cfg.convention == "previous":
            ref_labels = out[ref_k].labels
            ref_tracks = track_of[ref_k]
        else:  # any earlier session: the union, later sessions drawn over earlier ones
            ref_labels = np.zeros_like(labels)
            ref_tracks = {}
            offset = 0
            for j, lab_j in history:
                m = lab_j > 0
                ref_labels[m] = lab_j[m] + offset
                for lab, tr in track_of[j].items():
                    ref_tracks[lab + offset] = tr
                offset += int(lab_j.max())
        ref_grown = _dilate_labels(ref_labels, cfg.match_tolerance_mm, spacing)
        ref_mask = ref_grown > 0

        comps, n = components(labels > 0, lesion_cfg)
        new_labels = np.zeros_like(comps)
        lesions: list[TrackedLesion] = []
        mapping: dict[int, int] = {}
        next_label = 1
        used_tracks: set[int] = set()
        objs = ndi.find_objects(comps)
        # Largest components first, so that in a split the larger part keeps the track.
        order = sorted(range(1, n + 1), key=lambda c: -int(np.count_nonzero(comps[objs[c - 1]] == c)))
        for c in order:
            sl = objs[c - 1]
            comp = comps[sl] == c
            hits = ref_grown[sl][comp]
            hits = hits[hits > 0]
            if hits.size == 0:
                tr = _earlier_track(comp, sl, history, track_of, k, spacing, cfg)
                if tr is None or tr in used_tracks:
                    tr, next_track = next_track, next_track + 1
                used_tracks.add(tr)
                new_labels[sl][comp] = next_label
                lesions.append(TrackedLesion(next_label, tr, NEW, ()))
                mapping[next_label] = tr
                next_label += 1
                continue
            matched, counts = np.unique(hits, return_counts=True)
            best = int(matched[np.argmax(counts)])
            tr = ref_tracks[best]
            if tr in used_tracks:  # a split: the smaller part gets a fresh track
                tr, next_track = next_track, next_track + 1
            used_tracks.add(tr)
            # A thick part outside every earlier lesion is a new lesion touching an old one.
            outside = comp & ~ref_mask[sl]
            parts = ndi.binary_opening(outside, structure=opening) if outside.any() else outside
            part_lab, n_parts = components(parts, lesion_cfg)
            persistent_vox = comp.copy()
            split_labels = []
            for q in range(1, n_parts + 1):
                part = part_lab == q
                if part.sum() * voxel_volume < cfg.min_new_part_mm3:
                    continue
                persistent_vox &= ~part
                ntr, next_track = next_track, next_track + 1
                new_labels[sl][part] = next_label
                split_labels.append(next_label)
                mapping[next_label] = ntr
                used_tracks.add(ntr)
                next_label += 1
            new_labels[sl][persistent_vox] = next_label
            lesions += [TrackedLesion(q, mapping[q], NEW, (), split_from=next_label)
                        for q in split_labels]
            lesions.append(TrackedLesion(next_label, tr, PERSISTENT, tuple(int(m) for m in matched)))
            mapping[next_label] = tr
            next_label += 1
        lesions.sort(key=lambda les: les.label)
        out.append(TrackedSession(new_labels, tuple(lesions), ref_k))
        track_of.append(mapping)
        history.append((k, new_labels))
    return out


def merge_split(session: TrackedSession, labels: list[int]) -> TrackedSession:
    """``session`` with the split-off new parts ``labels`` given back to the persistent
    lesions they were split from (one lesion again, on the persistent track)."""
    if not labels:
        return session
    by_label = {les.label: les for les in session.lesions}
    out = session.labels.copy()
    for q in labels:
        out[session.labels == q] = by_label[q].split_from
    return TrackedSession(out, tuple(les for les in session.lesions if les.label not in labels),
                          session.reference)


def rename_tracks(session: TrackedSession, renamed: dict[int, int]) -> TrackedSession:
    """``session`` with each lesion on a track of ``renamed`` moved to the track it maps to
    (after :func:`merge_split`: a later visit's lesion matched to a part given back carries
    the lesion's track, not the part's now unused one). A lesion stays on its track when
    the target is already in the session (two lesions there, one track each)."""
    used = {les.track for les in session.lesions}
    moved = []
    for les in session.lesions:
        target = renamed.get(les.track)
        if target is not None and target not in used:
            used.add(target)  # two parts of one lesion seen again: only one takes its track
            les = replace(les, track=target)
        moved.append(les)
    if all(a is b for a, b in zip(moved, session.lesions)):
        return session
    return TrackedSession(session.labels, tuple(moved), session.reference)


def _earlier_track(comp, sl, history, track_of, k, spacing, cfg) -> int | None:
    """Track id of an earlier lesion at the same place (a re-enhancing lesion), latest first."""
    for j, lab_j in reversed(history):
        sl2 = _pad(sl, lab_j.shape, cfg.match_tolerance_mm, spacing)
        grown = _dilate_labels(lab_j[sl2], cfg.match_tolerance_mm, spacing)
        # the component in the padded window's coordinates
        window = np.zeros(grown.shape, bool)
        inner = tuple(slice(s.start - p.start, s.stop - p.start) for s, p in zip(sl, sl2))
        window[inner] = comp
        hits = grown[window]
        hits = hits[hits > 0]
        if hits.size:
            vals, counts = np.unique(hits, return_counts=True)
            return track_of[j].get(int(vals[np.argmax(counts)]))
    return None


def _pad(sl, shape, radius_mm, spacing):
    pad = np.ceil(radius_mm / np.asarray(spacing)).astype(int) + 1
    return tuple(slice(max(0, s.start - p), min(n, s.stop + p)) for s, p, n in zip(sl, pad, shape))
