"""Measure the classical Gd+ detector on the real patients, with and without injected lesions.

Prints, per condition (patient, with/without pre, 1 mm / 3 mm slices):

- detections on the real scans as they are (no enhancing lesion is known there: every
  detection is a probable false positive; aim <= 1 per patient);
- lesion-wise sensitivity, false positives and F1 for synthetic enhancing lesions injected
  with :func:`lesioncount.phantom.inject_lesions` (nodular and ring, 3-12 mm, contrast
  0.2-1.0 x WM);
- seconds per volume.

``--crops DIR`` saves a PNG of every detection on the real scans (post, pre, enhancement)
so one can look at what fires. ``--set name=value`` overrides ClassicalConfig fields.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/tune_classical.py [--crops /tmp/crops]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
from scipy import ndimage as ndi

from lesioncount.config import ClassicalConfig, LesionConfig
from lesioncount.image import Image
from lesioncount.lesions import label_lesions
from lesioncount.phantom import inject_lesions, load_patient, white_matter_mask
from lesioncount.segmentation.classical import detect

PATIENTS = ("patient07", "patient19")


def brain_of(img: Image) -> np.ndarray:
    return ndi.binary_fill_holes(img.array > 0)


def thick_slices(img: Image, axis: int = 2, factor: int = 3, mean: bool = True) -> Image:
    """Average ``factor`` slices along ``axis`` (a 1 x 1 x 3 mm acquisition)."""
    a = img.array.astype(np.float32)
    n = a.shape[axis] // factor * factor
    a = np.take(a, np.arange(n), axis=axis)
    shp = list(a.shape)
    shp[axis:axis + 1] = [n // factor, factor]
    a = a.reshape(shp).mean(axis=axis + 1)
    aff = img.affine.copy()
    aff[:3, 3] = aff[:3, 3] + aff[:3, axis] * (factor - 1) / 2.0
    aff[:3, axis] *= factor
    return Image(a, aff)


def reorient(img: Image, perm=(2, 0, 1), flip=(0,)) -> Image:
    """Same world, other array order: permute and flip axes, fixing the affine."""
    a = np.transpose(img.array, perm)
    aff = img.affine.copy()
    aff[:, :3] = aff[:, list(perm)]
    for ax in flip:
        n = a.shape[ax]
        a = np.flip(a, ax)
        aff[:3, 3] = aff[:3, 3] + aff[:3, ax] * (n - 1)
        aff[:3, ax] *= -1
    return Image(np.ascontiguousarray(a), aff)


def match(det_mask: np.ndarray, truth: np.ndarray, affine, lcfg: LesionConfig):
    """Lesion-wise TP (truth lesions hit), FN, FP (detections touching no truth)."""
    dl = label_lesions(det_mask, affine, lcfg)
    nt = int(truth.max())
    hit = np.unique(truth[(dl > 0) & (truth > 0)])
    tp = int(hit.size)
    nd = int(dl.max())
    fp_labels = set(range(1, nd + 1)) - set(np.unique(dl[(truth > 0) & (dl > 0)]).tolist())
    return tp, nt - tp, len(fp_labels), dl, fp_labels


def save_crops(outdir, tag, post: Image, pre: Image | None, det, half_mm=20.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    lab = label_lesions(det.mask, post.affine)
    cands = {c["label"]: c for c in det.info["candidates"]}
    for k in range(1, int(lab.max()) + 1):
        ijk = np.argwhere(lab == k).mean(axis=0).round().astype(int)
        sp = post.spacing
        h = np.ceil(half_mm / sp).astype(int)
        lo = np.maximum(ijk - h, 0)
        hi = np.minimum(ijk + h + 1, post.shape)
        # the axial-like plane: the two array axes with the smallest spacing
        ax = int(np.argmax(sp)) if sp.max() > sp.min() * 1.5 else 2
        sl = [slice(a, b) for a, b in zip(lo, hi)]
        sl[ax] = ijk[ax]
        sl = tuple(sl)
        ims = [("post", post.array[sl]), ("enh z", det.enhancement[sl])]
        if pre is not None:
            ims.insert(1, ("pre", pre.array[sl]))
        fig, axs = plt.subplots(1, len(ims), figsize=(3 * len(ims), 3.2))
        for a, (name, im) in zip(axs, ims):
            a.imshow(im.T, origin="lower", cmap="gray" if name != "enh z" else "magma",
                     vmin=None if name != "enh z" else -3, vmax=None if name != "enh z" else 10)
            a.contour(lab[sl].T == k, [0.5], colors="c", linewidths=0.6)
            a.set_title(name, fontsize=8)
            a.axis("off")
        c = [v for v in det.info["candidates"] if v["reason"] is None]
        feat = min(c, key=lambda v: np.linalg.norm(np.asarray(v["centroid_ijk"]) - ijk)) if c else {}
        fig.suptitle(f"{tag} #{k} ijk={tuple(ijk)} " + " ".join(
            f"{n[:5]}={feat.get(n, 0):.2f}" for n in ("volume_mm3", "elongation", "thickness",
                                                     "flatness", "surface_fraction",
                                                     "csf_fraction", "max_z")), fontsize=7)
        fig.savefig(os.path.join(outdir, f"{tag}_{k:02d}.png"), dpi=90)
        plt.close(fig)
    del cands


def conditions(name: str, thick: bool):
    p = load_patient(name)
    post, pre = p["T1POST"], p["T1"]
    chronic = p["lesions"].array > 0
    if thick:
        post, pre = thick_slices(post), thick_slices(pre)
        chronic = thick_slices(Image(chronic.astype(np.float32), p["T1"].affine)).array > 0.3
        # and a non-identity orientation: slices along the first array axis, one axis flipped
        post, pre = reorient(post), reorient(pre)
        chronic = reorient(Image(chronic, post.affine)).array
    brain = brain_of(post) & brain_of(pre)
    return post, pre, brain, chronic


def phantom_eval(folder: str, cfg: ClassicalConfig, lcfg: LesionConfig, n_subjects: int,
                 n_sessions: int, seed: int, every: int = 1) -> list[dict]:
    """Lesion-wise TP/FN/FP on a phantom study (made with make_study if the folder is new)."""
    from pathlib import Path

    from lesioncount.brain import brain_mask
    from lesioncount.image import resample
    from lesioncount.io import load_image
    from lesioncount.phantom import make_study
    from lesioncount.registration import register

    root = Path(folder)
    if not (root / "derivatives" / "truth").exists():
        t0 = time.perf_counter()
        make_study(root, n_subjects=n_subjects, n_sessions=n_sessions, seed=seed,
                   overwrite=True)
        print(f"made phantom study in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    truth_root = root / "derivatives" / "truth"
    posts = sorted(root.glob("sub-*/ses-*/anat/*_ce-gadolinium_T1w.nii*"))
    for post_path in posts[every - 1::every]:
        stem = post_path.name.split("_ce-gadolinium")[0]
        tpath = next((truth_root / post_path.parent.relative_to(root)).glob(
            f"{stem}_ce-gadolinium_desc-truth_dseg.nii*"))
        pre_paths = [p for p in post_path.parent.glob(f"{stem}_T1w.nii*")]
        post = load_image(post_path)
        import nibabel as nib

        # (not load_image: a truth map without lesions is constant, which it refuses)
        truth = np.asarray(nib.load(str(tpath)).dataobj).round().astype(np.int32)
        bpost = brain_mask(post)
        acq = "3mm" if post.spacing.max() > 2 else "1mm"
        pre = None
        if pre_paths:
            pre0 = load_image(pre_paths[0])
            reg = register(post, pre0, fixed_mask=bpost, moving_mask=brain_mask(pre0))
            pre = resample(pre0, post, reg.transform)
        for use_pre in ((True, False) if pre is not None else (False,)):
            t0 = time.perf_counter()
            det = detect(post, pre if use_pre else None, bpost, cfg, lcfg)
            secs = time.perf_counter() - t0
            tp, fn, fp, _, _ = match(det.mask, truth, post.affine, lcfg)
            rows.append(dict(scan=post_path.name, acq=acq, pre=use_pre, tp=tp, fn=fn, fp=fp,
                             secs=secs))
            print(f"{post_path.name:60s} {acq} pre={use_pre!s:5s} truth={tp + fn} tp={tp} "
                  f"fn={fn} fp={fp} {secs:.1f} s", flush=True)
    return rows


def summarise_phantom(rows: list[dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(rows)
    for (acq, pre), g in df.groupby(["acq", "pre"]):
        tp, fn, fp = g.tp.sum(), g.fn.sum(), g.fp.sum()
        sens = tp / max(tp + fn, 1)
        prec = tp / max(tp + fp, 1)
        f1 = 2 * sens * prec / max(sens + prec, 1e-9)
        print(f"phantom {acq} pre={pre!s:5s}: scans={len(g)} lesions={tp + fn} sens={sens:.3f} "
              f"FP/scan={fp / len(g):.2f} F1={f1:.3f} s/volume={g.secs.mean():.1f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", default=None, help="folder for PNG crops of real-scan detections")
    ap.add_argument("--patients", nargs="*", default=list(PATIENTS))
    ap.add_argument("--n-inject", type=int, default=12, help="lesions injected per scan")
    ap.add_argument("--repeats", type=int, default=2, help="injection draws per condition")
    ap.add_argument("--contrast", type=float, nargs=2, default=(0.2, 1.0))
    ap.add_argument("--diameter", type=float, nargs=2, default=(3.0, 12.0))
    ap.add_argument("--only", default="", help="e.g. '1mm' or '3mm' to run one resolution")
    ap.add_argument("--set", action="append", default=[], help="ClassicalConfig field=value")
    ap.add_argument("--phantom", default=None,
                    help="phantom study folder (made with make_study when new); skips patients")
    ap.add_argument("--phantom-subjects", type=int, default=4)
    ap.add_argument("--phantom-sessions", type=int, default=2)
    ap.add_argument("--phantom-seed", type=int, default=0)
    ap.add_argument("--phantom-every", type=int, default=1, help="evaluate every n-th scan")
    args = ap.parse_args(argv)
    kw = {}
    for s in args.set:
        k, v = s.split("=")
        kw[k] = type(getattr(ClassicalConfig(), k))(v)
    cfg = ClassicalConfig(**kw)
    lcfg = LesionConfig()
    if args.phantom:
        summarise_phantom(phantom_eval(args.phantom, cfg, lcfg, args.phantom_subjects,
                                       args.phantom_sessions, args.phantom_seed,
                                       args.phantom_every))
        return 0
    rows = []
    for name in args.patients:
        for thick in (False, True):
            res = "3mm" if thick else "1mm"
            if args.only and args.only != res:
                continue
            post, pre0, brain, chronic = conditions(name, thick)
            wm = white_matter_mask(pre0.array, brain, post.spacing, exclude=chronic)
            for use_pre in (True, False):
                pre = pre0 if use_pre else None
                tag = f"{name}_{res}_{'pre' if use_pre else 'nopre'}"
                t0 = time.perf_counter()
                det = detect(post, pre, brain, cfg, lcfg)
                secs = time.perf_counter() - t0
                nreal = int(label_lesions(det.mask, post.affine, lcfg).max())
                on_chronic = int(np.unique(label_lesions(det.mask, post.affine, lcfg)[chronic]).size - 1) \
                    if (det.mask & chronic).any() else 0
                if args.crops:
                    save_crops(args.crops, tag, post, pre, det)
                tp = fn = fp = 0
                for r in range(args.repeats):
                    rng = np.random.default_rng(1000 * r + (7 if name == "patient07" else 19))
                    ipost, ipre, truth, _, _ = inject_lesions(
                        post, pre0, wm, args.n_inject, rng, contrast=tuple(args.contrast),
                        diameter_mm=tuple(args.diameter), avoid=chronic)
                    d2 = detect(ipost, ipre if use_pre else None, brain, cfg, lcfg)
                    # false positives are counted beyond what fired on the real scan already
                    base = label_lesions(det.mask, post.affine, lcfg) > 0
                    a, b, c, dl, fpl = match(d2.mask, truth, post.affine, lcfg)
                    c = sum(1 for k in fpl if not (base & (dl == k)).any())
                    tp, fn, fp = tp + a, fn + b, fp + c
                sens = tp / max(tp + fn, 1)
                prec = tp / max(tp + fp, 1)
                f1 = 2 * prec * sens / max(prec + sens, 1e-9)
                rej = det.info["rejected"]
                rows.append(dict(tag=tag, real=nreal, chronic=on_chronic, sens=sens, tp=tp, fn=fn,
                                 fp_per_scan=(fp / args.repeats), f1=f1, secs=secs))
                print(f"{tag:28s} real-scan detections={nreal} (on chronic lesions {on_chronic}) "
                      f"cands={det.info['n_candidates']} rejected={rej} | injected: sens={sens:.3f} "
                      f"({tp}/{tp + fn}) new FP/scan={fp / args.repeats:.2f} F1={f1:.3f} | "
                      f"{secs:.1f} s", flush=True)
    if rows:
        print("\nsummary: mean real-scan detections per condition "
              f"{np.mean([r['real'] for r in rows]):.2f}, mean sensitivity "
              f"{np.mean([r['sens'] for r in rows]):.3f}, mean s/volume "
              f"{np.mean([r['secs'] for r in rows]):.1f}")
        print("config:", dataclasses.asdict(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
