"""Reading an output folder for the report: tables, sidecars and the registration flags.

The report reads only what ``lesioncount run`` writes (``shared/docs/output-contract.md``
and :class:`lesioncount.outputs.SessionPaths`). When the reader workflow's reviewed tables
(``counts_reviewed.tsv``, ``subjects_reviewed.tsv``, ``lesions_reviewed.tsv``) exist, they
replace the automatic ones and :attr:`StudyData.reviewed` names the files used.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..dataset import natural_key
from ..errors import InputError
from ..io import read_tsv
from ..outputs import SessionPaths

log = logging.getLogger(__name__)

TABLES = ("counts", "lesions", "subjects")
_NUMERIC = {
    "counts": ["days", "gd_count", "new_gd_count", "cumulative_new_gd", "persistent_gd_count",
               "registration_quality"],
    "lesions": ["lesion", "track", "volume_mm3", "x", "y", "z", "max_enhancement",
                "mean_enhancement"],
    "subjects": ["sessions", "baseline_gd_count", "cumulative_new_gd"],
}
_BOOLEAN = {"counts": ["pre_used"], "lesions": ["transient"], "subjects": ["eligible", "complete"]}


@dataclass
class StudyData:
    """Everything the report shows, read from one output folder.

    Attributes
    ----------
    out : Path
        The output folder.
    counts, lesions, subjects, errors : pandas.DataFrame
        The study tables (reviewed versions where they exist).
    reviewed : list of str
        File names of the reviewed tables used instead of the automatic ones (empty if none).
    sidecars : dict
        ``(subject, session) -> dict`` of each session's JSON sidecar (absent when missing).
    parameters : dict
        The pipeline parameters from ``dataset_description.json`` (empty when absent).
    """

    out: Path
    counts: pd.DataFrame
    lesions: pd.DataFrame
    subjects: pd.DataFrame
    errors: pd.DataFrame
    reviewed: list[str] = field(default_factory=list)
    sidecars: dict = field(default_factory=dict)
    parameters: dict = field(default_factory=dict)
    version: str = ""

    def sessions_of(self, subject: str) -> list[str]:
        """The subject's sessions in visit order: those of ``counts.tsv`` in its order, and
        the failed ones (``errors.tsv`` only) placed among them by natural label order."""
        done = list(self.counts.loc[self.counts["subject"] == subject, "session"])
        failed = []
        for s in self.errors.loc[self.errors["subject"] == subject, "session"]:
            if s and s not in done and s not in failed:
                failed.append(s)
        order = list(done)
        for s in sorted(failed, key=natural_key):
            later = [i for i, d in enumerate(order) if natural_key(d) > natural_key(s)]
            order.insert(later[0] if later else len(order), s)
        return order

    def paths(self, subject: str, session: str) -> SessionPaths:
        return SessionPaths(self.out, subject, session)


def _frame(rows: list[dict], table: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for c in _NUMERIC.get(table, []):
        if c in df:
            df[c] = pd.to_numeric(df[c].replace("", None), errors="coerce")
    for c in _BOOLEAN.get(table, []):
        if c in df:
            df[c] = df[c].map({"true": True, "false": False, "True": True, "False": False,
                               "1": True, "0": False}).astype(object)
            df[c] = df[c].where(df[c].notna(), None)
    return df


def _read(path: Path, table: str) -> pd.DataFrame:
    try:
        rows = read_tsv(path)
    except InputError:
        rows = []
    if not rows:
        cols = ["subject", "session"] + _NUMERIC.get(table, []) + _BOOLEAN.get(table, [])
        if table == "subjects":
            cols = ["subject", "group"] + _NUMERIC[table] + _BOOLEAN[table]
        return pd.DataFrame(columns=cols)
    return _frame(rows, table)


def load_study(out: str | Path, *, use_reviewed: bool = True) -> StudyData:
    """Read an output folder of ``lesioncount run``.

    Parameters
    ----------
    out : path
        The output folder.
    use_reviewed : bool
        Use ``<table>_reviewed.tsv`` instead of ``<table>.tsv`` where it exists.

    Raises
    ------
    InputError
        When ``out`` is not a folder or has no ``counts.tsv``/``subjects.tsv``.
    """
    out = Path(out)
    if not out.is_dir():
        raise InputError(out, "is not a folder (expected the output folder of lesioncount run)")
    frames, reviewed = {}, []
    for t in TABLES:
        auto, rev = out / f"{t}.tsv", out / f"{t}_reviewed.tsv"
        if use_reviewed and rev.is_file():
            frames[t] = _read(rev, t)
            reviewed.append(rev.name)
        elif auto.is_file():
            frames[t] = _read(auto, t)
        elif t == "lesions":
            frames[t] = _read(auto, t)  # empty table: a study with no lesions at all
        else:
            raise InputError(auto, "not found: is this the output folder of lesioncount run?")
    errors = _read(out / "errors.tsv", "errors") if (out / "errors.tsv").is_file() else \
        pd.DataFrame(columns=["subject", "session", "file", "level", "reason"])
    for c in ("subject", "session", "file", "level", "reason"):
        if c not in errors:
            errors[c] = ""
    errors = errors.fillna("")
    for t in ("counts", "lesions"):
        for c in ("subject", "session"):
            if c not in frames[t]:
                frames[t][c] = pd.Series(dtype=object)
    if "group" not in frames["subjects"]:
        frames["subjects"]["group"] = ""
    frames["subjects"]["group"] = frames["subjects"]["group"].fillna("").astype(str)

    params, version = {}, ""
    desc = out / "dataset_description.json"
    if desc.is_file():
        try:
            gen = (json.loads(desc.read_text()).get("GeneratedBy") or [{}])[0]
            params, version = gen.get("Parameters") or {}, str(gen.get("Version") or "")
        except (json.JSONDecodeError, AttributeError, IndexError):
            log.warning("%s: unreadable; parameters not shown", desc)

    data = StudyData(out, frames["counts"], frames["lesions"], frames["subjects"], errors,
                     reviewed, {}, params, version)
    for subj in data.subjects["subject"]:
        for ses in data.sessions_of(subj):
            p = data.paths(subj, ses).sidecar
            if p.is_file():
                try:
                    data.sidecars[(subj, ses)] = json.loads(p.read_text())
                except json.JSONDecodeError:
                    log.warning("%s: unreadable sidecar", p)
    return data


@dataclass(frozen=True)
class RegistrationCheck:
    """The registration state of one session as the report shows it."""

    subject: str
    session: str
    is_baseline: bool
    quality: float | None  # to baseline
    failed: bool  # to baseline: flagged failed (not counted)
    pre_quality: float | None
    pre_failed: bool
    reasons: tuple[str, ...]
    flair_quality: float | None = None
    flair_failed: bool = False  # FLAIR->post flagged failed (the FLAIR was not used)

    @property
    def flagged(self) -> bool:
        return self.failed or self.pre_failed or self.flair_failed


def registration_checks(data: StudyData, subject: str) -> list[RegistrationCheck]:
    """Registration quality and flags of each of a subject's sessions, in visit order.

    A session is flagged when its registration to baseline, its pre->post or its
    FLAIR->post registration is marked failed in the sidecar, or when ``errors.tsv``
    records a registration problem for it (the pipeline writes no sidecar for a session
    whose registration to baseline failed).
    """
    out = []
    sessions = data.sessions_of(subject)
    for n, ses in enumerate(sessions):
        side = data.sidecars.get((subject, ses), {})
        reg = side.get("registration") or {}
        tb, pp = reg.get("to_baseline") or {}, reg.get("pre_to_post") or {}
        fp = reg.get("flair_to_post") or {}
        errs = data.errors[(data.errors["subject"] == subject) & (data.errors["session"] == ses)]
        reasons = tuple(str(r) for r in errs["reason"] if "registration" in str(r).lower())
        quality = tb.get("quality")
        if quality is None:
            row = data.counts[(data.counts["subject"] == subject) & (data.counts["session"] == ses)]
            if len(row) and "registration_quality" in row and pd.notna(row["registration_quality"].iloc[0]):
                quality = float(row["registration_quality"].iloc[0])
        if quality is None:  # a failed registration's quality is in its error message
            m = next((re.search(r"quality (-?[0-9.]+)", r) for r in reasons
                      if "baseline" in r.lower()), None)
            quality = float(m.group(1).rstrip(".")) if m else None
        failed = bool(tb.get("failed")) or any("baseline" in r.lower() for r in reasons)
        pre_failed = bool(pp.get("failed")) or any("pre-contrast" in r.lower() for r in reasons)
        flair_failed = bool(fp.get("failed")) or any(r.lower().startswith("flair")
                                                      for r in reasons)
        is_base = bool(side.get("is_baseline")) if side else n == 0
        out.append(RegistrationCheck(subject, ses, is_base, quality, failed, pp.get("quality"),
                                     pre_failed, reasons, fp.get("quality"), flair_failed))
    return out
