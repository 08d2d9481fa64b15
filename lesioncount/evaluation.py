"""Scoring lesioncount's outputs against a phantom's truth.

:func:`evaluate` reads an output folder (``counts.tsv``, ``lesions.tsv``, ``subjects.tsv``
and the ``*_ce-gadolinium_desc-lesions_dseg.nii.gz`` label maps) and a phantom's
``derivatives/truth`` folder, and returns plain numbers:

- lesion-wise: a detection matches a true lesion when they share at least one voxel
  (both label maps are on the grid of the session's post-contrast input).
  Sensitivity = matched true lesions / true lesions; precision = matched detections /
  detections; F1; false positives per scan = unmatched detections / evaluated scans.
- counts: per-session ``gd_count`` and ``new_gd_count`` errors (result - truth), their mean
  absolute value and the fraction exact; per subject the cumulative new count error and
  the fraction exact (subjects with every session evaluated); eligibility agreement.
- the endpoint per arm (``group`` of the truth's subjects): mean cumulative new count as
  counted and as true, the fraction of true new lesions counted, and with two arms the
  ratio of their means (what the trial compares), counted and true.
- status: of matched true lesions, how often the best-overlapping detection has the
  same status (baseline / new / persistent).
- the lesion-wise figures split by acquisition (``3d1mm`` / ``2d3mm``), whole head and
  pre-contrast availability, and the per-subject figures (cumulative exactness,
  eligibility) by the subject's acquisition and whole-head flag; sensitivity by lesion
  kind, size, contrast and site; false positives by what they lie on (vein, sinus/falx,
  choroid plexus, dura, chronic lesion).
- 95 % intervals (Wilson score, :func:`wilson_ci95`) of the lesion-wise sensitivity and
  precision, of the fraction of subjects with an exact cumulative count and of the
  eligibility agreement: a benchmark has a few dozen lesions and a handful of subjects.
- transient: of the detections ``lesions.tsv`` flags as kept by the transient-enhancement
  rule (lesioncount.stability.transient_foci), how many match a true lesion.

Sessions missing from the output (or whose row says they failed, or whose label map is
missing or on another grid) are counted as failed and left out of the figures.
"""
from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from .errors import InputError
from .io import read_tsv, write_json

log = logging.getLogger(__name__)

MIMIC_NAMES = {1: "vein", 2: "sinus_falx", 3: "choroid_plexus", 4: "dura"}
# Trial.md: typical misses are lesions smaller than ~70 mm^3.
SIZE_BINS = ((0.0, 70.0, "<70mm3"), (70.0, 300.0, "70-300mm3"), (300.0, np.inf, ">=300mm3"))
CONTRAST_BINS = ((0.0, 0.35, "<0.35"), (0.35, 0.6, "0.35-0.6"), (0.6, np.inf, ">=0.6"))


def _bool(v) -> bool | None:
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    return None


def _int(v) -> int | None:
    try:
        return int(round(float(v)))
    except (TypeError, ValueError):
        return None


