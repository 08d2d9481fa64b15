#!/usr/bin/env python
"""Render a lesioncount HTML report in headless Chromium: load check and screenshot.

    python scripts/render_report.py REPORT.html [--screenshot docs/report.png]
                                     [--width 1280] [--height 3200] [--chromium PATH]
    python scripts/render_report.py WORKDIR --phantom --screenshot docs/report.png

With ``--phantom`` it first makes a phantom study whose placebo arm has a higher rate of
new lesions (6 subjects x 3 monthly visits), runs lesioncount on it, writes the report
and also checks that the report's rate ratio IL-2/placebo is below 1.

The load check opens a copy of the report with a small probe script added at the top of
<head>; after the page's load event the probe records, on <body>, the number of <img>
elements, those that are not a ``data:`` URI or did not decode (natural size 0), every
script or resource error, and any resource fetched from outside the page. Chromium's
``--dump-dom`` prints the DOM after load and the probe's record is read from it. Exit
status 0 when the page loaded with every image shown, no error and no external resource.

Debian's ``chromium`` package provides /usr/bin/chromium.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROBE = """<script>
window.__lcErrors = [];
window.addEventListener('error', function (e) {
  var t = e.target && e.target !== window ? (e.target.tagName || 'element') + ' failed to load'
                                          : String(e.message || e.type);
  window.__lcErrors.push(t);
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) {
    return !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0 &&
             i.getAttribute('src').indexOf('data:') === 0);
  }).map(function (i) { return i.alt || i.getAttribute('src').slice(0, 40); });
  var res = performance.getEntriesByType('resource').map(function (r) { return r.name; })
    .filter(function (n) { return n.indexOf('data:') !== 0; });
  document.body.setAttribute('data-lc-check', JSON.stringify({
    images: imgs.length, bad_images: bad, errors: window.__lcErrors, external: res,
    height: document.documentElement.scrollHeight}));
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--mute-audio", "--disable-dev-shm-usage"]


def find_chromium(explicit: str | None = None) -> str | None:
    for c in ([explicit] if explicit else []) + ["/usr/bin/chromium", "chromium",
                                                 "chromium-browser", "google-chrome"]:
        p = shutil.which(c) if c and not os.path.isabs(c) else c
        if p and os.path.exists(p):
            return p
    return None


def _run(chromium: str, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="lc-chromium-") as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_report(html: str | Path, chromium: str | None = None, timeout: float = 120) -> dict:
    """Load the report in headless Chromium and return the probe's record.

    Returns a dict with ``images`` (count), ``bad_images``, ``errors``, ``external``
    (resources fetched from outside the page), ``height`` (page height in px) and
    ``console`` (Chromium's console error lines), and ``ok``.
    """
    chromium = find_chromium(chromium)
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    html = Path(html)
    text = html.read_text(encoding="utf-8")
    probed = re.sub(r"<head>", "<head>" + PROBE, text, count=1)
    with tempfile.TemporaryDirectory(prefix="lc-report-") as d:
        copy = Path(d) / html.name
        copy.write_text(probed, encoding="utf-8")
        proc = _run(chromium, ["--dump-dom", "--virtual-time-budget=15000",
                               "--enable-logging=stderr", "--v=0", copy.as_uri()], timeout)
    m = re.search(r"data-lc-check=\"([^\"]*)\"", proc.stdout)
    if not m:
        return {"ok": False, "images": 0, "bad_images": [], "errors": ["probe did not run"],
                "external": [], "height": 0, "console": proc.stderr[-2000:].splitlines()}
    import html as _html
    rec = json.loads(_html.unescape(m.group(1)))
    rec["console"] = [ln for ln in proc.stderr.splitlines()
                      if "CONSOLE" in ln and ("Uncaught" in ln or "rror" in ln)]
    rec["ok"] = (rec["images"] > 0 and not rec["bad_images"] and not rec["errors"]
                 and not rec["external"] and not rec["console"])
    return rec


def screenshot(html: str | Path, dest: str | Path, width: int = 1280, height: int = 3200,
               chromium: str | None = None, timeout: float = 120) -> Path:
    """A PNG screenshot of the top ``height`` pixels of the report at ``width``."""
    chromium = find_chromium(chromium)
    if chromium is None:
        raise FileNotFoundError("chromium not found (Debian: apt-get install chromium)")
    dest = Path(dest).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    proc = _run(chromium, [f"--screenshot={dest}", f"--window-size={width},{height}",
                           "--virtual-time-budget=15000", Path(html).resolve().as_uri()], timeout)
    if not dest.exists():
        raise RuntimeError(f"chromium wrote no screenshot: {proc.stderr[-500:]}")
    return dest


def phantom_report(work: str | Path, *, subjects: int = 6, sessions: int = 3, seed: int = 3,
                   placebo_rate: float = 1.5, il2_rate: float = 0.3) -> Path:
    """Make a phantom study whose arms differ (placebo rate higher), run lesioncount on it
    and write its report; steps already done in ``work`` are reused. Returns the report."""
    import time

    from lesioncount.phantom import make_study
    from lesioncount.pipeline import run_study
    from lesioncount.report import write_report

    work = Path(work)
    study, out = work / "study", work / "out"
    t0 = time.perf_counter()
    if not (study / "dataset_description.json").exists():
        make_study(study, n_subjects=subjects, n_sessions=sessions, seed=seed,
                   backgrounds=("mni",), whole_head_fraction=0.0, thick_slice_fraction=0.5,
                   with_pre=True, arm_rates={"placebo": placebo_rate, "il2": il2_rate},
                   overwrite=True)
        print(f"phantom written ({time.perf_counter() - t0:.0f} s)")
    run_study(study, out, progress=True)
    print(f"pipeline done ({time.perf_counter() - t0:.0f} s)")
    report = write_report(out)
    print(f"report written ({time.perf_counter() - t0:.0f} s): {report}")
    return report


def endpoint_of(report: str | Path) -> dict:
    """The machine-readable endpoint block embedded in a report."""
    text = Path(report).read_text(encoding="utf-8")
    m = re.search(r"<script type='application/json' id='lesioncount-endpoint'>(.*?)</script>",
                  text, re.S)
    return json.loads(m.group(1).replace("<\\/", "</")) if m else {}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("report", help="the HTML report, or with --phantom a working folder")
    ap.add_argument("--phantom", action="store_true",
                    help="make a phantom study with a higher placebo rate in REPORT (a folder), "
                         "run lesioncount, write the report and check the rate ratio is < 1")
    ap.add_argument("--screenshot")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=3200)
    ap.add_argument("--chromium")
    a = ap.parse_args(argv)
    report = phantom_report(a.report) if a.phantom else Path(a.report)
    rec = check_report(report, a.chromium)
    print(json.dumps(rec, indent=2))
    ok = rec["ok"]
    if a.phantom:
        comp = endpoint_of(report).get("comparison", {})
        print(json.dumps({k: comp.get(k) for k in ("treated", "control", "n_treated", "n_control",
                                                    "mean_treated", "mean_control", "model",
                                                    "rate_ratio", "ci_low", "ci_high", "p_value",
                                                    "mannwhitney_p", "notes")}, indent=2))
        rr = comp.get("rate_ratio")
        right_way = (rr is not None and rr < 1) or (
            rr is None and (comp.get("mean_treated") or 0) < (comp.get("mean_control") or 0))
        print(f"rate ratio il2/placebo goes the right way (< 1): {right_way}")
        ok = ok and right_way
    if a.screenshot:
        print(f"screenshot: {screenshot(report, a.screenshot, a.width, a.height, a.chromium)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
