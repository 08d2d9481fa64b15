"""One reader reviewing one output folder: the model the napari widget is a thin shell over.

Each method that changes something appends to the reader's log first and then
updates the in-memory state by replaying the log, so what is shown is always
what the log says.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ReviewError
from ..image import Image, apply_affine
from .layers import (SessionLayers, load_session_layers, painted_components, status_by_overlap,
                     subject_grid)
from .log import DecisionLog
from .state import (NEW, ReviewConfig, ReviewState, apply_decisions, final_status, lesion_ref,
                    load_tables, resume_point, reviewed_tables, write_reviewed)

log = logging.getLogger(__name__)


def default_reader() -> str:
    """The reader's name when none is given: ``$LESIONCOUNT_READER`` or the login name."""
    import getpass
    import os

    return os.environ.get("LESIONCOUNT_READER") or getpass.getuser()


class Review:
    """A reader's review session on a lesioncount output folder.

    Parameters
    ----------
    out : path
        Output folder of ``lesioncount run``.
    reader : str
        The reader's name (recorded in every decision).
    cfg : ReviewConfig

    Examples
    --------
    >>> r = Review("out", "DrA")                                # doctest: +SKIP
    >>> r.reject("sub-01", "ses-02", 1)                         # doctest: +SKIP
    >>> r.reviewed_counts("sub-01", "ses-02")["new_gd_count"]   # doctest: +SKIP
    """

    def __init__(self, out: str | Path, reader: str | None = None,
                 cfg: ReviewConfig = ReviewConfig(), cache_sessions: int = 3):
        self.out = Path(out)
        self.cfg = cfg
        self.tables = load_tables(self.out, cfg)
        self.log = DecisionLog(self.out, reader or default_reader())
        self._grids: dict[str, Image] = {}
        self._layers: OrderedDict[tuple[str, str], SessionLayers] = OrderedDict()
        self._cache = cache_sessions
        self.refresh()

    # ------------------------------------------------------------------ reading
    @property
    def reader(self) -> str:
        return self.log.reader

    def refresh(self) -> ReviewState:
        self.records = self.log.read()
        self.state = apply_decisions(self.tables, self.records, self.cfg)
        return self.state

    def subjects(self) -> list[str]:
        return [s for s in self.tables.subject_ids() if self.tables.sessions(s)]

    def sessions(self, subject: str) -> list[str]:
        return self.tables.sessions(subject)

    def resume(self) -> dict | None:
        """Where this reader left off (subject, session, lesion, xyz), or ``None``."""
        return resume_point(self.records)

    def next_unsigned(self) -> tuple[str, str] | None:
        for subj in self.subjects():
            for ses in self.sessions(subj):
                if self.state.session(subj, ses).signed_off is None:
                    return subj, ses
        return None

    def grid(self, subject: str) -> Image:
        if subject not in self._grids:
            base = self.tables.baseline_session(subject)
            self._grids[subject] = subject_grid(self.out, subject, base, self.cfg)
        return self._grids[subject]

    def layers(self, subject: str, session: str) -> SessionLayers:
        """The session's images and labels on the subject's display grid (cached)."""
        key = (subject, session)
        if key in self._layers:
            self._layers.move_to_end(key)
            return self._layers[key]
        lay = load_session_layers(self.out, subject, session, self.grid(subject))
        self._layers[key] = lay
        while len(self._layers) > self._cache:
            self._layers.popitem(last=False)
        return lay

    def lesion_rows(self, subject: str, session: str) -> list[dict]:
        """The table the reader sees: automatic lesions (with decisions) then added ones.

        Keys: ``lesion`` (int id, or the added lesion's str id), ``track``, ``status``
        (after the review), ``auto_status``, ``verdict`` (pending / accepted / rejected /
        added), ``volume_mm3``, ``x``, ``y``, ``z``, ``location``, ``comment``, ``transient``
        (kept by the transient-enhancement rule, not by the detector: check these first).
        """
        sr = self.state.session(subject, session)
        rows = []
        for lid in sorted(sr.lesions):
            lr = sr.lesions[lid]
            st = final_status(self.state, subject, session, lid) if lr.kept else lr.row["status"]
            rows.append({"lesion": lid, "track": lr.row.get("track"), "status": st,
                         "auto_status": lr.row["status"], "verdict": lr.verdict,
                         "volume_mm3": lr.row.get("volume_mm3"), "x": lr.row.get("x"),
                         "y": lr.row.get("y"), "z": lr.row.get("z"),
                         "location": location(lr.row.get("x"), lr.row.get("y"), lr.row.get("z")),
                         "comment": lr.comment, "transient": lr.row.get("transient") is True})
        for a in sr.added.values():
            rows.append({"lesion": a.id, "track": a.track, "status": a.status,
                         "auto_status": None, "verdict": "added", "volume_mm3": a.volume_mm3,
                         "x": a.xyz[0], "y": a.xyz[1], "z": a.xyz[2],
                         "location": location(*a.xyz), "comment": a.comment, "transient": False})
        return rows

    def reviewed_counts(self, subject: str, session: str) -> dict:
        counts, _, _ = reviewed_tables(self.state)
        for r in counts:
            if r["subject"] == subject and r["session"] == session:
                return r
        raise ReviewError(f"{self.out}: no counts for {subject} {session}")

    def session_state(self, subject: str, session: str):
        return self.state.session(subject, session)

    # ------------------------------------------------------------------ actions
    def _ref(self, subject: str, session: str, lesion: int) -> dict:
        sr = self.state.session(subject, session)
        if lesion not in sr.lesions:
            raise ReviewError(f"{self.out}: {subject} {session} has no lesion {lesion}")
        return lesion_ref(sr.lesions[lesion].row)

    def _do(self, action: str, subject: str, session: str, **fields) -> dict:
        if (subject, session) not in self.state.sessions:
            raise ReviewError(f"{self.out}: {subject} {session} has no automatic counts to review")
        rec = self.log.append(action, subject, session, **fields)
        self.records.append(rec)
        self.state = apply_decisions(self.tables, self.records, self.cfg)
        return rec

    def open(self, subject: str, session: str, lesion: int | None = None) -> dict:
        """Record that the reader is looking at this session (for resuming)."""
        ref = self._ref(subject, session, lesion) if lesion is not None else None
        return self._do("open", subject, session, lesion=ref)

    def accept(self, subject: str, session: str, lesion: int) -> dict:
        return self._do("accept", subject, session, lesion=self._ref(subject, session, lesion))

    def reject(self, subject: str, session: str, lesion: int, reason: str | None = None) -> dict:
        return self._do("reject", subject, session, lesion=self._ref(subject, session, lesion),
                        text=reason)

    def set_status(self, subject: str, session: str, lesion: int, status: str) -> dict:
        self._check_status(subject, session, status)
        return self._do("status", subject, session, lesion=self._ref(subject, session, lesion),
                        status=status)

    def comment(self, subject: str, session: str, text: str, lesion: int | None = None) -> dict:
        ref = self._ref(subject, session, lesion) if lesion is not None else None
        return self._do("comment", subject, session, lesion=ref, text=text)

    def sign_off(self, subject: str, session: str) -> dict:
        return self._do("signoff", subject, session)

    def reopen(self, subject: str, session: str) -> dict:
        return self._do("reopen", subject, session)

    def remove_added(self, subject: str, session: str, added_id: str) -> dict:
        return self._do("remove_added", subject, session, added_id=added_id)

    def _check_status(self, subject: str, session: str, status: str | None) -> None:
        is_base = self.tables.baseline_session(subject) == session
        allowed = ("baseline",) if is_base else ("new", "persistent")
        if status is not None and status not in allowed:
            raise ReviewError(f"{subject} {session}: status {status!r} not allowed here "
                              f"(use {' or '.join(allowed)})")

    def previous_tracks(self, subject: str, session: str) -> np.ndarray | None:
        """The previous session's kept lesions as track ids on the display grid.

        ``None`` at baseline. Added lesions of the previous session are included.
        """
        sessions = self.sessions(subject)
        k = sessions.index(session)
        if k == 0:
            return None
        prev = sessions[k - 1]
        lay = self.layers(subject, prev)
        sr = self.state.session(subject, prev)
        lut = np.zeros(int(lay.labels.max()) + 1, np.int32)
        for lid, lr in sr.lesions.items():
            if lr.kept and lid < lut.size:
                lut[lid] = lr.row.get("track") or 0
        tracks = lut[lay.labels]
        grid = self.grid(subject)
        free = max([lr.row.get("track") or 0 for s in sessions
                    for lr in self.state.session(subject, s).lesions.values()] + [0])
        for a in sr.added.values():
            if a.ijk and a.grid_affine and np.allclose(a.grid_affine, grid.affine):
                ijk = np.asarray(a.ijk, int)
                tracks[tuple(ijk.T)] = a.track or free + 1
        return tracks

    def add_lesion(self, subject: str, session: str, mask: np.ndarray,
                   status: str | None = None, comment: str | None = None) -> list[dict]:
        """Add each connected part of a painted mask (display grid) as a lesion.

        ``status=None`` decides it by overlap with the previous session's kept lesions in
        baseline space (tolerance: the pipeline's tracking tolerance), as the pipeline does:
        ``baseline`` at the baseline visit, else ``persistent`` (on the overlapped track) or
        ``new`` (on a fresh track).
        """
        from ..config import TrackingConfig

        self._check_status(subject, session, status)
        grid = self.grid(subject)
        mask = np.asarray(mask) > 0
        if mask.shape != grid.shape:
            raise ReviewError(f"painted mask has shape {mask.shape}, the display grid of "
                              f"{subject} is {grid.shape}")
        parts = painted_components(mask)
        if not parts:
            raise ReviewError(f"{subject} {session}: nothing painted")
        prev = self.previous_tracks(subject, session) if status is None else None
        is_base = self.tables.baseline_session(subject) == session
        recs = []
        for n, ijk in enumerate(parts):
            track = None
            if status is not None:
                st, source = status, "reader"
            elif is_base:
                st, source = "baseline", "overlap"
            else:
                st, track = status_by_overlap(ijk, prev, grid, TrackingConfig().match_tolerance_mm)
                source = "overlap"
            if track is None:
                track = self._fresh_track(subject)
            xyz = apply_affine(grid.affine, ijk.mean(0))
            added = {"id": f"add-{len(self.records) + 1}-{n + 1}", "status": st,
                     "status_source": source, "track": int(track),
                     "volume_mm3": round(float(len(ijk) * grid.voxel_volume), 2),
                     "xyz": [round(float(v), 2) for v in xyz], "comment": comment,
                     "ijk": ijk.astype(int).tolist(), "grid_affine": grid.affine.tolist()}
            recs.append(self._do("add", subject, session, added=added))
        return recs

    def _fresh_track(self, subject: str) -> int:
        used = [r.get("track") or 0 for r in self.tables.lesions if r["subject"] == subject]
        for s in self.sessions(subject):
            used += [a.track or 0 for a in self.state.session(subject, s).added.values()]
        return max(used + [0]) + 1

    def added_mask(self, subject: str, session: str) -> np.ndarray:
        """Added lesions of a session on the display grid, as 1..n in the order listed."""
        grid = self.grid(subject)
        out = np.zeros(grid.shape, np.int32)
        for n, a in enumerate(self.state.session(subject, session).added.values(), start=1):
            if a.ijk and a.grid_affine and np.allclose(a.grid_affine, grid.affine):
                out[tuple(np.asarray(a.ijk, int).T)] = n
        return out

    def write_reviewed(self) -> list[Path]:
        return write_reviewed(self.state)

    def is_new(self, subject: str, session: str, lesion: int) -> bool:
        return final_status(self.state, subject, session, lesion) == NEW


def location(x, y, z) -> str:
    """A short anatomical direction string from baseline world mm, e.g. ``R 12 A 30 S 8``."""
    if x is None or y is None or z is None:
        return ""
    return (f"{'R' if x >= 0 else 'L'}{abs(x):.0f} {'A' if y >= 0 else 'P'}{abs(y):.0f} "
            f"{'S' if z >= 0 else 'I'}{abs(z):.0f}")