def _read_labels(path: Path):
    """An integer label map and its affine (all-zero maps allowed)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asarray(img.dataobj)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one failed session
        raise InputError(path, f"unreadable label map ({type(e).__name__}: {e})") from None
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    return np.rint(arr).astype(np.int64), np.asarray(img.affine, float)


def _find_dseg(root: Path, sub: str, ses: str, desc: str) -> Path | None:
    d = root / sub / ses / "anat"
    if not d.is_dir():
        return None
    hits = sorted(d.glob(f"{sub}_{ses}*_ce-gadolinium*_desc-{desc}_*.nii*"))
    return hits[0] if hits else None


def _ratio(a, b):
    return float(a) / float(b) if b else None


def wilson_ci95(k, n):
    """Wilson score 95 % interval of the proportion k / n ([low, high]; None when n is 0).

    Benchmarks score a few dozen lesions or a handful of subjects: 43 of 48 found reads
    0.896, and any sensitivity from 0.78 to 0.95 would give that often. Wilson's interval
    keeps its coverage at such n and near 0 or 1, where the normal approximation does not.
    """
    if not n:
        return None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def _f1(p, r):
    if p is None or r is None:
        return None
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


class _Tally:
    """Lesion-wise counts over a set of scans."""

    def __init__(self):
        self.scans = self.truth = self.truth_hit = self.det = self.det_hit = 0

    def add(self, other: "_Tally"):
        for k in ("scans", "truth", "truth_hit", "det", "det_hit"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def figures(self) -> dict:
        sens = _ratio(self.truth_hit, self.truth)
        prec = _ratio(self.det_hit, self.det)
        if self.truth == 0 and self.det == 0:
            f1 = None
        else:
            f1 = _f1(prec if prec is not None else 0.0, sens if sens is not None else 0.0)
        return {"scans": self.scans, "true_lesions": self.truth, "detected_true": self.truth_hit,
                "detections": self.det, "true_detections": self.det_hit,
                "false_positives": self.det - self.det_hit, "sensitivity": sens, "precision": prec,
                "sensitivity_ci95": wilson_ci95(self.truth_hit, self.truth),
                "precision_ci95": wilson_ci95(self.det_hit, self.det), "f1": f1,
                "false_positives_per_scan": _ratio(self.det - self.det_hit, self.scans)}


def _overlaps(truth: np.ndarray, result: np.ndarray):
    """Pairs (truth label, detection label) -> shared voxels."""
    both = (truth > 0) & (result > 0)
    pairs = defaultdict(int)
    if both.any():
        t, r = truth[both], result[both]
        key, cnt = np.unique(np.stack([t, r], 1), axis=0, return_counts=True)
        for (a, b), c in zip(key, cnt):
            pairs[(int(a), int(b))] += int(c)
    return pairs


def evaluate(result_dir: str | os.PathLike, truth_dir: str | os.PathLike) -> dict:
    """Score a lesioncount output folder against a phantom's truth folder.

    Parameters
    ----------
    result_dir : path
        lesioncount's output (``counts.tsv``, ``lesions.tsv``, ``subjects.tsv``, label maps).
    truth_dir : path
        The phantom's ``derivatives/truth`` folder.

    Returns
    -------
    dict
        JSON-ready figures (see the module docstring); undefined ratios are ``None``.

    Raises
    ------
    InputError
        When the truth folder lacks ``truth_counts.tsv``.
    """
    res_root, truth_root = Path(result_dir), Path(truth_dir)
    tc_path = truth_root / "truth_counts.tsv"
    if not tc_path.exists():
        raise InputError(tc_path, "truth counts missing: not a phantom truth folder")
    t_counts = read_tsv(tc_path)
    t_lesions = read_tsv(truth_root / "truth_lesions.tsv") if (truth_root / "truth_lesions.tsv").exists() else []
    t_subjects = read_tsv(truth_root / "truth_subjects.tsv") if (truth_root / "truth_subjects.tsv").exists() else []
    r_counts = {(r["subject"], r["session"]): r for r in _maybe_tsv(res_root / "counts.tsv")}
    r_lesions = {(r["subject"], r["session"], _int(r.get("lesion"))): r
                 for r in _maybe_tsv(res_root / "lesions.tsv")}
    r_subjects = {r["subject"]: r for r in _maybe_tsv(res_root / "subjects.tsv")}
    t_les_by = {(r["subject"], r["session"], _int(r["lesion"])): r for r in t_lesions}

    total = _Tally()
    splits = {"acquisition": defaultdict(_Tally), "whole_head": defaultdict(_Tally),
              "has_pre": defaultdict(_Tally)}
    sens_by = {"kind": defaultdict(lambda: [0, 0]), "size": defaultdict(lambda: [0, 0]),
               "contrast": defaultdict(lambda: [0, 0]), "site": defaultdict(lambda: [0, 0]),
               "status": defaultdict(lambda: [0, 0])}
    fp_on = defaultdict(int)
    transient = [0, 0]  # detections kept by the transient rule, of which true
    status_conf = defaultdict(lambda: defaultdict(int))
    failed, per_session = [], []
    gd_err, new_err = [], []
    ok_sessions = set()
    for tc in t_counts:
        sub, ses = tc["subject"], tc["session"]
        row = r_counts.get((sub, ses))
        reason = None
        if row is None:
            reason = "no row in counts.tsv"
        elif row.get("status") not in (None, "", "ok"):
            reason = f"status {row.get('status')}"
        res_path = _find_dseg(res_root, sub, ses, "lesions")
        truth_path = _find_dseg(truth_root, sub, ses, "truth")
        if reason is None and res_path is None:
            reason = "label map missing"
        if truth_path is None:
            raise InputError(truth_root / sub / ses, "truth label map missing")
        if reason is None:
            try:
                res_lab, res_aff = _read_labels(res_path)
                tru_lab, tru_aff = _read_labels(truth_path)
            except InputError as e:
                reason = str(e)
            else:
                if res_lab.shape != tru_lab.shape or not np.allclose(res_aff, tru_aff, atol=1e-3):
                    reason = (f"label map grid {res_lab.shape} differs from the post-contrast grid "
                              f"{tru_lab.shape}")
        if reason is not None:
            failed.append({"subject": sub, "session": ses, "reason": reason})
            continue
        ok_sessions.add((sub, ses))
        pairs = _overlaps(tru_lab, res_lab)
        t_ids = [int(v) for v in np.unique(tru_lab) if v > 0]
        d_ids = [int(v) for v in np.unique(res_lab) if v > 0]
        hit_t = {a for a, _ in pairs}
        hit_d = {b for _, b in pairs}
        tally = _Tally()
        tally.scans, tally.truth, tally.det = 1, len(t_ids), len(d_ids)
        tally.truth_hit = sum(t in hit_t for t in t_ids)
        tally.det_hit = sum(d in hit_d for d in d_ids)
        total.add(tally)
        splits["acquisition"][tc.get("acquisition", "?")].add(tally)
        splits["whole_head"][tc.get("whole_head", "?")].add(tally)
        splits["has_pre"][tc.get("has_pre", "?")].add(tally)
        for t in t_ids:
            info = t_les_by.get((sub, ses, t), {})
            hit = t in hit_t
            for name, val in (("kind", info.get("kind")), ("site", info.get("site")),
                              ("status", info.get("status")),
                              ("size", _bin(info.get("volume_mm3"), SIZE_BINS)),
                              ("contrast", _bin(info.get("contrast"), CONTRAST_BINS))):
                if val:
                    sens_by[name][val][0] += hit
                    sens_by[name][val][1] += 1
            if hit:
                best = max((c, b) for (a, b), c in pairs.items() if a == t)[1]
                r_status = (r_lesions.get((sub, ses, best)) or {}).get("status") or "?"
                status_conf[info.get("status", "?")][r_status] += 1
        for d in d_ids:  # lesions the tracking kept although the detector had set them aside
            if _bool((r_lesions.get((sub, ses, d)) or {}).get("transient")):
                transient[0] += 1
                transient[1] += d in hit_d
        unmatched = [d for d in d_ids if d not in hit_d]
        if unmatched:
            _classify_fps(truth_root, sub, ses, res_lab, unmatched, fp_on)
        g_true, g_res = _int(tc.get("gd_count")), _int(row.get("gd_count"))
        if g_res is None:
            g_res = len(d_ids)
        n_true, n_res = _int(tc.get("new_gd_count")), _int(row.get("new_gd_count"))
        gd_err.append(g_res - g_true)
        is_base = tc["session"] == _first_session(t_counts, sub)
        if not is_base and n_res is not None:
            new_err.append(n_res - n_true)
        per_session.append({"subject": sub, "session": ses, "acquisition": tc.get("acquisition"),
                            "true_gd": g_true, "gd_count": g_res, "true_new": n_true,
                            "new_gd_count": n_res, **{k: v for k, v in tally.figures().items()
                                                      if k in ("detected_true", "false_positives")}})

    subj = _subject_figures(t_counts, t_subjects, r_subjects, ok_sessions)
    n_matched = sum(sum(d.values()) for d in status_conf.values())
    n_same = sum(status_conf[s].get(s, 0) for s in status_conf)
    return {
        "sessions": {"total": len(t_counts), "evaluated": len(ok_sessions), "failed": len(failed),
                     "failed_sessions": failed},
        "lesions": total.figures(),
        "counts": {"gd_mean_abs_error": _mae(gd_err), "gd_mean_error": _mean(gd_err),
                   "gd_fraction_exact": _exact(gd_err), "new_mean_abs_error": _mae(new_err),
                   "new_mean_error": _mean(new_err), "new_fraction_exact": _exact(new_err),
                   "followup_sessions": len(new_err)},
        "subjects": subj,
        "status": {"matched": n_matched, "accuracy": _ratio(n_same, n_matched),
                   "confusion": {k: dict(v) for k, v in status_conf.items()}},
        "by_acquisition": {k: v.figures() for k, v in sorted(splits["acquisition"].items())},
        "by_whole_head": {k: v.figures() for k, v in sorted(splits["whole_head"].items())},
        "by_has_pre": {k: v.figures() for k, v in sorted(splits["has_pre"].items())},
        "sensitivity_by": {name: {k: {"detected": h, "total": n, "sensitivity": _ratio(h, n)}
                                  for k, (h, n) in sorted(d.items())}
                           for name, d in sens_by.items()},
        "false_positives_on": dict(sorted(fp_on.items())),
        "transient": {"detections": transient[0], "true": transient[1],
                      "false_positives": transient[0] - transient[1]},
        "per_session": per_session,
    }


def _maybe_tsv(path: Path) -> list[dict]:
    if not path.exists():
        log.warning("evaluation: %s missing", path)
        return []
    try:
        return read_tsv(path)
    except InputError as e:
        log.warning("evaluation: %s", e)
        return []


def _first_session(t_counts, sub):
    for r in t_counts:
        if r["subject"] == sub:
            return r["session"]
    return None


def _bin(value, bins):
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    for lo, hi, name in bins:
        if lo <= v < hi:
            return name
    return None


def _classify_fps(truth_root: Path, sub, ses, res_lab, unmatched, fp_on):
    """What each unmatched detection lies on: a normal enhancing structure, a chronic lesion,
    or nothing known ("other")."""
    mim_p = _find_dseg(truth_root, sub, ses, "mimics")
    chr_p = _find_dseg(truth_root, sub, ses, "chronic")
    mim = _read_labels(mim_p)[0] if mim_p else None
    chro = _read_labels(chr_p)[0] if chr_p else None
    for d in unmatched:
        m = res_lab == d
        where = "other"
        if mim is not None and (mim[m] > 0).any():
            vals, cnt = np.unique(mim[m][mim[m] > 0], return_counts=True)
            where = MIMIC_NAMES.get(int(vals[np.argmax(cnt)]), "mimic")
        elif chro is not None and (chro[m] > 0).any():
            where = "chronic_lesion"
        elif mim is None:
            where = "unknown (real background)"
        fp_on[where] += 1


def _subject_kind(sessions: list[dict], key: str) -> str:
    """A subject's acquisition (or whole-head flag) from its sessions' truth rows: the one
    value they share, ``mixed`` when they differ, ``?`` when the truth does not say."""
    vals = {r.get(key) or "?" for r in sessions}
    return vals.pop() if len(vals) == 1 else "mixed"


def _subject_summary(rows: list[dict]) -> dict:
    """Cumulative-new exactness and eligibility agreement over some subjects' rows."""
    cum_err = [r["cumulative_new_gd"] - r["true_cumulative_new"] for r in rows
               if r["complete"] and r["cumulative_new_gd"] is not None]
    elig = [r["eligible"] == r["true_eligible"] for r in rows
            if r["baseline_ok"] and r["eligible"] is not None]
    exact, agreeing = sum(e == 0 for e in cum_err), sum(elig)
    return {"subjects": len(rows), "complete": len(cum_err), "cumulative_exact": exact,
            "eligibility_agreeing": agreeing,
            "cumulative_mean_abs_error": _mae(cum_err), "cumulative_mean_error": _mean(cum_err),
            "cumulative_fraction_exact": _exact(cum_err),
            "cumulative_exact_ci95": wilson_ci95(exact, len(cum_err)),
            "eligibility_agreement": _ratio(agreeing, len(elig)), "eligibility_evaluated": len(elig),
            "eligibility_ci95": wilson_ci95(agreeing, len(elig))}


