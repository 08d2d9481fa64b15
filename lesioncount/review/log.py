"""The reader's decision log: append-only JSON lines beside the outputs.

One file per reader, ``OUT/review/decisions_reader-<name>.jsonl``. Every action
(accept, reject, change status, comment, add a painted lesion, sign off, open a
session) is one line with the reader's name and a UTC timestamp. Lines are only
ever appended, each with a flush and an ``fsync``, so a crash loses at most the
action being written; a torn last line is skipped when reading, with a warning,
and the next append starts on a fresh line. The pipeline never writes into
``OUT/review/``, so a rerun keeps every decision.

Example
-------
>>> log = DecisionLog("out", "Dr A")                     # doctest: +SKIP
>>> log.append("reject", "sub-01", "ses-02", lesion={"lesion": 2, "track": 3,
...            "xyz": [1.0, 2.0, 3.0], "volume_mm3": 40.0})  # doctest: +SKIP
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from pathlib import Path

from .. import __version__
from ..errors import ReviewError

log = logging.getLogger(__name__)

LOG_DIR = "review"
LOG_VERSION = 1
ACTIONS = ("open", "accept", "reject", "status", "comment", "add", "remove_added", "signoff",
           "reopen")
_SAFE = re.compile(r"[^A-Za-z0-9]+")


def reader_label(reader: str) -> str:
    """The reader's name as it appears in a file name (BIDS-style label: letters and digits)."""
    label = _SAFE.sub("", reader or "")
    if not label:
        raise ReviewError(f"reader name {reader!r} has no letter or digit: give a reader name")
    return label


def log_path(out: str | Path, reader: str) -> Path:
    """Where ``reader``'s decisions on the output folder ``out`` are kept."""
    return Path(out) / LOG_DIR / f"decisions_reader-{reader_label(reader)}.jsonl"


def find_logs(out: str | Path) -> dict[str, Path]:
    """Every reader's log in ``out``: ``{reader name (as logged): path}``."""
    found: dict[str, Path] = {}
    for p in sorted((Path(out) / LOG_DIR).glob("decisions_reader-*.jsonl")):
        records = read_log(p)
        name = records[0]["reader"] if records else p.stem.split("reader-", 1)[1]
        found[name] = p
    return found


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def read_log(path: str | Path) -> list[dict]:
    """All complete records of a log, in order (a missing file is an empty log).

    A line that is not valid JSON (a write torn by a crash) is skipped with a warning.
    """
    p = Path(path)
    if not p.exists():
        return []
    records = []
    with open(p, "rb") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: line %d is incomplete (an interrupted write); skipped", p, n)
                continue
            if isinstance(rec, dict) and rec.get("action") in ACTIONS:
                records.append(rec)
            else:
                log.warning("%s: line %d is not a decision record; skipped", p, n)
    return records


class DecisionLog:
    """Append-only log of one reader's actions on one output folder.

    Parameters
    ----------
    out : path
        The lesioncount output folder (its automatic files are never written).
    reader : str
        The reader's name, recorded in every line.
    """

    def __init__(self, out: str | Path, reader: str):
        self.out = Path(out)
        self.reader = reader.strip()
        self.path = log_path(out, self.reader)

    def read(self) -> list[dict]:
        return read_log(self.path)

    def append(self, action: str, subject: str, session: str, **fields) -> dict:
        """Append one action; returns the record as written (durable when this returns)."""
        if action not in ACTIONS:
            raise ReviewError(f"{self.path}: unknown review action {action!r}")
        rec = {"v": LOG_VERSION, "time": now_utc(), "reader": self.reader, "action": action,
               "subject": subject, "session": session}
        rec.update({k: v for k, v in fields.items() if v is not None})
        rec["lesioncount"] = __version__
        line = json.dumps(rec, sort_keys=False, default=_plain) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and not _ends_with_newline(self.path, size):
                os.write(fd, b"\n")  # isolate a torn line left by a crash
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return rec


def _ends_with_newline(path: Path, size: int) -> bool:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) == b"\n"


def _plain(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
