"""Evaluate the U-Net beside the classical detector (the figures of models/README.md).

1. The two real patients, no injection: Gd+ detections per scan (target <= 1).
2. Held-out injections into the real patients (seeds >= 9000, never used in training):
   lesion-wise sensitivity, precision, F1, false positives per scan, with and without pre.
3. A held-out phantom study (``--study``, made with a seed >= 9000) run through
   ``lesioncount run --detector X`` (outputs in ``--work``): lesion-wise scores per session
   against ``derivatives/truth`` and each subject's cumulative new count against the truth.

    OMP_NUM_THREADS=1 python scripts/eval_unet.py --study /tmp/unet-eval/study --work /tmp/unet-eval
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lesioncount.config import PipelineConfig
from lesioncount.image import Image
from lesioncount.lesions import label_lesions

log = logging.getLogger("eval_unet")
DETECTORS = ("classical", "unet")


def score(pred_labels: np.ndarray, truth_labels: np.ndarray) -> dict:
    """Lesion-wise counts: a true lesion is found when any detected lesion overlaps it."""
    n_pred, n_true = int(pred_labels.max()), int(truth_labels.max())
    found = np.setdiff1d(np.unique(truth_labels[pred_labels > 0]), [0])
    hit = np.setdiff1d(np.unique(pred_labels[truth_labels > 0]), [0])
    return {"n_true": n_true, "n_pred": n_pred, "tp": len(found), "fp": n_pred - len(hit), "scans": 1}


def summarise(rows: list[dict]) -> dict:
    t = {k: sum(r[k] for r in rows) for k in ("n_true", "n_pred", "tp", "fp", "scans")}
    sens = t["tp"] / t["n_true"] if t["n_true"] else float("nan")
    prec = (t["n_pred"] - t["fp"]) / t["n_pred"] if t["n_pred"] else float("nan")
    f1 = 2 * sens * prec / (sens + prec) if (sens + prec) > 0 else 0.0
    return dict(t, sensitivity=round(sens, 3), precision=round(prec, 3), f1=round(f1, 3),
                fp_per_scan=round(t["fp"] / max(t["scans"], 1), 2))


def run_detector(name, post, pre, brain, cfg, weights: str | None = None):
    from lesioncount.config import UNetConfig
    from lesioncount.pipeline import detect

    t, c = time.perf_counter(), time.process_time()
    cfg = cfg.replace(detector="unet" if name.startswith("unet") else name)
    if weights:
        cfg = cfg.replace(unet=UNetConfig(weights=weights))
    det = detect(post, pre, brain, cfg)
    log.info("%s: %.1f s wall, %.1f s CPU", name, time.perf_counter() - t, time.process_time() - c)
    return label_lesions(det.mask, post.affine, cfg.lesion), time.perf_counter() - t


def real_patients(cfg: PipelineConfig, detectors=DETECTORS, seeds=(9100,), n_lesions: int = 16,
                  heldout: dict | None = None) -> dict:
    """``heldout`` maps a patient to weights trained without it: detector "unet-heldout"."""
    from lesioncount.brain import brain_mask
    from lesioncount.phantom.anatomy import patient_anatomy
    from lesioncount.phantom.lesions import inject_lesions

    heldout = heldout or {}
    if heldout:
        detectors = tuple(detectors) + ("unet-heldout",)
    out = {"no_injection": {}, "injected": {d: {"pre": [], "nopre": []} for d in detectors},
           "seconds": {d: [] for d in detectors}}
    for name in ("patient07", "patient19"):
        a = patient_anatomy(name, np.random.default_rng(0))
        post, pre = Image(a.post, a.affine), Image(a.pre, a.affine)
        brain = brain_mask(post, cfg.brain)
        for d in detectors:
            lab, sec = run_detector(d, post, pre, brain, cfg, heldout.get(name) if d == "unet-heldout" else None)
            out["no_injection"].setdefault(d, {})[name] = int(lab.max())
            out["seconds"][d].append(round(sec, 1))
            log.info("%s %s no injection: %d detections (%.0f s)", name, d, lab.max(), sec)
        for s in seeds:
            rng = np.random.default_rng(s)
            p2, q2, truth, _, _ = inject_lesions(post, pre, a.wm, n_lesions, rng, avoid=a.chronic,
                                              wm_level=a.wm_level_post)
            b2 = brain_mask(p2, cfg.brain)
            for d in detectors:
                for mode, q in (("pre", q2), ("nopre", None)):
                    lab, sec = run_detector(d, p2, q, b2, cfg,
                                            heldout.get(name) if d == "unet-heldout" else None)
                    r = score(lab, truth)
                    out["injected"][d][mode].append(r)
                    log.info("%s seed %d %s %s: %s (%.0f s)", name, s, d, mode, r, sec)
    out["injected_summary"] = {d: {m: summarise(v) for m, v in modes.items()}
                               for d, modes in out["injected"].items()}
    return out


def _labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A label map as stored (load_image refuses constant images, and no lesion is constant)."""
    import nibabel as nib

    img = nib.load(str(path))
    return np.asanyarray(img.dataobj).astype(np.int32), img.affine


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def phantom(study: Path, work: Path, detectors=DETECTORS, no_pre: bool = False,
            subjects: list[str] | None = None) -> dict:
    truth = study / "derivatives" / "truth"
    res = {}
    for d in detectors:
        out = work / f"run-{d}{'-nopre' if no_pre else ''}{'-' + '-'.join(subjects) if subjects else ''}"
        cmd = [sys.executable, "-m", "lesioncount.cli", "run", str(study), "--out", str(out),
               "--detector", d, "--quiet"] + (["--no-pre"] if no_pre else [])
        for s in subjects or []:
            cmd += ["--subject", s]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        sec = time.perf_counter() - t
        if p.returncode != 0:
            log.error("%s failed: %s", " ".join(cmd), p.stderr[-2000:])
            res[d] = {"error": p.stderr[-500:]}
            continue
        rows = []
        for tf in sorted(truth.glob("sub-*/ses-*/anat/*_desc-truth_dseg.nii.gz")):
            if subjects and tf.relative_to(truth).parts[0] not in subjects:
                continue
            of = out / tf.relative_to(truth).parent / tf.name.replace("desc-truth_dseg", "desc-lesions_dseg")
            if not of.exists():
                log.warning("no output for %s", tf.name)
                continue
            t_arr, t_aff = _labels(tf)
            tl = label_lesions(t_arr > 0, t_aff, PipelineConfig().lesion)
            rows.append(score(_labels(of)[0].astype(np.int32), tl))
        subj_true = {r["subject"]: r for r in _tsv(truth / "truth_subjects.tsv")
                     if not subjects or r["subject"] in subjects}
        subj_out = {r["subject"]: r for r in _tsv(out / "subjects.tsv")}
        exact = [str(subj_out.get(s, {}).get("cumulative_new_gd")) == str(r.get("cumulative_new_gd"))
                 for s, r in subj_true.items()]
        res[d] = dict(summarise(rows), cumulative_exact=f"{sum(exact)}/{len(exact)}",
                      seconds_total=round(sec, 1))
        log.info("phantom %s%s: %s", d, " no pre" if no_pre else "", res[d])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", help="held-out phantom study (lesioncount phantom OUT --seed 9001 ...)")
    ap.add_argument("--work", default="/tmp/unet-eval")
    ap.add_argument("--skip-real", action="store_true")
    ap.add_argument("--subjects", help="comma list: only these phantom subjects (run and scored)")
    ap.add_argument("--detectors", default=",".join(DETECTORS), help="comma list of classical, unet")
    ap.add_argument("--heldout", default="",
                    help="patient=weights,... : weights trained without that patient (scripts/train_unet_gpu.sh)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = PipelineConfig()
    dets = tuple(a.detectors.split(","))
    tag = "-".join(dets)
    results = {}
    if not a.skip_real:
        held = dict(kv.split("=", 1) for kv in a.heldout.split(",") if kv)
        results["real"] = real_patients(cfg, dets, heldout=held)
        (work / f"results-real-{tag}.json").write_text(json.dumps(results["real"], indent=1))
    if a.study:
        subs = a.subjects.split(",") if a.subjects else None
        results["phantom"] = phantom(Path(a.study), work, dets, subjects=subs)
        (work / f"results-phantom-{tag}{'-' + a.subjects.replace(',', '-') if a.subjects else ''}.json").write_text(json.dumps(results["phantom"], indent=1))
    print(json.dumps({k: (v if k != "real" else {kk: v[kk] for kk in ("no_injection", "injected_summary", "seconds")})
                      for k, v in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
