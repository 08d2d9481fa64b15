"""Brain-mask accuracy on the phantom's whole heads as its scanner acquires them.

For each seed: the MNI template wrapped in the phantom's whole head (CSF, dura, skull
tables, marrow, scalp, neck), a head-shape affine and head motion, a 1 mm or oblique
1x1x3 mm grid in a random orientation, bias field, gain and Rician noise (the same
functions as ``lesioncount phantom``). The truth is the template's brain acquired the
same way. Prints Dice and volumes per scan and a summary per acquisition and contrast.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_brain.py [--seeds 6] [--set neck_open_mm=0]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from lesioncount.brain import brain_mask
from lesioncount.config import BrainConfig
from lesioncount.image import Image
from lesioncount.phantom import acquisition as acq
from lesioncount.phantom import anatomy, study


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a BrainConfig field")
    args = ap.parse_args()
    types = {f.name: f.type for f in dataclasses.fields(BrainConfig)}
    over = {k: float(v) if types[k] in (float, "float") else v
            for k, v in (s.split("=", 1) for s in args.set)}
    cfg = BrainConfig(**over)
    results: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        rng = np.random.default_rng(100 + seed)
        an = anatomy.template_anatomy(rng, whole_head=True, step_mm=1)
        centre, fov = study.head_frame(an)
        for thick in (True, False):
            m = (acq.random_rigid(rng, study.MAX_MOTION_DEG, study.MAX_MOTION_MM, centre)
                 @ acq.random_affine(rng, centre))
            orient = str(rng.choice(acq.ORIENTATIONS_2D if thick else acq.ORIENTATIONS_3D))
            grid = acq.scanner_grid(centre, fov, np.array([1.0, 1.0, 3.0 if thick else 1.0]), orient)
            ax = acq.slice_axis(grid) if thick else None
            th = 3 if thick else 1
            field = acq.bias_field(rng, grid.shape)
            truth = acq.acquire(Image(an.brain.astype(np.float32), an.affine), m, grid,
                                thick_axis=ax, thickness=th) > 0.5
            for post in (True, False):
                arr = acq.acquire(Image(an.post if post else an.pre, an.affine), m, grid,
                                  thick_axis=ax, thickness=th)
                gain = float(rng.uniform(500, 1500))
                snr = float(rng.uniform(*study.SNR_RANGE))
                level = an.wm_level_post if post else an.wm_level_pre
                img = Image(study._finish(rng, arr, field, gain, level * gain / snr), grid.affine)
                t0 = time.perf_counter()
                mask = brain_mask(img, cfg)
                secs = time.perf_counter() - t0
                d = dice(mask, truth)
                key = f"{'1x1x3 mm' if thick else '1 mm'} {'post' if post else 'pre'}"
                results.setdefault(key, []).append(d)
                print(f"seed {seed} {key:13s} {orient}: Dice {d:.3f}, volume "
                      f"{mask.sum() * img.voxel_volume / 1e6:.2f} L (truth "
                      f"{truth.sum() * img.voxel_volume / 1e6:.2f} L), {secs:.1f} s", flush=True)
    print("\nsummary (Dice)")
    for key, v in sorted(results.items()):
        print(f"  {key:13s} n={len(v)} mean {np.mean(v):.3f} min {np.min(v):.3f}")
    allv = [x for v in results.values() for x in v]
    print(f"  {'all':13s} n={len(allv)} mean {np.mean(allv):.3f} min {np.min(allv):.3f}")


if __name__ == "__main__":
    main()
