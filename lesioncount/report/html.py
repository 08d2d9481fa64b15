"""The report page: one self-contained HTML file (inline CSS, images as data: URIs, no script
that fetches anything), readable on screen and printable (a page per subject).

:func:`render_report` composes the study-level sections (flagged registrations, the
endpoint and its statistics, the eligibility table) and a section per subject (eligibility,
visit timeline, registration checks with flagged ones first, a card per new Gd+ lesion).
"""
from __future__ import annotations

import datetime as _dt
import html as _html
import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from . import crops, figures, stats
from .data import RegistrationCheck, StudyData, registration_checks

log = logging.getLogger(__name__)

MAX_BASELINE_GD = 2  # the trial's exclusion: more than 2 Gd+ lesions at inclusion

CSS = """
:root { --ink:#1a1a1a; --muted:#5a5a5a; --line:#d0d0d0; --flag:#D55E00; --ok:#009E73;
        --accent:#0072B2; --bg:#ffffff; --card:#f7f7f5; }
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       background: var(--bg); margin: 0; line-height: 1.45; font-size: 14px; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--ink); }
h3 { font-size: 16px; margin: 22px 0 8px; }
h4 { font-size: 14px; margin: 0 0 6px; }
p.meta, .muted { color: var(--muted); }
.banner { padding: 10px 14px; border-left: 6px solid var(--accent); background: #eef5fb; margin: 14px 0; }
.banner.warn { border-left-color: var(--flag); background: #fdf0e8; }
.summary { display: flex; flex-wrap: wrap; gap: 12px; margin: 14px 0; }
.summary div { border: 1px solid var(--line); padding: 8px 14px; min-width: 130px; background: var(--card); }
.summary b { display: block; font-size: 22px; }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 13px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { border-bottom: 2px solid var(--ink); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flag td { background: #fdf0e8; }
.tag { display: inline-block; padding: 0 7px; border-radius: 3px; font-size: 12px; font-weight: bold;
       border: 1.5px solid currentColor; }
.tag.flag { color: var(--flag); } .tag.ok { color: var(--ok); } .tag.na { color: var(--muted); }
nav ol { columns: 4; font-size: 13px; margin: 6px 0; }
figure { margin: 8px 0; }
figure img.plot { max-width: 100%; height: auto; }
img.endpoint { width: 760px; } img.timeline { width: 470px; }
figcaption { font-size: 12px; color: var(--muted); }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid var(--line); background: var(--card); padding: 10px; break-inside: avoid; }
.card.flag { border: 2px solid var(--flag); }
.panels { display: flex; flex-wrap: wrap; gap: 6px; }
.panel { width: 168px; font-size: 11px; color: var(--muted); }
.panel img { width: 160px; height: 160px; image-rendering: auto; display: block; border: 1px solid #888; }
.panel.reg { width: auto; }
.panel.reg img { width: auto; height: 240px; }
.panel.reg.small img { height: 150px; }
.subject-head { display: flex; gap: 22px; align-items: flex-start; flex-wrap: wrap; }
.notes li { margin: 2px 0; }
footer { margin-top: 40px; font-size: 12px; color: var(--muted); border-top: 1px solid var(--line); padding-top: 8px; }
@media print {
  body { font-size: 11px; } main { max-width: none; padding: 0; }
  nav { display: none; }
  section.subject { break-before: page; }
  .card, figure, table { break-inside: avoid; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""


def esc(v) -> str:
    return _html.escape("" if v is None else str(v), quote=True)


def fmt(v, digits: int = 2) -> str:
    """A number for a table: integers without decimals, NaN/None as 'n/a'."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)) or (isinstance(v, float) and float(v).is_integer()
                                            and digits <= 2 and abs(v) < 1e6):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def fmt_p(p) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "&lt; 0.001" if p < 0.001 else f"{p:.3f}"


def img(uri: str, alt: str, cls: str = "") -> str:
    return f'<img src="{uri}" alt="{esc(alt)}"{f" class={chr(34)}{cls}{chr(34)}" if cls else ""}>'


