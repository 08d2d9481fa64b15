"""Finding the subjects and sessions of a study: a BIDS folder or a TSV manifest.

:func:`discover` never reads image data; it finds files, orders the visits and
records what is missing. A session without a post-contrast scan, or two folders
that are the same session, is recorded in :attr:`Study.problems` (so a batch goes
on with everything else); a folder with no subject at all raises
:class:`~lesioncount.errors.LayoutError`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .errors import InputError, LayoutError
from .io import NIFTI_SUFFIXES, read_tsv


@dataclass(frozen=True)
class Session:
    subject: str  # "sub-01"
    session: str  # "ses-M00"
    post: Path
    pre: Path | None = None
    flair: Path | None = None
    acq_time: datetime | None = None
    days: float | None = None  # since the subject's baseline, when acquisition times are known


@dataclass(frozen=True)
class Subject:
    subject: str
    sessions: tuple[Session, ...]  # ordered; the first is the baseline
    group: str | None = None

    @property
    def baseline(self) -> Session:
        return self.sessions[0]


@dataclass(frozen=True)
class Problem:
    """Something wrong with the dataset that concerns one subject or session."""

    subject: str
    session: str
    file: str
    reason: str


@dataclass(frozen=True)
class Study:
    root: Path
    layout: str  # "bids" or "manifest"
    subjects: tuple[Subject, ...]
    problems: tuple[Problem, ...] = field(default_factory=tuple)

    def subject(self, sid: str) -> Subject:
        for s in self.subjects:
            if s.subject == sid:
                return s
        raise KeyError(sid)


def natural_key(label: str):
    """Natural order of labels: M0 < M1 < M6 < M12 (digits compare as numbers)."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower())
            for t in re.split(r"(\d+)", label) if t != ""]


def parse_bids_name(name: str) -> tuple[dict[str, str], str] | None:
    """``sub-01_ses-M00_ce-gadolinium_T1w.nii.gz`` -> ({'sub': '01', ...}, 'T1w')."""
    for suf in NIFTI_SUFFIXES:
        if name.endswith(suf):
            stem = name[: -len(suf)]
            break
    else:
        return None
    parts = stem.split("_")
    if len(parts) < 2:
        return None
    ents: dict[str, str] = {}
    for p in parts[:-1]:
        if "-" not in p:
            return None
        k, v = p.split("-", 1)
        ents[k] = v
    return ents, parts[-1]


def _is_gadolinium(ce: str | None) -> bool:
    return ce is not None and re.search(r"gad|gd", ce, re.IGNORECASE) is not None


def _pick(cands: list[tuple[dict, Path]]) -> Path | None:
    """Several runs of one kind: take the last run (a repeat is usually the better one)."""
    if not cands:
        return None
    cands.sort(key=lambda c: (natural_key(c[0].get("run", "")), c[1].name))
    return cands[-1][1]


def _parse_time(value: str, where: Path) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InputError(where, f"acq_time {value!r} is not an ISO 8601 date/time") from None


def _order_sessions(sessions: list[Session]) -> tuple[Session, ...]:
    if sessions and all(s.acq_time is not None for s in sessions):
        ordered = sorted(sessions, key=lambda s: (s.acq_time, natural_key(s.session)))
        t0 = ordered[0].acq_time
        return tuple(
            Session(**{**s.__dict__, "days": (s.acq_time - t0).total_seconds() / 86400.0})
            for s in ordered)
    return tuple(sorted(sessions, key=lambda s: natural_key(s.session)))


def _prefixed(value: str, prefix: str) -> str:
    value = value.strip()
    return value if value.startswith(prefix) else prefix + value


def discover(path: str | Path) -> Study:
    """Find the study at ``path``: a BIDS dataset folder or a TSV manifest file."""
    p = Path(path)
    if not p.exists():
        raise LayoutError(p, "no such file or folder")
    if p.is_file():
        if p.suffix.lower() in (".tsv", ".txt"):
            return _discover_manifest(p)
        raise LayoutError(p, "is a file but not a .tsv manifest")
    subs = sorted((d for d in p.iterdir() if d.is_dir() and d.name.startswith("sub-")),
                  key=lambda d: natural_key(d.name))
    if subs:
        return _discover_bids(p, subs)
    manifests = sorted(p.glob("*.tsv"))
    manifests = [m for m in manifests if m.name not in ("participants.tsv",)]
    if len(manifests) == 1:
        return _discover_manifest(manifests[0])
    raise LayoutError(p, "no sub-* folders (BIDS) and no single .tsv manifest: "
                         "unknown layout, or a dataset with no subjects")


def _read_groups(root: Path) -> dict[str, str]:
    f = root / "participants.tsv"
    if not f.exists():
        return {}
    rows = read_tsv(f)
    if rows and "participant_id" not in rows[0]:
        raise InputError(f, "has no participant_id column")
    return {_prefixed(r["participant_id"], "sub-"): r.get("group", "") or None for r in rows}


