"""The ``lesioncount`` command: a thin shell over the library.

Subcommands: ``run``, ``demo``, ``phantom``, ``evaluate`` (and, when their parts
are installed, ``review``, ``reviewed``, ``report``, ``train``). Heavy imports
happen inside each command. Exit codes: 0 success, 1 some sessions failed (see
``errors.tsv``), 2 usage or input error.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .config import DETECTORS

log = logging.getLogger("lesioncount")


def _setup_logging(out: Path | None, quiet: bool) -> None:
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING if quiet else logging.INFO)
    console.setFormatter(logging.Formatter("%(message)s"))
    # Dask's own start-up chatter (scheduler, nannies, connections) is INFO on loggers of
    # its own: on the console only lesioncount's INFO and everyone's warnings; the log
    # file keeps all of it
    console.addFilter(lambda r: r.name.split(".")[0] == "lesioncount" or r.levelno >= logging.WARNING)
    root.addHandler(console)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(out / "lesioncount.log")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


def _config(args) -> "PipelineConfig":  # noqa: F821
    from .config import PipelineConfig

    cfg = PipelineConfig()
    if getattr(args, "config", None):
        cfg = PipelineConfig.from_dict(json.loads(Path(args.config).read_text()))
    changes = {}
    if getattr(args, "detector", None):
        changes["detector"] = args.detector
    if getattr(args, "no_pre", False):
        changes["use_pre"] = False
    if getattr(args, "no_flair", False):
        changes["use_flair"] = False
    if getattr(args, "convention", None):
        import dataclasses
        changes["tracking"] = dataclasses.replace(cfg.tracking, convention=args.convention)
    return cfg.replace(**changes) if changes else cfg


def _print_endpoint(result) -> None:
    print("\nPer-subject endpoint (cumulative new Gd+ lesions after baseline)")
    print(f"{'subject':<10} {'group':<9} {'sessions':>8} {'baseline Gd+':>12} {'eligible':>8} "
          f"{'cum. new Gd+':>12}  note")
    for r in result.subjects:
        note = "" if r.get("complete") else f"failed: {r.get('failed_sessions') or 'tracking'}"
        def show(v):
            return "n/a" if v is None else str(v)
        elig = r.get("eligible")
        print(f"{r['subject']:<10} {show(r.get('group')):<9} {show(r.get('sessions')):>8} "
              f"{show(r.get('baseline_gd_count')):>12} "
              f"{('yes' if elig else 'no') if elig is not None else 'n/a':>8} "
              f"{show(r.get('cumulative_new_gd')):>12}  {note}")


def _run_engine(dataset, out: Path, cfg, args, subjects=None):
    """Dask (a local cluster sized to the machine, or ``--scheduler``) unless ``--workers 0``."""
    workers = getattr(args, "workers", None)
    scheduler = getattr(args, "scheduler", None)
    use_dask = scheduler is not None or workers != 0
    if use_dask:
        try:
            import distributed  # noqa: F401
        except ImportError:
            if scheduler is not None:
                raise
            log.warning("dask.distributed is not installed: running serially")
            use_dask = False
    if use_dask:
        from .distributed import run_study_dask
        return run_study_dask(dataset, out, cfg, force=args.force, progress=not args.quiet,
                              scheduler=scheduler, workers=workers or None, subjects=subjects)
    from .pipeline import run_study
    return run_study(dataset, out, cfg, force=args.force, progress=not args.quiet,
                     subjects=subjects)


def cmd_run(args) -> int:
    out = Path(args.out)
    _setup_logging(out, args.quiet)
    cfg = _config(args)
    t0 = time.perf_counter()
    result = _run_engine(args.dataset, out, cfg, args, subjects=args.subject)
    if not args.quiet:
        _print_endpoint(result)
        print(f"\n{len(result.counts)} sessions counted in {time.perf_counter() - t0:.0f} s; "
              f"outputs in {out}")
    if result.n_failed:
        print(f"{result.n_failed} problem(s) recorded in {out / 'errors.tsv'}", file=sys.stderr)
        for e in result.errors:
            if e.get("level") == "error":
                print(f"  {e['subject']} {e['session']}: {e['file']}: {e['reason']}", file=sys.stderr)
        return 1
    return 0


def cmd_phantom(args) -> int:
    from .phantom import make_study

    backgrounds = tuple(args.background.split(","))
    path = make_study(args.out, n_subjects=args.subjects, n_sessions=args.sessions, seed=args.seed,
                      backgrounds=backgrounds, whole_head_fraction=args.whole_head,
                      thick_slice_fraction=args.thick_slices, with_pre=not args.no_pre,
                      with_flair=not args.no_flair, overwrite=args.force)
    print(f"phantom study written to {path}; truth in {Path(path) / 'derivatives' / 'truth'}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation import evaluate, format_table, write_evaluation

    result = evaluate(args.out, args.truth)
    print(format_table(result))
    dest = Path(args.json) if args.json else Path(args.out) / "evaluation.json"
    write_evaluation(result, dest)
    print(f"\nevaluation written to {dest}")
    return 0


def cmd_train(args) -> int:
    import logging

    from .training import TrainOptions, train

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    opts = TrainOptions(seed=args.seed, steps=args.steps, batch=args.batch, patch=args.patch, lr=args.lr,
                        threads=args.threads, workers=args.workers, val_every=args.val_every,
                        ema=args.ema, templates=args.templates,
                        patient_repeats=args.patient_repeats, exclude=tuple(args.exclude),
                        template_chronic=args.template_chronic)
    hist = train(args.out, data_dir=args.data, cache_dir=args.cache, init=args.init, options=opts,
                 device=args.device)
    print(f"weights written to {args.out} (best validation F1 {hist['best_val_f1']:.3f} at step "
          f"{hist['best_step']}, {hist['seconds']:.0f} s)")
    return 0


def cmd_demo(args) -> int:
    from .evaluation import evaluate, format_table, write_evaluation
    from .phantom import make_study

    work = Path(args.out)
    study_dir = work / "study"
    out = work / "derivatives"
    _setup_logging(out, args.quiet)
    t0 = time.perf_counter()
    if not (study_dir / "dataset_description.json").exists() or args.force:
        print(f"Making a phantom study ({args.subjects} subjects x {args.sessions} visits, "
              f"seed {args.seed}) in {study_dir} ...")
        make_study(study_dir, n_subjects=args.subjects, n_sessions=args.sessions, seed=args.seed,
                   backgrounds=("mni", "patients"), whole_head_fraction=0.5,
                   thick_slice_fraction=0.5, with_pre=True, overwrite=True)
    print(f"Running lesioncount on it ({time.perf_counter() - t0:.0f} s so far) ...")
    result = _run_engine(study_dir, out, _config(args), args)
    _print_endpoint(result)
    ev = evaluate(out, study_dir / "derivatives" / "truth")
    print("\nAgainst the phantom's truth:")
    print(format_table(ev))
    write_evaluation(ev, out / "evaluation.json")
    print(f"\nDone in {time.perf_counter() - t0:.0f} s. Outputs: {out}  (counts.tsv, lesions.tsv, "
          f"subjects.tsv, evaluation.json)")
    return 1 if result.n_failed else 0


def cmd_review(args) -> int:
    from .napari import launch

    return launch(args.out, subject=args.subject, reader=args.reader)


def cmd_reviewed(args) -> int:
    from .review import review_study

    res = review_study(args.out, args.reader)
    print(f"{res.n_decisions} decisions of {', '.join(res.readers)} applied")
    for p in res.written:
        print(f"written: {p}")
    if res.disagreements is not None:
        print(f"{len(res.disagreements)} disagreement(s) between {res.readers[0]} and "
              f"{res.readers[1]} to adjudicate")
    if res.unmatched:
        print(f"{len(res.unmatched)} decision(s) no longer match a lesion (see the log)",
              file=sys.stderr)
    return 0


def cmd_report(args) -> int:
    from .report import write_report

    _setup_logging(None, quiet=False)
    dest = write_report(args.out, args.dest, use_reviewed=not args.automatic)
    print(f"report written to {dest}")
    return 0


def _optional(name: str, func: str):
    def run(args):
        import importlib
        mod = importlib.import_module(f"lesioncount.{name}")
        return getattr(mod, func)(args)
    return run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lesioncount",
        description="Count new gadolinium-enhancing MS lesions across visits "
                    "(research software, not a medical device).")
    p.add_argument("--version", action="version", version=f"lesioncount {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def pipeline_opts(q):
        q.add_argument("--detector", choices=DETECTORS,
                       help="default: classical; both = classical lesions the U-Net agrees with; "
                            "union = classical lesions plus the U-Net's large ones it missed")
        q.add_argument("--no-pre", action="store_true",
                       help="ignore pre-contrast scans (detect from post-contrast alone)")
        q.add_argument("--no-flair", action="store_true",
                       help="ignore FLAIR scans (the classical detector then uses T1 alone)")
        q.add_argument("--convention", choices=["previous", "any_earlier"],
                       help="what 'new' means (default: overlaps no lesion of the previous visit)")
        q.add_argument("--config", help="JSON file of PipelineConfig fields")
        q.add_argument("--force", action="store_true", help="redo sessions even if unchanged")
        q.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
        q.add_argument("--workers", type=int,
                       help="local Dask worker processes (default: one per core; 0: run serially "
                            "in this process)")
        q.add_argument("--scheduler", help="address of an existing Dask scheduler "
                                           "(e.g. one started by dask-jobqueue on SLURM)")

    q = sub.add_parser("run", help="count lesions in a BIDS dataset or manifest")
    q.add_argument("dataset", help="BIDS folder or a .tsv manifest")
    q.add_argument("--out", required=True, help="output folder (BIDS derivatives)")
    q.add_argument("--subject", action="append", help="only this subject (repeatable)")
    pipeline_opts(q)
    q.set_defaults(func=cmd_run)

    q = sub.add_parser("demo", help="make a small phantom study, count it, score it")
    q.add_argument("--out", default="demo-out", help="working folder (default: ./demo-out)")
    q.add_argument("--subjects", type=int, default=3)
    q.add_argument("--sessions", type=int, default=5,
                   help="monthly visits per subject (default 5: at least 4 let the "
                        "stable-enhancement rule tell veins from lesions; the trial has 7)")
    q.add_argument("--seed", type=int, default=1)
    pipeline_opts(q)
    q.set_defaults(func=cmd_demo)

    q = sub.add_parser("phantom", help="write a longitudinal phantom BIDS study with its truth")
    q.add_argument("out")
    q.add_argument("--subjects", type=int, default=8)
    q.add_argument("--sessions", type=int, default=7)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--background", default="mni,patients",
                   help="comma list of mni, patients (the two shared real patients)")
    q.add_argument("--whole-head", type=float, default=0.5, help="fraction of whole-head subjects")
    q.add_argument("--thick-slices", type=float, default=0.5,
                   help="fraction of subjects scanned with 3 mm slices")
    q.add_argument("--no-pre", action="store_true", help="no pre-contrast scans")
    q.add_argument("--no-flair", action="store_true", help="no FLAIR scans")
    q.add_argument("--force", action="store_true", help="replace OUT if it already holds files")
    q.set_defaults(func=cmd_phantom)

    q = sub.add_parser("evaluate", help="score an output folder against a phantom's truth")
    q.add_argument("out")
    q.add_argument("truth", help="the phantom's derivatives/truth folder")
    q.add_argument("--json", help="where to write the JSON (default OUT/evaluation.json)")
    q.set_defaults(func=cmd_evaluate)

    q = sub.add_parser("train", help="train or fine-tune the U-Net detector")
    q.add_argument("--out", default="models/unet_gd.pt", help="weights file to write")
    q.add_argument("--data", help="folder of <case>/post.nii.gz, [pre.nii.gz], [flair.nii.gz], "
                                  "label.nii.gz, [brain.nii.gz] (default: the phantom)")
    q.add_argument("--init", help="weights to fine-tune from (e.g. models/unet_gd.pt)")
    q.add_argument("--cache", default="/tmp/unet-data", help="phantom training-volume cache")
    from .training import PATIENTS, TrainOptions as T  # plain dataclass: no torch import

    q.add_argument("--seed", type=int, default=T.seed)
    q.add_argument("--steps", type=int, default=T.steps)
    q.add_argument("--batch", type=int, default=T.batch, help="patches per step")
    q.add_argument("--patch", type=int, default=T.patch, help="patch edge in 1 mm voxels")
    q.add_argument("--lr", type=float, default=T.lr)
    q.add_argument("--threads", type=int, default=T.threads, help="torch CPU threads")
    q.add_argument("--workers", type=int, default=T.workers,
                   help="processes drawing patches and generating volumes (same result for any count)")
    q.add_argument("--val-every", type=int, default=T.val_every)
    q.add_argument("--ema", type=float, default=T.ema,
                   help="decay of the weight average that is validated and saved (0: none)")
    q.add_argument("--templates", type=int, default=T.templates,
                   help="MNI-template training subjects (phantom data)")
    q.add_argument("--patient-repeats", type=int, default=T.patient_repeats,
                   help="injections per real patient (phantom data)")
    q.add_argument("--template-chronic", type=int, default=T.template_chronic,
                   help="chronic (FLAIR-bright, non-enhancing) lesions painted into each template "
                        "subject (phantom data; the shipped weights: 0)")
    q.add_argument("--exclude", nargs="*", default=[], choices=PATIENTS,
                   help="real patients left out of training and validation")
    q.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser("review", help="open napari on an output folder for central reader review")
    q.add_argument("out", help="output folder of `lesioncount run`")
    q.add_argument("--subject", help="start at this subject (default: where you left off)")
    q.add_argument("--reader", help="your name, recorded with every decision "
                                    "(default: $LESIONCOUNT_READER or the login name)")
    q.set_defaults(func=cmd_review)

    q = sub.add_parser("reviewed", help="write the reader-adjusted tables (*_reviewed.tsv) "
                                        "and two readers' disagreements")
    q.add_argument("out", help="output folder of `lesioncount run`")
    q.add_argument("--reader", action="append",
                   help="whose decisions (repeatable; with two, disagreements.tsv is written "
                        "and the later reader wins: name the adjudicator last)")
    q.set_defaults(func=cmd_reviewed)

    q = sub.add_parser("report", help="write the self-contained HTML QC report and the "
                                      "IL-2 vs placebo endpoint of an output folder")
    q.add_argument("out", help="output folder of `lesioncount run`")
    q.add_argument("--dest", help="HTML file to write (default OUT/report.html)")
    q.add_argument("--automatic", action="store_true",
                   help="use the automatic counts even where reviewed tables exist")
    q.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from .errors import LesionCountError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LesionCountError as e:
        print(f"lesioncount: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lesioncount: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