def table(columns: list[tuple[str, str]], rows: list[list[str]], row_classes=None) -> str:
    """``columns``: (header, css class) pairs; cells are already-escaped HTML."""
    head = "".join(f'<th class="{c}">{esc(h)}</th>' for h, c in columns)
    body = []
    for n, r in enumerate(rows):
        cls = f' class="{row_classes[n]}"' if row_classes and row_classes[n] else ""
        body.append(f"<tr{cls}>" + "".join(f'<td class="{c}">{cell}</td>'
                                           for (_, c), cell in zip(columns, r)) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def tag(text: str, kind: str) -> str:
    return f'<span class="tag {kind}">{esc(text)}</span>'


def anchor(subject: str) -> str:
    return "s-" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in subject)


# ------------------------------------------------------------------------------ study level


def _eligibility_cell(eligible) -> str:
    if eligible is None or (isinstance(eligible, float) and math.isnan(eligible)):
        return tag("unknown", "na")
    return tag("eligible", "ok") if eligible else tag(f"excluded (> {MAX_BASELINE_GD})", "flag")


def eligibility_section(data: StudyData) -> str:
    rows, classes = [], []
    for _, s in data.subjects.iterrows():
        subj = s["subject"]
        rows.append([f'<a href="#{anchor(subj)}">{esc(subj)}</a>', esc(s.get("group") or "n/a"),
                     fmt(s.get("baseline_gd_count")), _eligibility_cell(s.get("eligible")),
                     fmt(s.get("sessions")), fmt(s.get("cumulative_new_gd")),
                     "yes" if s.get("complete") in (True, None) else
                     tag("failed: " + str(s.get("failed_sessions") or "tracking"), "flag")])
        classes.append("flag" if s.get("eligible") is False else "")
    n_el = int((data.subjects.get("eligible") == True).sum())  # noqa: E712 (object column)
    cols = [("subject", ""), ("group", ""), ("baseline Gd+", "num"), ("eligibility", ""),
            ("visits", "num"), ("cumulative new Gd+", "num"), ("complete", "")]
    return (f"<h2 id='eligibility'>Eligibility at inclusion</h2>"
            f"<p>The trial excludes patients with more than {MAX_BASELINE_GD} Gd+ lesions on the "
            f"baseline scan. {n_el} of {len(data.subjects)} patients are eligible.</p>"
            + table(cols, rows, classes))


def endpoint_section(data: StudyData, treated=None, control=None) -> tuple[str, dict]:
    lines = stats.patient_lines(data.counts, data.subjects)
    curves = stats.endpoint_curves(lines)
    tab = stats.analysis_table(data.subjects, data.counts)
    comp = stats.compare_groups(tab, treated, control)
    groups = [g for g in (comp.treated, comp.control) if g]
    groups += sorted(g for g in set(lines["group"]) if g not in groups)
    if not any(groups):
        groups = [""]
    parts = ["<h2 id='endpoint'>Endpoint: cumulative new Gd+ lesions</h2>"]
    if len(lines):
        uri = figures.png_data_uri(figures.endpoint_figure(lines, curves, groups))
        parts.append(f"<figure>{img(uri, 'cumulative new Gd+ lesions per group over visits', 'plot endpoint')}"
                     "<figcaption>Thick lines: group mean; band: 95% bootstrap interval of the "
                     "mean; thin lines: each patient (slightly offset so identical lines stay "
                     "visible).</figcaption></figure>")
    rows = []
    for _, r in curves.sort_values(["group", "visit"]).iterrows():
        rows.append([esc(r["group"] or "n/a"), esc(r["label"]), fmt(r["days"], 0), fmt(r["n"]),
                     f"{r['mean']:.2f}", f"{fmt(r['low'])}&ndash;{fmt(r['high'])}"
                     if math.isfinite(r["low"]) else "n/a"])
    if rows:
        parts.append("<details><summary>Means by visit</summary>" + table(
            [("group", ""), ("visit", ""), ("median days", "num"), ("n", "num"),
             ("mean cumulative new", "num"), ("95% interval", "num")], rows) + "</details>")

    parts.append(f"<h3>{esc(comp.treated or 'IL-2')} vs {esc(comp.control or 'placebo')}</h3>")
    rr = "n/a"
    if comp.rate_ratio is not None:
        rr = (f"<b>{comp.rate_ratio:.2f}</b> (95% CI {comp.ci_low:.2f}&ndash;{comp.ci_high:.2f}), "
              f"p = {fmt_p(comp.p_value)}")
    adj = "adjusted for baseline Gd+ count" if comp.baseline_adjusted else "not adjusted"
    direction = ""
    if comp.rate_ratio is not None:
        direction = (f"fewer new lesions on {esc(comp.treated)}" if comp.rate_ratio < 1 else
                     f"more new lesions on {esc(comp.treated)}")
    rows = [
        ["patients (with follow-up)", f"{esc(comp.treated)}: {comp.n_treated}; "
                                      f"{esc(comp.control)}: {comp.n_control}"],
        ["mean (median) cumulative new Gd+",
         f"{esc(comp.treated)}: {fmt(comp.mean_treated)} ({fmt(comp.median_treated)}); "
         f"{esc(comp.control)}: {fmt(comp.mean_control)} ({fmt(comp.median_control)})"],
        [f"rate ratio {esc(comp.treated)} / {esc(comp.control)}",
         rr + (f" &mdash; {direction}" if direction else "")],
        ["model", esc(comp.model or "not fitted") + f", {adj}; exposure: number of follow-up "
                                                    "scans; Wald interval"
         + (f"; dispersion &alpha; = {comp.alpha:.2f}" if comp.alpha is not None else "")],
        ["rank-sum test (sensitivity)",
         f"Mann-Whitney U = {fmt(comp.mannwhitney_u, 1)}, two-sided p = {fmt_p(comp.mannwhitney_p)}"
         if comp.mannwhitney_p is not None else "n/a"],
    ]
    parts.append(table([("", ""), ("", "")], [[f"<b>{a}</b>", b] for a, b in rows]))
    n_inel = int((tab["eligible"] == False).sum())  # noqa: E712
    notes = list(comp.notes)
    if n_inel:
        notes.append(f"{n_inel} patient(s) not eligible at baseline are included in the analysis")
    if notes:
        parts.append("<ul class='notes'>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>")
    payload = {"comparison": comp.to_dict(),
               "curves": json.loads(curves.to_json(orient="records")),
               "patients": json.loads(tab.to_json(orient="records"))}
    return "".join(parts), payload