def _subject_figures(t_counts, t_subjects, r_subjects, ok_sessions) -> dict:
    """Per-subject figures (cumulative new count, eligibility), overall, per arm and split
    by the subject's acquisition and whole-head flag (issue 2: each figure per acquisition
    type; a phantom subject keeps one acquisition over its visits)."""
    sessions_of = defaultdict(list)
    for r in t_counts:
        sessions_of[r["subject"]].append(r)
    rows = []
    for ts in t_subjects:
        sub = ts["subject"]
        rs = r_subjects.get(sub)
        truth_rows = sessions_of.get(sub, [])
        sess = [r["session"] for r in truth_rows]
        row = {"subject": sub, "group": ts.get("group") or None,
               "acquisition": _subject_kind(truth_rows, "acquisition"),
               "whole_head": _subject_kind(truth_rows, "whole_head"),
               "complete": bool(sess) and all((sub, s) in ok_sessions for s in sess),
               "baseline_ok": bool(sess) and (sub, sess[0]) in ok_sessions,
               "true_cumulative_new": _int(ts["cumulative_new_gd"]),
               "cumulative_new_gd": None, "true_eligible": _bool(ts["eligible"]), "eligible": None}
        if rs is not None:
            row["cumulative_new_gd"] = _int(rs.get("cumulative_new_gd"))
            row["eligible"] = _bool(rs.get("eligible"))
        rows.append(row)
    splits = {}
    for key in ("acquisition", "whole_head"):
        splits[f"by_{key}"] = {k: _subject_summary([r for r in rows if r[key] == k])
                               for k in sorted({r[key] for r in rows})}
    return {**_subject_summary(rows),
            "per_subject": rows, **_arm_figures(rows), **splits}


