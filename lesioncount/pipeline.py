"""Composition only: reads inputs, calls the stages, writes outputs.

Work is split where it parallelises (issue: distributed runs):

- :func:`process_session` (one per session): brain mask, pre->post registration,
  detection, follow-up->baseline registration. Writes the detected mask, maps,
  transforms and a JSON sidecar whose ``key`` hashes inputs and parameters, so an
  unchanged session is skipped on a rerun.
- :func:`lesioncount.longitudinal.track_subject` (one per subject, after its
  sessions): labels in baseline space, :func:`lesioncount.tracking.track`, the final
  label maps on each input grid and the table rows.
- :func:`run_study`: the loop (or the Dask graph) and the study tables.

A failing session is recorded (``errors.tsv``) and the run goes on; a subject
whose baseline failed gets no counts rather than wrong ones.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__
from .config import PipelineConfig
from .dataset import Session, Study, Subject, discover
from .errors import GridError, InputError, LesionCountError, RegistrationError
from .image import Image, apply_affine, crop, mask_box, resample
from .io import (atomic_path, file_sha256, load_image, read_map, remove_partial_files,
                 save_image, write_json)
from .longitudinal import SubjectResult, track_subject
from .outputs import SessionPaths, write_description, write_tables
from .segmentation.normalise import coarse_factor

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sessions

def _sha256(path) -> str:
    try:
        return file_sha256(path)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except OSError as e:
        raise InputError(path, f"cannot be read ({e.strerror or type(e).__name__})") from None


# PipelineConfig fields that only the subject stage (track_subject) reads: a session's
# registration and detection do not depend on them, so changing one (``--convention``, a
# tracking rule) re-tracks every subject from the cached sessions instead of redoing them.
SUBJECT_STAGE_FIELDS = ("tracking", "max_baseline_gd")


# Parts of the package a session's result cannot depend on: the subject stage (longitudinal,
# tracking, stability), the tables, the CLI, the phantom, evaluation, training and the viewers.
# Everything else (new modules included) is in the session code fingerprint.
NOT_SESSION_CODE = ("napari", "review", "report", "phantom", "longitudinal.py", "tracking.py",
                    "stability.py", "outputs.py", "evaluation.py", "cli.py", "training.py")


@functools.lru_cache(maxsize=None)
def session_code_fingerprint(root: Path = Path(__file__).parent) -> str:
    """SHA-256 over the package's Python sources that registration and detection run.

    In the session key: a detector or registration change that keeps the version number
    (0.1.0 from the first commit on) would otherwise serve the old code's cached results
    after an upgrade. A change to a viewer, the tables or tracking does not redo sessions.
    """
    h = hashlib.sha256()
    for f in sorted(Path(root).rglob("*.py")):
        rel = f.relative_to(root)
        if rel.parts[0] in NOT_SESSION_CODE:
            continue
        h.update(rel.as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def session_key(session: Session, baseline: Session, cfg: PipelineConfig) -> tuple[str, dict]:
    """Content hash of everything a session's result depends on: inputs, parameters (not
    the subject-stage settings, ``SUBJECT_STAGE_FIELDS``), version and session code."""
    hashes = {"post": _sha256(session.post)}
    if session.pre is not None and session.pre.exists():
        hashes["pre"] = _sha256(session.pre)
    if session.flair is not None and session.flair.exists():
        hashes["flair"] = _sha256(session.flair)
    if session.session != baseline.session:
        hashes["baseline_post"] = _sha256(baseline.post)
    if cfg.detector in ("unet", "both", "union"):
        # retrained weights at the same path must not reuse the old weights' results
        from .segmentation.unet import weights_path
        hashes["unet_weights"] = _sha256(weights_path(cfg.unet))
    conf = {k: v for k, v in cfg.to_dict().items() if k not in SUBJECT_STAGE_FIELDS}
    blob = json.dumps({"version": __version__, "code": session_code_fingerprint(),
                       "config": conf, "inputs": hashes},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest(), hashes


def _load_cached(paths: SessionPaths, key: str) -> dict | None:
    if not paths.sidecar.exists():
        return None
    try:
        side = json.loads(paths.sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    needed = [paths.detected, paths.brain]
    if not side.get("is_baseline"):
        needed.append(paths.to_baseline)
    if side.get("key") == key and side.get("status") == "ok" and all(p.exists() for p in needed):
        return side
    return None


def _overlap_fraction(a: Image, b: Image) -> float:
    """Fraction of ``b``'s world bounding box that lies inside ``a``'s."""
    def box(img):
        corners = np.array([[i, j, k] for i in (0, img.shape[0] - 1) for j in (0, img.shape[1] - 1)
                            for k in (0, img.shape[2] - 1)], float)
        w = apply_affine(img.affine, corners)
        return w.min(0), w.max(0)
    lo_a, hi_a = box(a)
    lo_b, hi_b = box(b)
    inter = np.clip(np.minimum(hi_a, hi_b) - np.maximum(lo_a, lo_b), 0, None)
    vol_b = np.prod(np.maximum(hi_b - lo_b, 1e-6))
    return float(np.prod(inter) / vol_b)


def detect(post: Image, pre: Image | None, brain: np.ndarray, cfg: PipelineConfig,
           flair: Image | None = None):
    """Run the configured detector (classical, U-Net, both in agreement, or their union) on one session.

    ``flair`` (registered onto ``post``'s grid) is used by the classical detector and by
    U-Net weights that take it (5 input channels; the first shipped model, of 3, ignores it).
    """
    if cfg.detector == "both":
        from .segmentation.agreement import detect as both_detect
        return both_detect(post, pre, brain, cfg, flair=flair)
    if cfg.detector == "union":
        from .segmentation.agreement import detect_union
        return detect_union(post, pre, brain, cfg, flair=flair)
    if cfg.detector == "unet":
        from .segmentation.unet import detect as unet_detect
        return unet_detect(post, pre, brain, cfg, flair=flair)
    from .segmentation.classical import detect as classical_detect
    return classical_detect(post, pre, brain, cfg.classical, cfg.lesion, flair=flair)


def process_session(session: Session, baseline: Session, cfg: PipelineConfig, out: str | Path,
                    *, force: bool = False, threads: int | None = None) -> dict:
    """Preprocess and detect one session; write its intermediate outputs; return its sidecar.

    ``threads`` (a Dask worker's share of the cores) replaces ``registration.threads = 0``
    ("all cores") for the computation only; the cache key keeps the configured value.

    Raises a :class:`~lesioncount.errors.LesionCountError` when the session cannot be
    counted (bad input, failed registration to baseline).
    """
    import dataclasses

    from .brain import brain_mask
    from .registration import register

    paths = SessionPaths(out, session.subject, session.session)
    key, hashes = session_key(session, baseline, cfg)
    if not force:
        cached = _load_cached(paths, key)
        if cached is not None:
            cached["cached"] = True
            return cached
    if threads and cfg.registration.threads == 0:
        cfg = cfg.replace(registration=dataclasses.replace(cfg.registration, threads=int(threads)))
    t0 = time.perf_counter()
    c0 = time.process_time()
    timings: dict[str, float] = {}
    notes: list[dict] = []  # {"file", "note"}: warnings that do not stop the session
    is_baseline = session.session == baseline.session

    post = load_image(session.post)
    t = time.perf_counter()
    brain = brain_mask(post, cfg.brain)
    timings["brain_mask"] = time.perf_counter() - t

    pre_on_post, pre_reg = None, None
    if session.pre is not None and cfg.use_pre:
        try:
            pre = load_image(session.pre)
            frac = _overlap_fraction(post, pre)
            if frac < 0.5:
                raise GridError(session.pre, f"does not overlap its post-contrast scan "
                                             f"({frac:.0%} of its field of view inside)")
            t = time.perf_counter()
            pre_reg = register(post, pre, cfg.registration, fixed_mask=brain)
            timings["register_pre"] = time.perf_counter() - t
            if pre_reg.failed:
                notes.append(_note(session.pre, f"pre-contrast registration looks failed "
                                   f"(quality {pre_reg.quality:.3f}); detected from post alone"))
            else:
                pre_on_post = resample(pre, post, pre_reg.transform)
                brain = _agree_with_pre(brain, pre_on_post, cfg, timings)
        except InputError as e:
            notes.append(_note(session.pre, f"pre-contrast scan not used: {e}"))

    # Detection runs on the brain's box (a 1 mm whole head is about twice that), aligned
    # to the detector's coarse blocks: its result is that of the whole grid, voxel for voxel.
    box = mask_box(brain, post.spacing, cfg.crop_margin_mm, align=coarse_factor(post.spacing))
    post_c = crop(post, box)
    flair_c, flair_reg = None, None
    if session.flair is not None and cfg.use_flair:
        flair_c, flair_reg = _register_same_session(session.flair, "FLAIR", post, brain,
                                                    cfg, timings, notes, grid=post_c)

    t = time.perf_counter()
    det = detect(post_c, crop(pre_on_post, box) if pre_on_post is not None else None,
                 brain[box], cfg, flair=flair_c)
    det = _uncrop_detection(det, box, post.shape)
    timings["detect"] = time.perf_counter() - t

    base_reg = None
    if not is_baseline:
        base_img = load_image(baseline.post)
        base_paths = SessionPaths(out, baseline.subject, baseline.session)
        base_brain = None
        if base_paths.brain.exists():
            base_brain = load_image_mask(base_paths.brain, base_img)
        t = time.perf_counter()
        base_reg = register(base_img, post, cfg.registration, fixed_mask=base_brain, moving_mask=brain)
        timings["register_baseline"] = time.perf_counter() - t
        if base_reg.failed:
            raise RegistrationError(
                f"{session.post}: registration to baseline looks failed (quality "
                f"{base_reg.quality:.3f} < {cfg.registration.min_quality}); not counted")

    # Write: maps first, the sidecar last (it marks the session complete).
    save_image(post.like(det.mask.astype(np.uint8)), paths.detected)
    if det.deferred is not None:
        save_image(post.like(det.deferred.astype(np.uint8)), paths.deferred)
    else:  # another detector's earlier run in this folder must not be judged again
        paths.deferred.unlink(missing_ok=True)
    save_image(post.like(brain.astype(np.uint8)), paths.brain)
    save_image(post.like(np.clip(det.enhancement, -300, 300).astype(np.float32)),
               paths.enhancement, dtype=np.int16)
    save_image(post.like(det.probability.astype(np.float32)), paths.probability, dtype=np.uint8)
    if pre_reg is not None:
        _save_transform(pre_reg.transform, paths.pre_to_post)
    if flair_reg is not None:
        _save_transform(flair_reg.transform, paths.flair_to_post)
    if base_reg is not None:
        _save_transform(base_reg.transform, paths.to_baseline)
    timings["total"] = time.perf_counter() - t0
    side = {
        "subject": session.subject, "session": session.session, "status": "ok",
        "key": key, "version": __version__, "detector": cfg.detector,
        "is_baseline": is_baseline,
        "inputs": {"post": str(session.post), "pre": str(session.pre) if session.pre else None,
                   "flair": str(session.flair) if session.flair else None,
                   "baseline_post": str(baseline.post), "sha256": hashes},
        "pre_used": pre_on_post is not None,
        "flair_used": flair_c is not None and (cfg.detector != "unet"
                                               or bool(det.info.get("used_flair"))),
        "registration": {
            "pre_to_post": pre_reg.to_dict() if pre_reg is not None else None,
            "flair_to_post": flair_reg.to_dict() if flair_reg is not None else None,
            "to_baseline": base_reg.to_dict() if base_reg is not None else None,
        },
        "detection": det.info,
        "notes": notes,
        "seconds": {k: round(v, 3) for k, v in timings.items()},
        # the CPU this process spent on the session (all its threads) and the machine's
        # 1-minute load at its end: a session slow in wall time with little CPU waited
        # for a core another process held
        "cpu_seconds": round(time.process_time() - c0, 3),
        "load_average": _load_average(),
    }
    write_json(paths.sidecar, side)
    side["cached"] = False
    return side


def _load_average() -> float | None:
    """The machine's 1-minute load average, None where the system has none (Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _agree_with_pre(brain: np.ndarray, pre_on_post: Image, cfg: PipelineConfig,
                    timings: dict) -> np.ndarray:
    """The brain mask where the post and the registered pre-contrast scan agree.

    On whole heads a post-contrast mask can leak into enhancing dura, marrow or the skull
    base, where the pre-contrast scan (nothing enhances) is cleaner; each leak is in one scan
    only, so the intersection removes it. Kept as it is when the intersection would remove
    more than ``cfg.brain.min_pre_agreement`` of it (a failed pre mask must not erase the brain).
    """
    from .brain import brain_mask

    if not cfg.brain.intersect_pre:
        return brain
    t = time.perf_counter()
    both = brain & brain_mask(pre_on_post, cfg.brain)
    timings["brain_mask"] = timings.get("brain_mask", 0.0) + time.perf_counter() - t
    return both if both.sum() >= cfg.brain.min_pre_agreement * brain.sum() else brain


def _note(path, text: str) -> dict:
    return {"file": str(path) if path else None, "note": text}


def _uncrop_detection(det, box, shape):
    """A detection made on ``box`` of a grid, put back on the whole grid (nothing outside it:
    enhancement, probability and mask are 0 outside the brain) with its candidates' voxel
    centroids in the whole grid's indices."""
    from .image import uncrop
    from .segmentation import Detection

    lo = [s.start for s in box]
    info = dict(det.info)
    if "candidates" in info:
        info["candidates"] = [
            dict(c, centroid_ijk=[v + o for v, o in zip(c["centroid_ijk"], lo)])
            if c.get("centroid_ijk") is not None else c for c in info["candidates"]]
    return Detection(enhancement=uncrop(det.enhancement, box, shape),
                     probability=uncrop(det.probability, box, shape),
                     mask=uncrop(det.mask, box, shape), info=info,
                     deferred=None if det.deferred is None else uncrop(det.deferred, box, shape))


def _register_same_session(path, name: str, post: Image, brain: np.ndarray, cfg: PipelineConfig,
                           timings: dict, notes: list, grid: Image | None = None):
    """Another scan of the session (FLAIR) rigidly onto the post-contrast grid.

    Returns ``(image on post's grid, or on ``grid``, a part of it; or None, registration
    result or None)``; a scan that
    cannot be read, does not overlap or registers badly is left out with a note (the
    session is still counted from its T1 scans).
    """
    from .registration import register

    try:
        img = load_image(path)
        frac = _overlap_fraction(post, img)
        if frac < 0.5:
            raise GridError(path, f"does not overlap its post-contrast scan "
                                  f"({frac:.0%} of its field of view inside)")
        t = time.perf_counter()
        reg = register(post, img, cfg.registration, fixed_mask=brain)
        timings[f"register_{name.lower()}"] = time.perf_counter() - t
    except InputError as e:
        notes.append(_note(path, f"{name} not used: {e}"))
        return None, None
    if reg.failed:
        notes.append(_note(path, f"{name} registration looks failed (quality {reg.quality:.3f}); "
                                 f"not used"))
        return None, reg
    return resample(img, grid if grid is not None else post, reg.transform), reg


def _save_transform(transform, path: Path) -> None:
    """Write a transform atomically (a killed run never leaves half a .tfm under its name)."""
    from .registration import save_transform

    with atomic_path(path) as tmp:
        save_transform(transform, tmp)


def load_image_mask(path, like: Image) -> np.ndarray | None:
    m = read_map(path)
    if m.shape != like.shape:
        return None
    return m.array > 0.5


# --------------------------------------------------------------------------- study

def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__


def _error_row(subject, session, file, reason, level="error") -> dict:
    return {"subject": subject, "session": session, "file": str(file) if file else None,
            "level": level, "reason": reason}


def session_task(session: Session, baseline: Session, baseline_ok: bool, cfg: PipelineConfig,
                 out: Path, force: bool = False, threads: int | None = None
                 ) -> tuple[dict | None, list[dict]]:
    """One session as a unit of work (serial loop and Dask alike): (sidecar or None, rows).

    A follow-up whose baseline failed is not processed (``baseline_ok=False``).
    """
    if session.session != baseline.session and not baseline_ok:
        return None, [_error_row(session.subject, session.session, session.post,
                                 "skipped: the baseline session failed", level="error")]
    try:
        side = process_session(session, baseline, cfg, out, force=force, threads=threads)
        err = None
    except LesionCountError as e:
        file = getattr(e, "path", None) or session.post
        reason = getattr(e, "reason", None) or _one_line(e)
        side, err = None, _error_row(session.subject, session.session, file, reason)
    except Exception as e:  # an unexpected bug must not sink the batch either
        log.error("unexpected error in %s %s:\n%s", session.subject, session.session,
                  traceback.format_exc())
        side, err = None, _error_row(session.subject, session.session, session.post,
                                     f"internal error: {type(e).__name__}: {_one_line(e)}")
    rows = [err] if err else []
    for note in (side or {}).get("notes", []):
        rows.append(_error_row(session.subject, session.session, note["file"], note["note"],
                               "warning"))
    return side, rows


def track_task(subject: Subject, sidecars: dict[str, dict | None], cfg: PipelineConfig,
               out: Path) -> tuple[SubjectResult, list[dict]]:
    """Tracking of one subject as a unit of work: (result, error rows); never raises for bad input."""
    try:
        return track_subject(subject, sidecars, cfg, out), []
    except Exception as e:
        if not isinstance(e, LesionCountError):
            log.error("unexpected error tracking %s:\n%s", subject.subject, traceback.format_exc())
        reason = getattr(e, "reason", None) or (
            _one_line(e) if isinstance(e, LesionCountError)
            else f"internal error: {type(e).__name__}: {_one_line(e)}")
        row = _error_row(subject.subject, "", getattr(e, "path", "") or "", reason)
        return SubjectResult(subject={"subject": subject.subject, "group": subject.group,
                                      "sessions": len(subject.sessions), "complete": False}), [row]


def run_subject(subject: Subject, cfg: PipelineConfig, out: Path, force: bool = False,
                on_session=None) -> tuple[SubjectResult, list[dict]]:
    """All sessions of one subject (baseline first), then tracking."""
    errors: list[dict] = []
    sidecars: dict[str, dict | None] = {}
    base = subject.baseline
    for s in subject.sessions:
        side, rows = session_task(s, base, bool(sidecars.get(base.session)), cfg, out, force)
        sidecars[s.session] = side
        errors += rows
        if on_session:
            on_session(s, side)
    result, rows = track_task(subject, sidecars, cfg, out)
    return result, errors + rows


@dataclass
class StudyResult:
    out: Path
    counts: list[dict]
    lesions: list[dict]
    subjects: list[dict]
    errors: list[dict]

    @property
    def n_failed(self) -> int:
        return sum(1 for e in self.errors if e.get("level") == "error")


def run_study(dataset: str | Path | Study, out: str | Path, cfg: PipelineConfig = PipelineConfig(),
              *, force: bool = False, progress: bool = True, subjects: list[str] | None = None
              ) -> StudyResult:
    """Run the whole pipeline on a study and write the output folder."""
    from tqdm.auto import tqdm

    study = dataset if isinstance(dataset, Study) else discover(dataset)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n_partial = remove_partial_files(out)  # a killed run's temporary files
    if n_partial:
        log.info("removed %d partial file(s) left by an interrupted run", n_partial)
    write_description(out, cfg, study.root)
    errors = [_error_row(p.subject, p.session, p.file, p.reason) for p in study.problems]
    todo = [s for s in study.subjects if subjects is None or s.subject in subjects]
    n_sessions = sum(len(s.sessions) for s in todo)
    bar = tqdm(total=n_sessions, disable=not progress, unit="session", desc="lesioncount")
    counts, lesions, subject_rows = [], [], []

    def tick(s: Session, side):
        state = "cached" if side and side.get("cached") else ("ok" if side else "FAILED")
        bar.set_postfix_str(f"{s.subject} {s.session} {state}")
        bar.update(1)

    for subj in todo:
        res, errs = run_subject(subj, cfg, out, force, on_session=tick)
        counts += res.counts
        lesions += res.lesions
        subject_rows.append(res.subject)
        errors += errs
        # tables after every subject: a crash later loses nothing already computed
        write_tables(out, counts, lesions, subject_rows, errors)
    bar.close()
    write_tables(out, counts, lesions, subject_rows, errors)
    return StudyResult(out, counts, lesions, subject_rows, errors)