# ------------------------------------------------------------------------------ subject level


def _input_path(p, out: Path) -> Path | None:
    if not p:
        return None
    q = Path(p)
    if q.is_file():
        return q
    for base in (out, out.parent):
        if (base / q).is_file():
            return base / q
    return q


def session_images(data: StudyData, subject: str, session: str, is_baseline: bool) -> crops.SessionImages:
    side = data.sidecars.get((subject, session), {})
    inputs = dict(side.get("inputs") or {})
    if not inputs.get("post"):
        # a session that failed (e.g. its registration to baseline) has no sidecar: its
        # error row names the post-contrast scan, so it can still be shown, unregistered
        err = data.errors[(data.errors["subject"] == subject) & (data.errors["session"] == session)]
        files = [f for f in err["file"] if str(f).endswith((".nii", ".nii.gz"))
                 and "ce-gadolinium" in Path(str(f)).name]
        inputs["post"] = files[0] if files else None
    p = data.paths(subject, session)
    return crops.SessionImages(
        post_path=_input_path(inputs.get("post"), data.out),
        pre_path=_input_path(inputs.get("pre"), data.out) if side.get("pre_used", True) else None,
        labels_path=p.lesions, enhancement_path=p.enhancement,
        to_baseline_path=None if is_baseline else p.to_baseline,
        pre_to_post_path=p.pre_to_post, is_baseline=is_baseline)


def _eligibility_line(s: pd.Series) -> str:
    base, el = s.get("baseline_gd_count"), s.get("eligible")
    if base is None or (isinstance(base, float) and math.isnan(base)):
        return tag("eligibility unknown (no baseline count)", "na")
    if el is None:
        el = base <= MAX_BASELINE_GD
    word = "&le;" if el else "&gt;"
    return (_eligibility_cell(el) +
            f" baseline Gd+ count {fmt(base)} {word} {MAX_BASELINE_GD}")


