"""Registration benchmark: displacement error (mm) and seconds per pair against known motion.

Sources of pairs with known motion:

- ``--study DIR``: a phantom study (lesioncount.phantom.study.make_study) with its
  ``derivatives/truth/truth_motion.tsv`` (true baseline->session, post->pre and
  post->FLAIR RAS matrices). ``--make-study DIR`` writes a small one first.
- ``--synthetic``: the MNI template and the shared real patients (T1 vs T1POST, a
  different sequence) moved by known rigid motions (~5-10 degrees, ~5-10 mm), on 1 mm
  and on oblique 1x1x3 mm grids.

Error = mean distance between where the true and the estimated transforms send the voxel
centres of the fixed brain mask. Brain masks are computed with lesioncount.brain (timed
separately). Prints one line per pair and a summary; ``--json`` writes the rows.

Example::

    OMP_NUM_THREADS=1 python scripts/bench_registration.py --synthetic --threads 2
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from lesioncount.brain import brain_mask
from lesioncount.config import RegistrationConfig
from lesioncount.image import Image, resample
from lesioncount.registration import (
    displacement_error,
    register,
    rigid_transform,
    transform_from_matrix_ras,
)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "open_ms_data"


def _load(path) -> Image:
    import nibabel as nib

    n = nib.load(str(path))
    return Image(np.asarray(n.dataobj, dtype=np.float32), n.affine)


def _template() -> Image:
    import nilearn

    p = (Path(nilearn.__file__).parent / "datasets" / "data"
         / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    return _load(p)


def _rotation(dx, dy, dz) -> np.ndarray:
    ax, ay, az = np.deg2rad([dx, dy, dz])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _grid(img: Image, spacing, rotation=None) -> Image:
    aff = np.diag(list(spacing) + [1.0]).astype(float)
    if rotation is not None:
        aff[:3, :3] = rotation @ aff[:3, :3]
    ext = np.asarray(img.shape) * img.spacing
    shape = tuple(int(np.ceil(e / s)) for e, s in zip(ext, spacing))
    centre = img.world((np.asarray(img.shape) - 1) / 2)
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return Image(np.zeros(shape, np.uint8), aff)


def _moved(content: Image, true_tx, grid: Image, noise: float, seed: int) -> Image:
    m = resample(content, grid, true_tx.GetInverse())
    rng = np.random.default_rng(seed)
    return m.like(m.array + rng.normal(0, noise, m.shape).astype(np.float32))


def synthetic_pairs():
    """(name, fixed, moving, true fixed->moving transform) from the template and patients."""
    motions = [((6, -5, 8), (7, -5, 6)), ((-9, 7, -10), (-8, 9, 7))]
    tpl = _template()
    centre = tpl.world((np.asarray(tpl.shape) - 1) / 2)
    a = tpl.array
    tpl_b = tpl.like(np.where(a > 0, 40 + 255 * (a / 255.0) ** 0.5, 0).astype(np.float32))
    sources = [("mni", tpl, tpl_b, 4.0)]
    for pat in ("patient07", "patient19"):
        if (SHARED / pat / "T1POST.nii.gz").is_file():
            sources.append((pat, _load(SHARED / pat / "T1POST.nii.gz"),
                            _load(SHARED / pat / "T1.nii.gz"), 0.0))
    k = 0
    for name, fixed, other, noise in sources:
        for rot, tr in motions:
            true = rigid_transform(rot, tr, center_ras=centre)
            for gname, grid in (("1mm", fixed),
                                ("1x1x3_oblique", _grid(fixed, (1.0, 1.0, 3.0),
                                                        _rotation(8, 0, -12)))):
                sd = np.percentile(other.array[other.array > 0], 50) * 0.02 if noise == 0 else noise
                k += 1
                yield (f"{name} {gname} rot{rot} tr{tr}", fixed,
                       _moved(other, true, grid, sd, k), true)


def study_pairs(study: Path):
    """(name, fixed, moving, true transform) from a phantom study's truth_motion.tsv."""
    truth = study / "derivatives" / "truth" / "truth_motion.tsv"
    rows = list(csv.DictReader(open(truth), delimiter="\t"))
    by_sub: dict[str, list[dict]] = {}
    for r in rows:
        by_sub.setdefault(r["subject"], []).append(r)
    for sub, rs in sorted(by_sub.items()):
        base = _post_path(study, sub, sorted(_sessions(study, sub))[0])
        for r in rs:
            m = np.array([[float(r[f"m{i}{j}"]) for j in range(4)] for i in range(3)])
            post = _post_path(study, sub, r["session"])
            if r["transform"] == "baseline_post_to_post":
                if post == base:
                    continue
                fixed, moving = base, post
            elif r["transform"] in SAME_SESSION:
                fixed, moving = post, SAME_SESSION[r["transform"]](post)
                if moving is None:
                    continue
            else:
                continue
            yield (f"{sub} {r['session']} {r['transform']}", _load(fixed), _load(moving),
                   transform_from_matrix_ras(m))


