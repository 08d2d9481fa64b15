"""The QC report and the trial endpoint (needs the ``report`` extra: matplotlib, statsmodels, pandas).

:func:`write_report` reads an output folder of ``lesioncount run`` and writes one
self-contained HTML file (no external resources; opens from disk, prints a page per patient):

- study level: flagged registrations first, the endpoint (cumulative new Gd+ lesions per
  group over visits, every patient's line, the group mean with a 95% interval), the
  IL-2 vs placebo comparison (negative binomial rate ratio adjusted for the baseline Gd+
  count, Mann-Whitney rank-sum test as sensitivity analysis), the eligibility table;
- per patient: eligibility at baseline, the visit timeline (Gd+, new, cumulative new),
  the registration check of every visit (flagged ones first), a card per new Gd+ lesion.

When the reader workflow's reviewed tables exist (``counts_reviewed.tsv`` ...), the report
uses them and says so.

Example
-------
>>> from lesioncount.report import write_report
>>> write_report("derivatives/lesioncount")            # doctest: +SKIP
PosixPath('derivatives/lesioncount/report.html')
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["write_report"]


def write_report(out_dir: str | Path, dest: str | Path | None = None, *,
                 use_reviewed: bool = True, treated: str | None = None,
                 control: str | None = None) -> Path:
    """Write the HTML QC report of an output folder.

    Parameters
    ----------
    out_dir : path
        Output folder of ``lesioncount run``.
    dest : path, optional
        Where to write the HTML (default ``out_dir/report.html``).
    use_reviewed : bool
        Use the reader's ``*_reviewed.tsv`` tables where they exist (the report says so).
    treated, control : str, optional
        Group labels of the two arms; found by name (IL-2 / placebo) when not given.

    Returns
    -------
    Path
        The written file.

    Raises
    ------
    lesioncount.errors.InputError
        When ``out_dir`` is not an output folder (no ``counts.tsv`` / ``subjects.tsv``).
    """
    from ..io import write_text
    from .data import load_study
    from .html import render_report

    out_dir = Path(out_dir)
    data = load_study(out_dir, use_reviewed=use_reviewed)
    if data.reviewed:
        log.info("using reviewed tables: %s", ", ".join(data.reviewed))
    page = render_report(data, treated=treated, control=control)
    dest = Path(dest) if dest is not None else out_dir / "report.html"
    write_text(dest, page)
    log.debug("report written to %s (%.1f MB)", dest, dest.stat().st_size / 1e6)
    return dest