def _timeline(data: StudyData, subject: str, checks: list[RegistrationCheck]) -> str:
    c = data.counts[data.counts["subject"] == subject]
    flag = {k.session: k.flagged for k in checks}
    quality = {k.session: k for k in checks}
    rows, classes = [], []
    sessions = data.sessions_of(subject)
    by_ses = {r["session"]: r for _, r in c.iterrows()}
    for ses in sessions:
        r = by_ses.get(ses)
        k = quality.get(ses)
        regq = "reference" if (k and k.is_baseline) else fmt(k.quality if k else None)
        state = tag("flagged", "flag") if flag.get(ses) else ""
        if r is None:
            rows.append([esc(ses), "", "", "", "", "", "", regq, tag("not counted", "flag")])
            classes.append("flag")
            continue
        new = fmt(r.get("new_gd_count"))
        auto_new = r.get("auto_new_gd_count")
        if auto_new is not None and str(auto_new) != "" and fmt(_num(auto_new)) != new:
            new += f" <span class='muted'>(auto {fmt(_num(auto_new))})</span>"
        signed = r.get("signed_off_by")
        if signed is not None and str(signed) not in ("", "nan"):
            state = (state + " " if state else "") + tag(f"signed off: {signed}", "ok")
        rows.append([esc(ses), fmt(r.get("days"), 0), fmt(r.get("gd_count")),
                     new, fmt(r.get("persistent_gd_count")),
                     f"<b>{fmt(r.get('cumulative_new_gd'))}</b>", fmt(r.get("pre_used")), regq,
                     state])
        classes.append("flag" if flag.get(ses) else "")
    cols = [("visit", ""), ("days", "num"), ("Gd+", "num"), ("new", "num"), ("persistent", "num"),
            ("cumulative new", "num"), ("pre used", ""), ("registration quality", "num"),
            ("", "")]
    fig = ""
    if len(c):
        def col(name):
            return [by_ses[ses][name] if ses in by_ses else None for ses in sessions]
        png = figures.timeline_figure(sessions, col("gd_count"), col("new_gd_count"),
                                      col("cumulative_new_gd"),
                                      [flag.get(ses, False) or ses not in by_ses
                                       for ses in sessions])
        fig = (f"<figure>{img(figures.png_data_uri(png), f'visit timeline of {subject}', 'plot timeline')}"
               "</figure>")
    return f"<div class='subject-head'><div>{table(cols, rows, classes)}</div>{fig}</div>"


def _num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _panels_html(panels: list[crops.Panel], cls: str = "panel") -> str:
    out = []
    for p in panels:
        note = f"<br><i>{esc(p.note)}</i>" if p.note else ""
        out.append(f"<div class='{cls}'>{img(figures.png_data_uri(p.png), p.title)}"
                   f"{esc(p.title)}{note}</div>")
    return "<div class='panels'>" + "".join(out) + "</div>"


def _registration(data: StudyData, subject: str, checks: list[RegistrationCheck],
                  images: dict[str, crops.SessionImages], min_quality) -> str:
    base_ses = data.sessions_of(subject)[0] if data.sessions_of(subject) else None
    follow = [k for k in checks if not k.is_baseline]
    if not follow:
        return ("<h3>Registration to baseline</h3><p class='muted'>Baseline only: nothing to "
                "register.</p>")
    ordered = sorted(follow, key=lambda k: (not k.flagged, checks.index(k)))
    n_flag = sum(k.flagged for k in follow)
    parts = [f"<h3>Registration to baseline ({n_flag} flagged"
             f"{', shown first' if n_flag else ''})</h3>",
             "<p class='muted'>Quality: correlation of edge strength between the baseline and "
             "the registered visit inside the brain (about 0.6&ndash;0.9 when aligned"
             + (f"; below {min_quality} is flagged and the visit not counted" if min_quality else "")
             + "). Checkerboard: tiles alternate baseline and visit, so a misalignment breaks "
             "edges at the tile borders. Overlay: the baseline's edges (blue) on the visit.</p>"]
    in_row = False
    for k in ordered:
        if not k.flagged and not in_row:
            parts.append("<div class='cards'>")
            in_row = True
        head = tag("FLAGGED", "flag") if k.flagged else tag("ok", "ok")
        detail = [f"quality {fmt(k.quality)}"]
        if k.pre_quality is not None:
            detail.append(f"pre&rarr;post quality {fmt(k.pre_quality)}"
                          + (" (failed: pre-contrast not used)" if k.pre_failed else ""))
        if k.flair_quality is not None:
            detail.append(f"FLAIR&rarr;post quality {fmt(k.flair_quality)}"
                          + (" (failed: FLAIR not used)" if k.flair_failed else ""))
        reasons = "".join(f"<br><span class='muted'>{esc(r)}</span>" for r in k.reasons)
        try:
            planes = ("axial", "coronal") if k.flagged else ("axial",)
            panels = crops.registration_panels(images[base_ses], images[k.session], planes=planes)
        except Exception as e:  # a broken image must not sink the whole report
            log.warning("%s %s: registration check not drawn: %s", subject, k.session, e)
            panels = []
        body = _panels_html(panels, "panel reg" if k.flagged else "panel reg small") if panels else \
            "<p class='muted'>no images to show (scans not found)</p>"
        parts.append(f"<div class='card{' flag' if k.flagged else ''}'><h4>{esc(k.session)} "
                     f"{head} <span class='muted'>{'; '.join(detail)}</span></h4>{reasons}"
                     f"{body}</div>")
    if in_row:
        parts.append("</div>")
    return "".join(parts)


