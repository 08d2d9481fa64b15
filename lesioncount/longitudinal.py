"""The subject stage: one subject's sessions, already detected and registered to its
baseline (:func:`lesioncount.pipeline.process_session`), composed into tracked lesions,
final label maps on each input grid and the table rows.

Reads only what the session stage wrote (detected, deferred and brain masks, enhancement
maps, transforms, sidecars): about 20 s for a 7-visit subject on 2 cores. It is outside
the session code fingerprint (``pipeline.NOT_SESSION_CODE``): a change here (tracking,
the stability and transient rules, the tables) re-tracks from the cached sessions after
an upgrade instead of redoing every registration and detection.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PipelineConfig
from .dataset import Subject
from .errors import InputError
from .image import Image, isotropic_grid, resample
from .io import read_map, read_mask, save_image
from .lesions import label_lesions, measure, relabel_sequential
from .outputs import SessionPaths
from .stability import Visit, merge_stable_splits, stable_foci, transient_foci

log = logging.getLogger(__name__)


@dataclass
class SubjectResult:
    counts: list[dict] = field(default_factory=list)
    lesions: list[dict] = field(default_factory=list)
    subject: dict = field(default_factory=dict)


def _pull_back(tracked: np.ndarray, grid: Image, native_mask: np.ndarray, native: Image,
               transform) -> np.ndarray:
    """Tracked labels (grid, baseline space) onto the native grid, on exactly the native mask."""
    from scipy import ndimage as ndi

    inv = None
    if transform is not None:
        inv = transform.GetInverse()
    back = resample(Image(tracked.astype(np.int32), grid.affine), native, inv,
                    interpolation="nearest").array
    back = np.where(native_mask, back, 0)
    holes = native_mask & (back == 0)
    if holes.any() and back.any():
        _, idx = ndi.distance_transform_edt(back == 0, sampling=native.spacing, return_indices=True)
        back[holes] = back[tuple(i[holes] for i in idx)]
    return back.astype(np.int32)


def track_subject(subject: Subject, sidecars: dict[str, dict | None], cfg: PipelineConfig,
                  out: str | Path) -> SubjectResult:
    """Track a subject's lesions and write the final label maps; return its table rows."""
    from .registration import load_transform, points_to_fixed
    from .tracking import NEW, PERSISTENT, track

    res = SubjectResult()
    sessions = subject.sessions
    failed = [s.session for s in sessions if not sidecars.get(s.session)]
    base = sessions[0]
    res.subject = {"subject": subject.subject, "group": subject.group, "sessions": len(sessions),
                   "baseline_gd_count": None, "eligible": None, "cumulative_new_gd": None,
                   "complete": not failed, "failed_sessions": ",".join(failed) or None}
    if not sidecars.get(base.session):
        return res  # no baseline: no counts rather than wrong ones

    import nibabel as nib
    base_hdr = nib.load(str(base.post))
    base_ref = Image(np.zeros(base_hdr.shape[:3], np.uint8), base_hdr.affine)
    grid = isotropic_grid(base_ref, cfg.tracking.grid_spacing_mm)

    natives, transforms, visits, deferred = {}, {}, [], []
    for s in sessions:
        if not sidecars.get(s.session):
            continue
        p = SessionPaths(out, s.subject, s.session)
        mask_img = read_mask(p.detected)
        if mask_img is None:
            raise InputError(p.detected, "missing: the session's detection was not written")
        labels = label_lesions(mask_img.array > 0, mask_img.affine, cfg.lesion)
        natives[s.session] = (mask_img, labels)
        tx = load_transform(p.to_baseline) if s.session != base.session else None
        transforms[s.session] = tx
        enh = read_map(p.enhancement) if p.enhancement.exists() else None
        visits.append((s.session, Visit(mask_img.like(labels), enh, tx, s.days,
                                        read_mask(p.brain))))
        dfr = read_mask(p.deferred)
        deferred.append(None if dfr is None or not dfr.array.any() else
                        dfr.like(label_lesions(dfr.array > 0, dfr.affine, cfg.lesion).astype(np.uint16)))
    # look-alikes the detector set aside whose enhancement comes and goes are lesions
    rescued = dict(zip([k for k, _ in visits],
                       transient_foci([v for _, v in visits], deferred, cfg.tracking)))
    for i, ((key, v), dfr) in enumerate(zip(visits, deferred)):
        if not rescued[key]:
            continue
        log.info("%s %s: %d deferred candidate(s) enhancing on <= %d visits kept as lesions",
                 subject.subject, key, len(rescued[key]), cfg.tracking.transient_max_sessions)
        mask_img, labels = natives[key]
        both = (labels > 0) | np.isin(dfr.array, rescued[key])
        labels = label_lesions(both, mask_img.affine, cfg.lesion)
        natives[key] = (mask_img, labels)
        visits[i] = (key, Visit(mask_img.like(labels), v.enhancement, v.to_baseline, v.days, v.brain))
    # (the brain masks and deferred candidates are not needed any more: a subject's 1 mm
    # whole heads hold ~100 MB of each)
    visits = [(k, Visit(v.labels, v.enhancement, v.to_baseline, v.days)) for k, v in visits]
    del deferred
    # foci enhancing at one place on many visits are vessels, not lesions (stability.py)
    stable = dict(zip([k for k, _ in visits], stable_foci([v for _, v in visits], cfg.tracking)))
    enh_maps = {k: v.enhancement.array for k, v in visits if v.enhancement is not None}
    on_grid = []
    for s in sessions:
        if s.session not in natives:
            on_grid.append(None)
            continue
        mask_img, labels = natives[s.session]
        if stable[s.session]:
            log.info("%s %s: %d focus/foci enhancing on >= %d visits left out as stable",
                     s.subject, s.session, len(stable[s.session]), cfg.tracking.stable_min_sessions)
            labels = relabel_sequential(np.where(np.isin(labels, stable[s.session]), 0, labels))
            natives[s.session] = (mask_img, labels)
        on_grid.append(resample(mask_img.like(labels), grid, transforms[s.session],
                                interpolation="nearest").array)

    tracked = track(on_grid, grid.spacing, cfg.tracking, cfg.lesion)
    # a part tracking split off a persistent lesion as new, at a place that enhances on
    # many visits, is a vessel the lesion touches: given back to the lesion, not counted
    tracked, merged = merge_stable_splits(tracked, [s.session for s in sessions],
                                          [v for _, v in visits], grid, cfg.tracking)
    for key, n in merged.items():
        log.info("%s %s: %d part(s) split off a persistent lesion enhance on >= %d visits: "
                 "given back to it, not counted as new", subject.subject, key, n,
                 cfg.tracking.stable_min_sessions)

    cumulative = 0
    for s, tr in zip(sessions, tracked):
        if tr is None:
            continue
        mask_img, labels = natives[s.session]
        native_mask = labels > 0
        back = _pull_back(tr.labels, grid, native_mask, mask_img, transforms[s.session])
        final = relabel_sequential(back)
        by_tracked = {les.label: les for les in tr.lesions}
        p = SessionPaths(out, s.subject, s.session)
        enh = enh_maps.get(s.session)
        stats = measure(mask_img.like(final), enh)
        # map final labels back to tracked labels (relabel_sequential keeps order)
        tracked_ids = np.unique(back[back > 0])
        pts = np.array([st.centroid_ras for st in stats]) if stats else np.zeros((0, 3))
        if transforms[s.session] is not None and len(pts):
            pts = points_to_fixed(transforms[s.session], pts)
        # lesions with no voxel the detector accepted: kept by the transient rule only
        accepted = np.bincount(final[mask_img.array > 0].ravel(), minlength=int(final.max()) + 1)
        n_new = n_pers = 0
        for st, tid, xyz in zip(stats, tracked_ids, pts):
            les = by_tracked.get(int(tid))
            status = les.status if les is not None else ("baseline" if tr.reference is None else NEW)
            n_new += status == NEW
            n_pers += status == PERSISTENT
            res.lesions.append({
                "subject": s.subject, "session": s.session, "lesion": st.label,
                "track": les.track if les is not None else None, "status": status,
                "volume_mm3": round(st.volume_mm3, 2),
                "x": round(float(xyz[0]), 2), "y": round(float(xyz[1]), 2), "z": round(float(xyz[2]), 2),
                "max_enhancement": st.max_enhancement, "mean_enhancement": st.mean_enhancement,
                "transient": bool(accepted[st.label] == 0),
            })
        save_image(mask_img.like(final.astype(np.int16)), p.lesions, dtype=np.int16)
        side = sidecars[s.session]
        is_base = tr.reference is None
        cumulative += 0 if is_base else n_new
        q = (side.get("registration") or {}).get("to_baseline") or {}
        res.counts.append({
            "subject": s.subject, "session": s.session,
            "days": None if s.days is None else round(s.days, 2),
            "gd_count": len(stats), "new_gd_count": 0 if is_base else n_new,
            "cumulative_new_gd": cumulative, "persistent_gd_count": n_pers,
            "status": "ok", "pre_used": side.get("pre_used"),
            "registration_quality": q.get("quality"), "detector": side.get("detector"),
            "stable_excluded": len(stable.get(s.session, [])) + merged.get(s.session, 0),
            "transient_kept": len(rescued.get(s.session, [])),
        })
    base_count = res.counts[0]["gd_count"]
    res.subject.update(baseline_gd_count=base_count, eligible=base_count <= cfg.max_baseline_gd,
                       cumulative_new_gd=cumulative)
    return res