def _sessions(study: Path, sub: str) -> list[str]:
    return [p.name for p in (study / sub).glob("ses-*")]


def _post_path(study: Path, sub: str, ses: str) -> Path:
    ses = ses if ses.startswith("ses-") else f"ses-{ses}"
    sub = sub if sub.startswith("sub-") else f"sub-{sub}"
    hits = sorted((study / sub / ses / "anat").glob("*ce-gadolinium*T1w.nii*"))
    if not hits:
        raise FileNotFoundError(f"no post-contrast T1w in {study / sub / ses / 'anat'}")
    return hits[0]


def _same_session(post: Path, pattern: str) -> Path | None:
    """The first other scan of post's session matching ``pattern`` (not a ce- scan)."""
    hits = sorted(p for p in post.parent.glob(pattern) if "ce-" not in p.name)
    return hits[0] if hits else None


# truth_motion.tsv transform -> the moving scan of that session's pair
SAME_SESSION = {"post_to_pre": lambda post: _same_session(post, "*_T1w.nii*"),
                "post_to_flair": lambda post: _same_session(post, "*_FLAIR.nii*")}


def run(pairs, cfg: RegistrationConfig) -> list[dict]:
    rows = []
    for name, fixed, moving, true in pairs:
        t = time.perf_counter()
        fm = brain_mask(fixed)
        mm = brain_mask(moving)
        t_brain = time.perf_counter() - t
        c0 = time.process_time()
        reg = register(fixed, moving, cfg, fixed_mask=fm, moving_mask=mm)
        cpu = time.process_time() - c0
        err = displacement_error(true, reg.transform, fixed, fm)
        row = dict(pair=name, error_mm=err, seconds=reg.seconds, cpu_seconds=cpu,
                   brain_mask_seconds=t_brain, quality=reg.quality, failed=reg.failed,
                   iterations=reg.iterations)
        rows.append(row)
        print(f"{name:55s} err {err:6.3f} mm  {reg.seconds:5.1f} s (cpu {cpu:5.1f} s)  "
              f"masks {t_brain:4.1f} s  q {reg.quality:.3f}  it {reg.iterations:3d}"
              f"{'  FAILED' if reg.failed else ''}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", type=Path, help="phantom study with derivatives/truth")
    ap.add_argument("--make-study", type=Path, help="write a small phantom study here first")
    ap.add_argument("--synthetic", action="store_true", help="template and patient pairs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="at most this many pairs per source")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--only", help="only pairs whose name contains this (e.g. post_to_flair)")
    args = ap.parse_args(argv)
    cfg = RegistrationConfig(threads=args.threads)
    rows = []
    if args.make_study:
        from lesioncount.phantom.study import make_study

        t = time.perf_counter()
        make_study(args.make_study, n_subjects=4, n_sessions=2, seed=1, overwrite=True)
        print(f"phantom study written in {time.perf_counter() - t:.0f} s", flush=True)
        args.study = args.make_study
    sources = []
    if args.study:
        sources.append(study_pairs(args.study))
    if args.synthetic or not sources:
        sources.append(synthetic_pairs())
    for src in sources:
        if args.only:
            src = (p for p in src if args.only in p[0])
        if args.limit:
            import itertools

            src = itertools.islice(src, args.limit)
        rows += run(src, cfg)
    if rows:
        e = np.array([r["error_mm"] for r in rows])
        s = np.array([r["seconds"] for r in rows])
        print(f"\n{len(rows)} pairs ({args.threads} threads, load {os.getloadavg()[0]:.1f}): "
              f"error mean {e.mean():.3f} mm, max {e.max():.3f} mm, "
              f"{(e < 0.5).mean():.0%} < 0.5 mm; seconds mean {s.mean():.1f}, max {s.max():.1f}; "
              f"failed {sum(r['failed'] for r in rows)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
