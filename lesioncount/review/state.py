"""From the automatic tables and the readers' decisions to the reviewed tables.

No images and no Qt here: decisions refer to lesions by subject, session, lesion
id, track, centroid (baseline world mm) and volume, so they are matched again
(:func:`match_lesion`) when a rerun of the pipeline renumbers the labels. Painted
lesions carry their own voxels, volume, centroid and status (decided when they
were added, see :mod:`lesioncount.review.layers`).

Rules (issue 4):

- a rejected lesion is removed (a rejected *new* lesion lowers the new and the
  cumulative counts); when every lesion of a track at session k-1 is rejected, a
  lesion of that track at session k that was *persistent* becomes *new* (the
  contract's convention), unless the reader set its status;
- a reader's status change applies; an added lesion counts with its status;
- the latest decision on a lesion wins; with several readers the later reader in
  the list wins (so an adjudicator listed last has the last word).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ReviewConfig
from ..errors import InputError, ReviewError
from ..io import read_tsv, write_tsv
from ..outputs import write_tables

log = logging.getLogger(__name__)

BASELINE, NEW, PERSISTENT = "baseline", "new", "persistent"
STATUSES = (BASELINE, NEW, PERSISTENT)
DISAGREEMENT_COLUMNS = ["subject", "session", "lesion", "track", "x", "y", "z", "item",
                        "reader_a", "value_a", "reader_b", "value_b", "comment_a", "comment_b"]




# --------------------------------------------------------------------------- tables

def _num(v: str, kind=float):
    if v in ("", None):
        return None
    if kind is bool:
        return v.lower() == "true"
    try:
        return kind(float(v)) if kind is int else kind(v)
    except ValueError:
        return v


_TYPES = {"days": float, "gd_count": int, "new_gd_count": int, "cumulative_new_gd": int,
          "persistent_gd_count": int, "registration_quality": float, "pre_used": bool,
          "lesion": int, "track": int, "volume_mm3": float, "x": float, "y": float, "z": float,
          "max_enhancement": float, "mean_enhancement": float, "sessions": int,
          "baseline_gd_count": int, "eligible": bool, "complete": bool, "transient": bool}


def _typed(rows: list[dict]) -> list[dict]:
    return [{k: (_num(v, _TYPES[k]) if k in _TYPES else (v if v != "" else None))
             for k, v in r.items()} for r in rows]


@dataclass
class Tables:
    """The automatic study tables of an output folder, typed."""

    out: Path
    counts: list[dict]
    lesions: list[dict]
    subjects: list[dict]
    max_baseline_gd: int = 2

    def sessions(self, subject: str) -> list[str]:
        """The subject's counted sessions in visit order (as in counts.tsv)."""
        return [r["session"] for r in self.counts if r["subject"] == subject]

    def subject_ids(self) -> list[str]:
        seen = [r["subject"] for r in self.subjects] + [r["subject"] for r in self.counts]
        return list(dict.fromkeys(seen))

    def session_lesions(self, subject: str, session: str) -> list[dict]:
        return [r for r in self.lesions if r["subject"] == subject and r["session"] == session]

    def baseline_session(self, subject: str) -> str | None:
        s = self.sessions(subject)
        return s[0] if s else None


def is_output_folder(path: str | Path) -> bool:
    """True when ``path`` looks like a lesioncount output folder (tables written)."""
    p = Path(path)
    return p.is_dir() and (p / "counts.tsv").is_file() and (p / "lesions.tsv").is_file()


def load_tables(out: str | Path, cfg: ReviewConfig = ReviewConfig()) -> Tables:
    """Read ``counts.tsv``, ``lesions.tsv``, ``subjects.tsv`` of an output folder."""
    out = Path(out)
    if not is_output_folder(out):
        raise InputError(out, "not a lesioncount output folder (counts.tsv and lesions.tsv "
                              "missing); run `lesioncount run` first")
    counts = _typed(read_tsv(out / "counts.tsv"))
    lesions = _typed(read_tsv(out / "lesions.tsv"))
    subjects = _typed(read_tsv(out / "subjects.tsv")) if (out / "subjects.tsv").exists() else []
    for name, rows, cols in (("counts.tsv", counts, ["subject", "session", "gd_count"]),
                             ("lesions.tsv", lesions, ["subject", "session", "lesion", "status"])):
        if rows and not set(cols) <= set(rows[0]):
            raise InputError(out / name, f"missing columns {sorted(set(cols) - set(rows[0]))}")
    return Tables(out, counts, lesions, subjects, _max_baseline_gd(out, cfg))