def _lesion_cards(data: StudyData, subject: str, images: dict[str, crops.SessionImages]) -> str:
    les = data.lesions[(data.lesions["subject"] == subject) &
                       (data.lesions["status"].astype(str) == "new")] if len(data.lesions) else \
        data.lesions
    sessions = data.sessions_of(subject)
    if not len(les):
        return "<h3>New Gd+ lesions</h3><p class='muted'>No new Gd+ lesion.</p>"
    parts = [f"<h3>New Gd+ lesions ({len(les)})</h3>",
             "<p class='muted'>Axial crops (48 mm or 4 lesion diameters, radiological convention) in baseline space "
             "around each new lesion, outlined in orange on every panel: post-contrast at the "
             "visit, the same place on the previous visit, the pre-contrast scan and the "
             "enhancement map of the visit.</p><div class='cards'>"]
    for _, r in les.iterrows():
        ses = r["session"]
        idx = sessions.index(ses) if ses in sessions else -1
        prev = sessions[idx - 1] if idx > 0 else None
        lesion_id = int(r["lesion"]) if pd.notna(r.get("lesion")) else None
        centre = [float(r.get(a)) for a in ("x", "y", "z")]
        title = (f"{esc(ses)} &middot; lesion {fmt(lesion_id)} &middot; track {fmt(r.get('track'))}"
                 f"<br><span class='muted'>{fmt(r.get('volume_mm3'), 0)} mm&sup3;; max enhancement "
                 f"{fmt(r.get('max_enhancement'), 1)}; at ({centre[0]:.0f}, {centre[1]:.0f}, "
                 f"{centre[2]:.0f}) mm</span>")
        if r.get("transient") is True:  # the detector had set it aside; tracking kept it
            title += ("<br><span class='tag flag'>kept because its enhancement comes and goes "
                      "(the detector had taken it for a look-alike): check it first</span>")
        review = str(r.get("review") or "")
        if review and review not in ("auto", "nan"):
            who = str(r.get("reader") or "")
            title += "<br>" + tag(f"reader: {review}" + (f" ({who})" if who and who != "nan" else ""),
                                  "ok" if review != "added" else "na")
        try:
            if not all(math.isfinite(v) for v in centre) or ses not in images:
                raise ValueError("no position or visit for this lesion")
            panels = crops.lesion_panels(centre, lesion_id, images[ses],
                                         images.get(prev) if prev else None, ses, prev or "",
                                         fov_mm=crops.card_fov(_num(r.get("volume_mm3"))))
            body = _panels_html(panels)
        except Exception as e:  # noqa: BLE001 - one broken card must not sink the report
            log.warning("%s %s lesion %s: card not drawn: %s", subject, ses, lesion_id, e)
            body = f"<p class='muted'>crops not drawn: {esc(e)}</p>"
        parts.append(f"<div class='card lesion'><h4>{title}</h4>{body}</div>")
    parts.append("</div>")
    return "".join(parts)


def subject_section(data: StudyData, subject: str, min_quality=None) -> str:
    s = data.subjects[data.subjects["subject"] == subject].iloc[0]
    checks = registration_checks(data, subject)
    sessions = data.sessions_of(subject)
    images = {ses: session_images(data, subject, ses, n == 0) for n, ses in enumerate(sessions)}
    parts = [f"<section class='subject' id='{anchor(subject)}'>",
             f"<h2>{esc(subject)} <span class='muted'>&middot; group {esc(s.get('group') or 'n/a')}"
             f"</span></h2>",
             f"<p><b>Eligibility at baseline:</b> {_eligibility_line(s)}</p>",
             _timeline(data, subject, checks),
             _registration(data, subject, checks, images, min_quality),
             _lesion_cards(data, subject, images), "</section>"]
    for im in images.values():
        im.release()
    return "".join(parts)


