"""The ``lesioncount reviewed`` step: readers' logs -> reviewed tables (+ disagreements)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ReviewError
from .log import find_logs, log_path, read_log
from .state import (ReviewConfig, apply_decisions, disagreements, load_tables, write_disagreements,
                    write_reviewed)

log = logging.getLogger(__name__)


@dataclass
class ReviewedResult:
    written: list[Path]
    readers: list[str]
    n_decisions: int
    unmatched: list[dict] = field(default_factory=list)
    disagreements: list[dict] | None = None


def review_study(out: str | Path, readers: list[str] | None = None,
                 cfg: ReviewConfig = ReviewConfig()) -> ReviewedResult:
    """Write the reviewed tables of ``out`` from its readers' decision logs.

    Parameters
    ----------
    out : path
        The output folder.
    readers : list of str, optional
        Whose decisions. Omitted: the only reader who has a log (an error when there
        are several). With two or more, decisions are applied in the order given (a
        later reader wins where they differ: list the adjudicator last) and the
        disagreements between the first two are written to ``disagreements.tsv``.

    Raises
    ------
    ReviewError
        No log, an unknown reader, or several readers and none named.
    """
    out = Path(out)
    tables = load_tables(out, cfg)
    logs = find_logs(out)
    if not readers:
        if not logs:
            raise ReviewError(f"{out}: no decision log in {out / 'review'}: nobody has reviewed "
                              f"this folder yet (lesioncount review {out})")
        if len(logs) > 1:
            raise ReviewError(f"{out}: logs of several readers ({', '.join(logs)}); name them "
                              f"with --reader (the adjudicator last)")
        readers = list(logs)
    paths = []
    for r in readers:
        p = log_path(out, r)
        if not p.exists():
            raise ReviewError(f"{p}: no decision log for reader {r!r} (found: "
                              f"{', '.join(logs) or 'none'})")
        paths.append(p)
    per_reader = [read_log(p) for p in paths]
    merged = [rec for recs in per_reader for rec in recs]
    state = apply_decisions(tables, merged, cfg)
    written = write_reviewed(state)
    for rec in state.unmatched:
        log.warning("decision of %s at %s on %s %s no longer matches a lesion: %s",
                    rec.get("reader"), rec.get("time"), rec.get("subject"), rec.get("session"),
                    rec.get("action"))
    dis = None
    if len(readers) >= 2:
        a = apply_decisions(tables, per_reader[0], cfg)
        b = apply_decisions(tables, per_reader[1], cfg)
        dis = disagreements(a, b, readers[0], readers[1], cfg)
        written.append(write_disagreements(out, dis))
    return ReviewedResult(written, list(readers), len(merged), state.unmatched, dis)