def _discover_bids(root: Path, sub_dirs: list[Path]) -> Study:
    groups = _read_groups(root)
    subjects: list[Subject] = []
    problems: list[Problem] = []
    for sd in sub_dirs:
        sid = sd.name
        times: dict[str, datetime | None] = {}
        stsv = sd / f"{sid}_sessions.tsv"
        if stsv.exists():
            try:
                for r in read_tsv(stsv):
                    if "session_id" not in r:
                        raise InputError(stsv, "has no session_id column")
                    times[_prefixed(r["session_id"], "ses-")] = _parse_time(r.get("acq_time", ""), stsv)
            except InputError as e:
                problems.append(Problem(sid, "", str(stsv), e.reason))
                times = {}
        sessions: list[Session] = []
        ses_dirs = sorted((d for d in sd.iterdir() if d.is_dir() and d.name.startswith("ses-")),
                          key=lambda d: (natural_key(d.name), d.name))  # ties: a fixed order
        if not ses_dirs:
            problems.append(Problem(sid, "", str(sd), "no ses-* folders: a longitudinal study "
                                                      "needs sessions"))
            continue
        seen: dict[tuple, str] = {}
        for ses in ses_dirs:
            same = seen.setdefault(tuple(natural_key(ses.name)), ses.name)
            if same != ses.name:  # ses-1 and ses-01: one visit in two folders
                problems.append(Problem(sid, ses.name, str(ses),
                                        f"duplicate session: same visit label as {same}; "
                                        f"only {same} is used"))
                continue
            anat = ses / "anat"
            found: dict[str, list] = {"post": [], "pre": [], "flair": []}
            for f in sorted(anat.iterdir()) if anat.is_dir() else []:
                parsed = parse_bids_name(f.name)
                if parsed is None:
                    continue
                ents, suffix = parsed
                if ents.get("sub") != sid[4:] or ents.get("ses") != ses.name[4:]:
                    problems.append(Problem(sid, ses.name, str(f),
                                            "file name's sub-/ses- entities do not match its folder"))
                    continue
                if suffix == "T1w" and _is_gadolinium(ents.get("ce")):
                    found["post"].append((ents, f))
                elif suffix == "T1w" and "ce" not in ents:
                    found["pre"].append((ents, f))
                elif suffix == "FLAIR":
                    found["flair"].append((ents, f))
            post = _pick(found["post"])
            if post is None:
                problems.append(Problem(sid, ses.name, str(anat),
                                        "no post-contrast T1 (*_ce-gadolinium_T1w.nii[.gz])"))
                continue
            sessions.append(Session(sid, ses.name, post, _pick(found["pre"]),
                                    _pick(found["flair"]), times.get(ses.name)))
        if sessions:
            subjects.append(Subject(sid, _order_sessions(sessions), groups.get(sid)))
        else:
            problems.append(Problem(sid, "", str(sd), "no usable session"))
    if not subjects:
        raise LayoutError(root, "BIDS dataset has no subject with a usable session")
    return Study(root, "bids", tuple(subjects), tuple(problems))


MANIFEST_REQUIRED = ("subject", "session", "post")


def _discover_manifest(path: Path) -> Study:
    rows = read_tsv(path)
    missing = [c for c in MANIFEST_REQUIRED if c not in rows[0]] if rows else list(MANIFEST_REQUIRED)
    if missing:
        raise LayoutError(path, f"manifest lacks column(s) {', '.join(missing)}")
    base = path.parent
    by_sub: dict[str, dict[str, Session]] = {}
    groups: dict[str, str | None] = {}
    problems: list[Problem] = []

    def resolve(v: str) -> Path | None:
        if not v:
            return None
        q = Path(v)
        return q if q.is_absolute() else base / q

    for n, r in enumerate(rows, start=2):
        sid = _prefixed(r["subject"], "sub-")
        ses = _prefixed(r["session"], "ses-")
        post = resolve(r.get("post", ""))
        if post is None:
            problems.append(Problem(sid, ses, str(path), f"line {n}: no post-contrast path"))
            continue
        if ses in by_sub.get(sid, {}):
            problems.append(Problem(sid, ses, str(path), f"line {n}: duplicate session {ses}; "
                                                         "the first one is used"))
            continue
        try:
            t = _parse_time(r.get("acq_time", ""), path)
        except InputError as e:
            problems.append(Problem(sid, ses, str(path), e.reason))
            t = None
        by_sub.setdefault(sid, {})[ses] = Session(sid, ses, post, resolve(r.get("pre", "")),
                                                  resolve(r.get("flair", "")), t)
        if r.get("group"):
            groups[sid] = r["group"]
    if not by_sub:
        raise LayoutError(path, "manifest lists no subject")
    subjects = tuple(Subject(s, _order_sessions(list(v.values())), groups.get(s))
                     for s, v in sorted(by_sub.items(), key=lambda kv: natural_key(kv[0])))
    return Study(path, "manifest", subjects, tuple(problems))