# ------------------------------------------------------------------------------ the page


def render_report(data: StudyData, *, treated: str | None = None, control: str | None = None,
                  title: str | None = None) -> str:
    """The whole report as one HTML string."""
    title = title or f"lesioncount QC report: {data.out.resolve().name}"
    min_quality = ((data.parameters.get("registration") or {}).get("min_quality")
                   if data.parameters else None)
    all_checks = {s: registration_checks(data, s) for s in data.subjects["subject"]}
    flagged = [k for ks in all_checks.values() for k in ks if k.flagged]
    n_sessions = int(sum(len(data.sessions_of(s)) for s in data.subjects["subject"]))
    n_failed = int((data.errors["level"] == "error").sum()) if len(data.errors) else 0

    parts = [f"<h1>{esc(title)}</h1>",
             f"<p class='meta'>Output folder <code>{esc(data.out.resolve())}</code> &middot; "
             f"lesioncount {esc(data.version or 'unknown version')} &middot; report made "
             f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. Research software, not a "
             f"medical device.</p>"]
    if data.reviewed:
        parts.append("<div class='banner'><b>Reviewed counts.</b> This report uses the reader's "
                     "reviewed tables (" + ", ".join(f"<code>{esc(r)}</code>" for r in data.reviewed)
                     + ") instead of the automatic counts.</div>")
    else:
        parts.append("<div class='banner'><b>Automatic counts.</b> No reviewed tables from the "
                     "reader workflow were found; the counts are lesioncount's own.</div>")
    parts.append("<div class='summary'>"
                 f"<div><b>{len(data.subjects)}</b>patients</div>"
                 f"<div><b>{n_sessions}</b>visits</div>"
                 f"<div><b>{int(data.counts['new_gd_count'].fillna(0).sum()) if len(data.counts) else 0}"
                 f"</b>new Gd+ lesions</div>"
                 f"<div><b>{len(flagged)}</b>flagged registrations</div>"
                 f"<div><b>{n_failed}</b>errors recorded</div></div>")
    if flagged:
        rows = [[f'<a href="#{anchor(k.subject)}">{esc(k.subject)}</a>', esc(k.session),
                 fmt(k.quality), "to baseline" if k.failed else "pre&rarr;post",
                 esc("; ".join(k.reasons)) or ""] for k in flagged]
        parts.append("<div class='banner warn'><b>Flagged registrations: look at these first.</b>"
                     + table([("subject", ""), ("visit", ""), ("quality", "num"), ("which", ""),
                              ("reason", "")], rows) + "</div>")
    nav = "".join(f'<li><a href="#{anchor(s)}">{esc(s)}</a></li>' for s in data.subjects["subject"])
    parts.append(f"<nav><b>Patients</b><ol>{nav}</ol></nav>")
    ep_html, payload = endpoint_section(data, treated, control)
    parts.append(ep_html)
    parts.append(eligibility_section(data))
    for subj in data.subjects["subject"]:
        parts.append(subject_section(data, subj, min_quality))
    payload["reviewed"] = data.reviewed
    payload["flagged"] = [[k.subject, k.session] for k in flagged]
    parts.append("<footer>Counts follow the output contract: a Gd+ lesion is new when, in "
                 "baseline space, it overlaps no Gd+ lesion of the previous visit. The rate ratio "
                 "comes from a negative binomial (NB2) regression of each patient's cumulative "
                 "new Gd+ count on group and baseline Gd+ count, with the number of follow-up "
                 "scans as exposure (statsmodels); the Mann-Whitney rank-sum test is the "
                 "sensitivity analysis. Plots use the Okabe-Ito colour-blind-safe palette with "
                 "distinct line styles and markers for print.</footer>")
    data_block = json.dumps(payload, default=_json_default).replace("</", "<\\/")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
            + "".join(parts) +
            f"<script type='application/json' id='lesioncount-endpoint'>{data_block}</script>"
            "</main></body></html>")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if not np.isfinite(o) else float(o)
    if isinstance(o, Path):
        return str(o)
    return str(o)