def _arm_figures(rows: list[dict]) -> dict:
    """The endpoint per arm over complete subjects, and the ratio of two arms' means.

    Per-subject exactness is harsh on subjects with many new lesions; what the trial reads
    is each arm's mean cumulative count and their ratio, so a miss rate that is the same in
    both arms biases the means but not the ratio.
    """
    arms = {}
    for g in sorted({r["group"] for r in rows if r["group"]}):
        sel = [r for r in rows if r["group"] == g and r["complete"]
               and r["cumulative_new_gd"] is not None and r["true_cumulative_new"] is not None]
        if not sel:
            continue
        counted = sum(r["cumulative_new_gd"] for r in sel)
        true = sum(r["true_cumulative_new"] for r in sel)
        arms[g] = {"subjects": len(sel), "mean_cumulative_new": counted / len(sel),
                   "true_mean_cumulative_new": true / len(sel),
                   "fraction_counted": _ratio(counted, true)}
    ratio = None
    if len(arms) == 2:
        a, b = arms
        ratio = {"arms": [a, b],
                 "counted": _ratio(arms[a]["mean_cumulative_new"], arms[b]["mean_cumulative_new"]),
                 "true": _ratio(arms[a]["true_mean_cumulative_new"],
                                arms[b]["true_mean_cumulative_new"])}
    return {"arms": arms, "arm_ratio": ratio}