def _max_baseline_gd(out: Path, cfg: ReviewConfig) -> int:
    try:
        desc = json.loads((out / "dataset_description.json").read_text())
        return int(desc["GeneratedBy"][0]["Parameters"]["max_baseline_gd"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return cfg.max_baseline_gd


def lesion_ref(row: dict) -> dict:
    """How a decision names an automatic lesion: id, track, centroid and volume."""
    return {"lesion": int(row["lesion"]), "track": row.get("track"),
            "xyz": [row.get("x"), row.get("y"), row.get("z")],
            "volume_mm3": row.get("volume_mm3")}


def match_lesion(ref: dict, rows: list[dict], tol_mm: float) -> dict | None:
    """The row of ``rows`` (one session's lesions) that a decision's ``ref`` names.

    Same id and centroid within ``tol_mm`` first; otherwise the nearest centroid within
    ``tol_mm`` (the labels were renumbered by a rerun); otherwise ``None``.
    """
    xyz = ref.get("xyz")
    if xyz is None or any(v is None for v in xyz):
        same = [r for r in rows if r["lesion"] == ref.get("lesion")]
        return same[0] if same else None

    def dist(r):
        if r.get("x") is None:
            return np.inf
        return float(np.linalg.norm(np.subtract([r["x"], r["y"], r["z"]], xyz)))

    for r in rows:
        if r["lesion"] == ref.get("lesion") and dist(r) <= tol_mm:
            return r
    if not rows:
        return None
    best = min(rows, key=dist)
    return best if dist(best) <= tol_mm else None


# --------------------------------------------------------------------------- state

@dataclass
class LesionReview:
    """The reviewed state of one automatic lesion."""

    row: dict
    verdict: str = "pending"  # pending | accepted | rejected
    status: str | None = None  # the reader's status, None = the automatic one
    reader: str | None = None
    time: str | None = None
    comment: str | None = None

    @property
    def kept(self) -> bool:
        return self.verdict != "rejected"


@dataclass
class AddedLesion:
    """A lesion the reader painted (voxels on the display grid in baseline space)."""

    id: str
    status: str
    status_source: str  # "reader" or "overlap"
    volume_mm3: float
    xyz: tuple[float, float, float]
    track: int | None = None
    ijk: list | None = None
    grid_affine: list | None = None
    reader: str | None = None
    time: str | None = None
    comment: str | None = None


@dataclass
class SessionReview:
    subject: str
    session: str
    lesions: dict[int, LesionReview] = field(default_factory=dict)
    added: dict[str, AddedLesion] = field(default_factory=dict)
    signed_off: dict | None = None  # {"reader", "time"}
    comments: list[dict] = field(default_factory=list)


@dataclass
class ReviewState:
    """Every session's review after applying the readers' decisions to the tables."""

    tables: Tables
    sessions: dict[tuple[str, str], SessionReview]
    unmatched: list[dict] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)

    def session(self, subject: str, session: str) -> SessionReview:
        return self.sessions[(subject, session)]


def _empty_state(tables: Tables) -> dict[tuple[str, str], SessionReview]:
    sessions = {(r["subject"], r["session"]): SessionReview(r["subject"], r["session"])
                for r in tables.counts}
    for r in tables.lesions:
        key = (r["subject"], r["session"])
        if key in sessions:
            sessions[key].lesions[int(r["lesion"])] = LesionReview(dict(r))
    return sessions


def apply_decisions(tables: Tables, records: list[dict],
                    cfg: ReviewConfig = ReviewConfig()) -> ReviewState:
    """Replay decision records (in order) on the automatic tables.

    Records naming a session that has no counts (failed, or gone from a rerun) and
    decisions on lesions that no longer match are kept in ``unmatched``.
    """
    sessions = _empty_state(tables)
    unmatched, readers = [], []
    for rec in records:
        if rec.get("reader") not in readers:
            readers.append(rec.get("reader"))
        key = (rec.get("subject"), rec.get("session"))
        sr = sessions.get(key)
        act = rec["action"]
        if act == "open":
            continue
        if sr is None:
            unmatched.append(rec)
            continue
        who = {"reader": rec.get("reader"), "time": rec.get("time")}
        if act in ("accept", "reject", "status") or (act == "comment" and rec.get("lesion")):
            row = match_lesion(rec.get("lesion") or {}, [lr.row for lr in sr.lesions.values()],
                               cfg.rematch_tolerance_mm)
            if row is None:
                unmatched.append(rec)
                continue
            lr = sr.lesions[int(row["lesion"])]
            if act != "comment" and lr.reader is not None and lr.reader != who["reader"]:
                lr.verdict, lr.status = "pending", None  # a later reader's word replaces it
            if act != "comment":
                lr.reader, lr.time = who["reader"], who["time"]
            if act == "accept":
                lr.verdict = "accepted"
            elif act == "reject":
                lr.verdict = "rejected"
            elif act == "status":
                lr.status = _check_status(rec.get("status"), rec)
                if lr.verdict == "pending":
                    lr.verdict = "accepted"
            else:
                lr.comment = rec.get("text")
        elif act == "comment":
            sr.comments.append({**who, "text": rec.get("text")})
        elif act == "add":
            a = rec.get("added") or {}
            sr.added[a["id"]] = AddedLesion(
                id=a["id"], status=_check_status(a.get("status"), rec),
                status_source=a.get("status_source", "reader"),
                volume_mm3=float(a["volume_mm3"]), xyz=tuple(a["xyz"]), track=a.get("track"),
                ijk=a.get("ijk"), grid_affine=a.get("grid_affine"), comment=a.get("comment"), **who)
        elif act == "remove_added":
            if sr.added.pop(rec.get("added_id"), None) is None:
                unmatched.append(rec)
        elif act == "signoff":
            sr.signed_off = who
        elif act == "reopen":
            sr.signed_off = None
    return ReviewState(tables, sessions, unmatched, readers)


def _check_status(status, rec) -> str:
    if status not in STATUSES:
        raise ReviewError(f"decision of {rec.get('reader')} at {rec.get('time')}: status "
                          f"{status!r} is not one of {', '.join(STATUSES)}")
    return status


def final_status(state: ReviewState, subject: str, session: str, lesion: int) -> str:
    """A kept automatic lesion's status after the review (see the module's rules)."""
    sr = state.session(subject, session)
    lr = sr.lesions[lesion]
    if lr.status is not None:
        return lr.status
    auto = lr.row["status"]
    if auto != PERSISTENT or lr.row.get("track") is None:
        return auto
    sessions = state.tables.sessions(subject)
    k = sessions.index(session)
    if k == 0:
        return auto
    prev = state.session(subject, sessions[k - 1])
    same_track = [p for p in prev.lesions.values() if p.row.get("track") == lr.row["track"]]
    same_track += [a for a in prev.added.values() if a.track == lr.row["track"]]
    if same_track and not any(getattr(p, "kept", True) for p in same_track):
        return NEW  # what it persisted from was rejected: enhancement where none was
    return auto


# --------------------------------------------------------------------------- reviewed tables

def reviewed_tables(state: ReviewState) -> tuple[list[dict], list[dict], list[dict]]:
    """(counts, lesions, subjects) rows after the review, with the automatic columns.

    Extra columns: ``lesions`` gets ``review`` (auto / accepted / status_changed /
    status_rederived / added), ``reader`` and ``comment``; ``counts`` gets ``signed_off_by``,
    ``signed_off_at``, ``auto_gd_count`` and ``auto_new_gd_count``; ``subjects`` gets
    ``signed_off_sessions``.
    """
    t = state.tables
    counts, lesions, subjects = [], [], []
    by_subject: dict[str, list[dict]] = {}
    for crow in t.counts:
        subj, ses = crow["subject"], crow["session"]
        sr = state.session(subj, ses)
        is_base = t.baseline_session(subj) == ses
        n_new = n_pers = n = 0
        rows = sorted(sr.lesions.values(), key=lambda lr: lr.row["lesion"])
        next_id = max([lr.row["lesion"] for lr in rows], default=0)
        for lr in rows:
            if not lr.kept:
                continue
            st = final_status(state, subj, ses, lr.row["lesion"])
            review = ("status_changed" if lr.status is not None and lr.status != lr.row["status"]
                      else "status_rederived" if st != lr.row["status"]
                      else lr.verdict if lr.verdict != "pending" else "auto")
            lesions.append({**lr.row, "status": st, "review": review, "reader": lr.reader,
                            "comment": lr.comment})
            n += 1
            n_new += st == NEW
            n_pers += st == PERSISTENT
        for a in sr.added.values():
            next_id += 1
            lesions.append({"subject": subj, "session": ses, "lesion": next_id, "track": a.track,
                            "status": a.status, "volume_mm3": round(a.volume_mm3, 2),
                            "x": round(a.xyz[0], 2), "y": round(a.xyz[1], 2),
                            "z": round(a.xyz[2], 2), "max_enhancement": None,
                            "mean_enhancement": None, "review": "added", "reader": a.reader,
                            "comment": a.comment})
            n += 1
            n_new += a.status == NEW
            n_pers += a.status == PERSISTENT
        out = dict(crow)
        out.update(gd_count=n, new_gd_count=0 if is_base else n_new,
                   persistent_gd_count=n_pers,
                   signed_off_by=(sr.signed_off or {}).get("reader"),
                   signed_off_at=(sr.signed_off or {}).get("time"),
                   auto_gd_count=crow.get("gd_count"), auto_new_gd_count=crow.get("new_gd_count"))
        by_subject.setdefault(subj, []).append(out)
        counts.append(out)
    for rows in by_subject.values():
        cum = 0
        for r in rows:
            cum += r["new_gd_count"]
            r["cumulative_new_gd"] = cum
    for srow in t.subjects or [{"subject": s} for s in by_subject]:
        out = dict(srow)
        rows = by_subject.get(srow["subject"], [])
        if rows:
            base = rows[0]["gd_count"]
            out.update(baseline_gd_count=base, eligible=base <= t.max_baseline_gd,
                       cumulative_new_gd=rows[-1]["cumulative_new_gd"])
        out["signed_off_sessions"] = sum(1 for r in rows if r.get("signed_off_by"))
        subjects.append(out)
    return counts, lesions, subjects


def write_reviewed(state: ReviewState) -> list[Path]:
    """Write ``counts_reviewed.tsv``, ``lesions_reviewed.tsv``, ``subjects_reviewed.tsv``.

    The automatic tables are never touched; the reviewed ones are derived data (they
    can always be rebuilt from the logs) and are rewritten atomically.
    """
    counts, lesions, subjects = reviewed_tables(state)
    out = state.tables.out
    write_tables(out, counts, lesions, subjects, [], suffix="_reviewed")
    return [out / f"{n}_reviewed.tsv" for n in ("counts", "lesions", "subjects")]


# --------------------------------------------------------------------------- two readers

def _verdict_status(state: ReviewState, subj, ses, lesion) -> tuple[str, str | None]:
    lr = state.session(subj, ses).lesions[lesion]
    if not lr.kept:
        return "rejected", lr.comment
    return final_status(state, subj, ses, lesion), lr.comment


def disagreements(a: ReviewState, b: ReviewState, reader_a: str, reader_b: str,
                  cfg: ReviewConfig = ReviewConfig()) -> list[dict]:
    """Where two readers' reviews of the same study differ, one row per item to adjudicate.

    Items: ``lesion`` (one rejected it, or they gave different statuses), ``added`` (a
    painted lesion the other reader did not paint), ``gd_count`` / ``new_gd_count`` (the
    session's reviewed counts differ).
    """
    rows = []

    def row(subj, ses, item, va, vb, les=None, ca=None, cb=None):
        les = les or {}
        xyz = les.get("xyz") or (les.get("x"), les.get("y"), les.get("z"))
        rows.append({"subject": subj, "session": ses, "lesion": les.get("lesion"),
                     "track": les.get("track"), "x": xyz[0], "y": xyz[1], "z": xyz[2],
                     "item": item, "reader_a": reader_a, "value_a": va,
                     "reader_b": reader_b, "value_b": vb, "comment_a": ca, "comment_b": cb})

    for key, sa in a.sessions.items():
        sb = b.sessions.get(key)
        if sb is None:
            continue
        subj, ses = key
        for lid, lr in sa.lesions.items():
            va, ca = _verdict_status(a, subj, ses, lid)
            vb, cb = _verdict_status(b, subj, ses, lid)
            if va != vb:
                row(subj, ses, "lesion", va, vb, lr.row, ca, cb)
        for mine, theirs, first in ((sa, sb, True), (sb, sa, False)):
            for ad in mine.added.values():
                same = [o for o in theirs.added.values()
                        if np.linalg.norm(np.subtract(o.xyz, ad.xyz)) <= cfg.same_added_mm]
                if same and first and same[0].status != ad.status:
                    row(subj, ses, "added", f"added {ad.status}", f"added {same[0].status}",
                        {"xyz": ad.xyz}, ad.comment, same[0].comment)
                elif not same:
                    v = f"added {ad.status}"
                    row(subj, ses, "added", v if first else "not added",
                        "not added" if first else v, {"xyz": ad.xyz},
                        ad.comment if first else None, None if first else ad.comment)
    ca, _, _ = reviewed_tables(a)
    cb, _, _ = reviewed_tables(b)
    cb_by = {(r["subject"], r["session"]): r for r in cb}
    for r in ca:
        o = cb_by.get((r["subject"], r["session"]))
        for item in ("gd_count", "new_gd_count"):
            if o is not None and r[item] != o[item]:
                row(r["subject"], r["session"], item, r[item], o[item])
    return rows


def write_disagreements(out: str | Path, rows: list[dict]) -> Path:
    return write_tsv(Path(out) / "disagreements.tsv", rows, DISAGREEMENT_COLUMNS)


# --------------------------------------------------------------------------- where to resume

def resume_point(records: list[dict]) -> dict | None:
    """Where the reader left off: the subject, session and lesion of their last action."""
    for rec in reversed(records):
        if rec.get("subject") and rec.get("session"):
            les = rec.get("lesion") or {}
            return {"subject": rec["subject"], "session": rec["session"],
                    "lesion": les.get("lesion"), "xyz": les.get("xyz"),
                    "action": rec["action"], "time": rec.get("time")}
    return None
