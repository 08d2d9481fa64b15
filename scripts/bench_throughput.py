"""Throughput of batch runs: sessions per minute and peak memory per worker.

Measures, on phantom studies made from the MNI152 template (``tests/tiny_study.py``:
known voxel size, any number of subjects and visits):

1. sessions per minute and peak resident memory per worker for the serial run and for
   local Dask clusters of 1 and 2 worker processes (same study, every session redone);
2. how the time grows with the number of sessions (2 workers);
3. how the time per session grows with the voxel count (4, 3, 2 and 1 mm grids);
4. projections for a 30-patient 7-visit trial and a 1,000-patient 7-visit trial on a
   cluster, from the measured 1 mm time per session.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_throughput.py --out bench-throughput

Writes ``bench-throughput/throughput.json`` and prints a table. On a shared machine the
load average is recorded beside the figures: other work inflates them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _cfg(step: int):
    from lesioncount.config import PipelineConfig

    cfg = PipelineConfig()
    if step <= 1:
        return cfg
    # what a coarse grid breaks (as in tests/test_distributed.py): the 2 mm CSF shell and a
    # tracking grid finer than the data
    return cfg.replace(
        classical=dataclasses.replace(cfg.classical, max_csf_fraction=1.01),
        tracking=dataclasses.replace(cfg.tracking, grid_spacing_mm=float(step)))


def _study(work: Path, subjects: int, sessions: int, step: int) -> Path:
    from tiny_study import tiny_study

    d = work / f"study-{subjects}x{sessions}-{step}mm"
    if not d.exists():
        tiny_study(d, n_subjects=subjects, n_sessions=sessions, step_mm=step, seed=11)
    return d


def _voxels(study: Path) -> int:
    import nibabel as nib
    import numpy as np

    f = next(study.rglob("*_ce-gadolinium_T1w.nii.gz"))
    return int(np.prod(nib.load(str(f)).shape[:3]))


def _serial(study: Path, out: Path, step: int) -> dict:
    from lesioncount.pipeline import run_study

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    res = run_study(study, out, _cfg(step), force=True, progress=False)
    wall = time.perf_counter() - t0
    n = len(res.counts) + sum(1 for e in res.errors if e["level"] == "error")
    return {"engine": "serial", "workers": 1, "sessions": n, "wall_s": round(wall, 2),
            "sessions_per_min": round(60 * n / wall, 2), "failed": res.n_failed}


def _dask(study: Path, out: Path, step: int, workers: int) -> dict:
    from lesioncount.distributed import open_client, run_study_dask

    shutil.rmtree(out, ignore_errors=True)
    t_start = time.perf_counter()
    with open_client(workers=workers) as client:
        t_up = time.perf_counter() - t_start
        t0 = time.perf_counter()
        res = run_study_dask(study, out, _cfg(step), force=True, progress=False, client=client)
        wall = time.perf_counter() - t0
    stats = res.task_stats
    peak = {}
    for s in stats:
        peak[s["pid"]] = max(peak.get(s["pid"], 0.0), s["peak_rss_mb"])
    sess = [s["seconds"] for s in stats if s["task"] == "session"]
    n = len(sess)
    return {"engine": "dask", "workers": workers, "sessions": n, "wall_s": round(wall, 2),
            "cluster_start_s": round(t_up, 2), "sessions_per_min": round(60 * n / wall, 2),
            "mean_session_s": round(sum(sess) / max(1, n), 2),
            "peak_rss_mb_per_worker": sorted(round(v) for v in peak.values()),
            "failed": res.n_failed}


def _one_session_time(study: Path, out: Path, step: int) -> dict:
    """Seconds and peak memory of a baseline, a follow-up and their tracking, in a fresh process."""
    import subprocess

    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from bench_throughput import _cfg
from lesioncount.dataset import discover
from lesioncount.pipeline import process_session, track_task
subj = discover({str(study)!r}).subjects[0]
cfg, out, t, sides = _cfg({step}), {str(out)!r}, [], {{}}
for ses in subj.sessions[:2]:
    t0 = time.perf_counter()
    sides[ses.session] = process_session(ses, subj.baseline, cfg, out, force=True, threads=1)
    t.append(time.perf_counter() - t0)
t0 = time.perf_counter()
res, rows = track_task(subj, sides, cfg, out)
assert not rows, rows
print(json.dumps({{"baseline_s": t[0], "followup_s": t[1],
                  "followup_parts": sides[subj.sessions[1].session]["seconds"],
                  "track_2_sessions_s": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="bench-throughput")
    ap.add_argument("--step", type=int, default=3, help="grid (mm) of the throughput study")
    ap.add_argument("--subjects", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--voxel-steps", default="4,3,2,1", help="grids (mm) for the voxel scaling")
    ap.add_argument("--session-counts", default="2,4,8",
                    help="visits of a 2-subject study for the session scaling (2 workers)")
    ap.add_argument("--only", choices=["throughput", "sessions", "voxels"],
                    help="run one part only")
    ap.add_argument("--cluster-workers", type=int, default=100,
                    help="worker processes assumed for the 1,000-patient projection")
    args = ap.parse_args(argv)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    report = {"cpus": os.cpu_count(), "load_average_start": os.getloadavg()}

    want = {args.only} if args.only else {"throughput", "sessions", "voxels"}
    if "throughput" in want:  # 1. serial vs 1 vs 2 workers
        st = _study(work, args.subjects, args.sessions, args.step)
        report["study"] = {"subjects": args.subjects, "sessions": args.sessions,
                           "grid_mm": args.step, "voxels": _voxels(st)}
        runs = [_serial(st, work / "out-serial", args.step)]
        for w in (1, 2):
            runs.append(_dask(st, work / f"out-dask{w}", args.step, w))
        report["throughput"] = runs
        print(f"\nThroughput ({args.subjects} x {args.sessions} sessions, {args.step} mm grid, "
              f"{report['study']['voxels']} voxels; load {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} cores)")
        print(f"{'engine':<8}{'workers':>8}{'wall s':>9}{'sess/min':>10}{'peak MB/worker':>18}")
        for r in runs:
            print(f"{r['engine']:<8}{r['workers']:>8}{r['wall_s']:>9}{r['sessions_per_min']:>10}"
                  f"{str(r.get('peak_rss_mb_per_worker', '-')):>18}")

    if "sessions" in want:  # 2. time vs number of sessions (2 workers, 4 mm grid)
        scale_s = []
        for n in (int(x) for x in args.session_counts.split(",") if x):
            st = _study(work, 2, n, 4)
            r = _dask(st, work / f"out-n{n}", 4, 2)
            scale_s.append({"sessions": r["sessions"], "wall_s": r["wall_s"],
                            "sessions_per_min": r["sessions_per_min"]})
            print(f"sessions {r['sessions']:>3}: {r['wall_s']:>7} s  "
                  f"({r['sessions_per_min']} / min)")
        report["sessions_scaling"] = scale_s

    scale_v = []
    if "voxels" in want:  # 3. time per session vs voxel count (one process, one thread)
        for step in (int(x) for x in args.voxel_steps.split(",") if x):
            st = _study(work, 1, 2, step)
            r = _one_session_time(st, work / f"out-v{step}", step)
            r.update(grid_mm=step, voxels=_voxels(st))
            scale_v.append(r)
            print(f"grid {step} mm ({r['voxels']:>9} voxels): baseline {r['baseline_s']:.1f} s, "
                  f"follow-up {r['followup_s']:.1f} s, tracking 2 visits "
                  f"{r['track_2_sessions_s']:.1f} s, peak {r['peak_rss_mb']:.0f} MB")
        report["voxel_scaling"] = scale_v

    # 4. projections from the 1 mm follow-up time (the realistic grid)
    full = next((v for v in scale_v if v["grid_mm"] == 1), scale_v[-1] if scale_v else None)
    if full:
        # a follow-up's processing plus its share of the subject's tracking (measured on 2
        # visits; tracking resamples every visit, so it grows about linearly with visits)
        per = full["followup_s"] + full["track_2_sessions_s"] / 2
        cores = os.cpu_count() or 1
        proj = {
            "seconds_per_session_1mm": round(per, 1),
            "trial_30x7": {"sessions": 210, "workers": cores,
                           "hours": round(210 * per / cores / 3600, 2)},
            "trial_1000x7": {"sessions": 7000, "workers": args.cluster_workers,
                             "hours": round(7000 * per / args.cluster_workers / 3600, 2),
                             "hours_on_this_machine": round(7000 * per / cores / 3600, 1)},
        }
        report["projection"] = proj
        print(f"\nProjection at {per:.1f} s per 1 mm session (one core each): 30 x 7 = 210 sessions "
              f"on {cores} cores: {proj['trial_30x7']['hours']} h; 1,000 x 7 = 7,000 sessions on "
              f"{args.cluster_workers} workers: {proj['trial_1000x7']['hours']} h "
              f"({proj['trial_1000x7']['hours_on_this_machine']} h on this machine)")
    report["load_average_end"] = os.getloadavg()
    (work / "throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {work / 'throughput.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