def _mae(e):
    return float(np.mean(np.abs(e))) if len(e) else None


def _mean(e):
    return float(np.mean(e)) if len(e) else None


def _exact(e):
    return float(np.mean(np.asarray(e) == 0)) if len(e) else None


def _fmt(v, pct=False):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{100 * v:.1f}%" if pct else f"{v:.3f}"
    return str(v)


def _fmt_ci(ci) -> str:
    return "" if not ci else f" (95% CI {100 * ci[0]:.0f}-{100 * ci[1]:.0f}%)"


def format_table(result: dict) -> str:
    """A readable plain-text summary of :func:`evaluate`'s result."""
    s, les, c, sub, st = (result[k] for k in ("sessions", "lesions", "counts", "subjects", "status"))
    lines = [f"Sessions: {s['evaluated']} evaluated of {s['total']}, {s['failed']} failed"]
    for f in s["failed_sessions"]:
        lines.append(f"  failed: {f['subject']} {f['session']}: {f['reason']}")
    lines.append("")
    head = f"{'lesion-wise':<22}{'scans':>6}{'true':>6}{'found':>6}{'dets':>6}{'FP':>5}" \
           f"{'sens':>8}{'prec':>8}{'F1':>8}{'FP/scan':>9}"
    lines.append(head)
    lines.append("-" * len(head))

    def row(name, f):
        return (f"{name:<22}{f['scans']:>6}{f['true_lesions']:>6}{f['detected_true']:>6}"
                f"{f['detections']:>6}{f['false_positives']:>5}{_fmt(f['sensitivity'], True):>8}"
                f"{_fmt(f['precision'], True):>8}{_fmt(f['f1']):>8}{_fmt(f['false_positives_per_scan']):>9}")

    lines.append(row("all", les))
    for key, label in (("by_acquisition", "acq"), ("by_whole_head", "whole_head"), ("by_has_pre", "has_pre")):
        for k, f in result[key].items():
            lines.append(row(f"  {label}={k}", f))
    if les.get("sensitivity_ci95") or les.get("precision_ci95"):
        lines.append(f"all: sensitivity{_fmt_ci(les.get('sensitivity_ci95')) or ' n/a'}, "
                     f"precision{_fmt_ci(les.get('precision_ci95')) or ' n/a'} (Wilson)")
    lines.append("")
    lines.append("Sensitivity by lesion property:")
    for name, d in result["sensitivity_by"].items():
        parts = [f"{k} {v['detected']}/{v['total']} ({_fmt(v['sensitivity'], True)})" for k, v in d.items()]
        if parts:
            lines.append(f"  {name:<9} " + "; ".join(parts))
    if result["false_positives_on"]:
        lines.append("False positives lie on: " + ", ".join(f"{k} {v}" for k, v in
                                                        result["false_positives_on"].items()))
    tr = result.get("transient") or {}
    if tr.get("detections"):
        lines.append(f"Kept by the transient-enhancement rule: {tr['detections']} detections, "
                     f"{tr['true']} true, {tr['false_positives']} false positives")
    lines.append("")
    lines.append(f"Gd+ count per session:   mean abs error {_fmt(c['gd_mean_abs_error'])}, "
                 f"mean error {_fmt(c['gd_mean_error'])}, exact {_fmt(c['gd_fraction_exact'], True)}")
    lines.append(f"New Gd+ per follow-up:   mean abs error {_fmt(c['new_mean_abs_error'])}, "
                 f"mean error {_fmt(c['new_mean_error'])}, exact {_fmt(c['new_fraction_exact'], True)} "
                 f"({c['followup_sessions']} follow-ups)")
    lines.append(f"Cumulative new per subject ({sub['complete']} complete of {sub['subjects']}): "
                 f"mean abs error {_fmt(sub['cumulative_mean_abs_error'])}, "
                 f"exact {_fmt(sub['cumulative_fraction_exact'], True)}"
                 f"{_fmt_ci(sub.get('cumulative_exact_ci95'))}")
    # counted / true per subject: whether the misses sit with the subjects of high lesion load
    pairs = [f"{r['subject']} {r['cumulative_new_gd']}/{r['true_cumulative_new']}"
             + ("" if r["cumulative_new_gd"] == r["true_cumulative_new"] else " *")
             for r in sub["per_subject"] if r["complete"] and r["cumulative_new_gd"] is not None]
    if pairs:
        lines.append("  counted/true (* = not exact): " + ", ".join(pairs))
    for g, a in sub.get("arms", {}).items():
        lines.append(f"  arm {g} ({a['subjects']} subjects): mean cumulative new "
                     f"{a['mean_cumulative_new']:.2f} counted, {a['true_mean_cumulative_new']:.2f} true "
                     f"({_fmt(a['fraction_counted'], True)} counted)")
    r = sub.get("arm_ratio")
    if r:
        lines.append(f"  ratio {r['arms'][0]}/{r['arms'][1]} of the means: {_fmt(r['counted'])} "
                     f"counted, {_fmt(r['true'])} true")
    lines.append(f"Eligibility agreement:   {_fmt(sub['eligibility_agreement'], True)} "
                 f"({sub['eligibility_evaluated']} subjects){_fmt_ci(sub.get('eligibility_ci95'))}")
    for key, label in (("by_acquisition", "acq"), ("by_whole_head", "whole_head")):
        for k, f in (sub.get(key) or {}).items():
            lines.append(f"  {label}={k}: cumulative new exact {f['cumulative_exact']}/"
                         f"{f['complete']}, eligibility {f['eligibility_agreeing']}/"
                         f"{f['eligibility_evaluated']} ({f['subjects']} "
                         f"subject{'' if f['subjects'] == 1 else 's'})")
    lines.append(f"Status of matched lesions: accuracy {_fmt(st['accuracy'], True)} of {st['matched']}"
                 + ("  [" + "; ".join(f"true {t}: " + ", ".join(f"{r} {n}" for r, n in d.items())
                                      for t, d in st["confusion"].items()) + "]" if st["confusion"] else ""))
    return "\n".join(lines)


def write_evaluation(result: dict, path_json: str | os.PathLike) -> Path:
    """Write :func:`evaluate`'s result as JSON (atomically)."""
    return write_json(path_json, result)
