"""Batch runs on Dask: many sessions at once, on one machine or a cluster.

:func:`run_study_dask` runs the same units of work as the serial
:func:`lesioncount.pipeline.run_study` (:func:`~lesioncount.pipeline.session_task`,
:func:`~lesioncount.pipeline.track_task`) and returns the same
:class:`~lesioncount.pipeline.StudyResult`:

- per subject, the baseline session first (follow-ups read its brain mask), then its
  follow-ups in parallel, then the subject's tracking; subjects in parallel;
- the client decides what to submit as results arrive, so a failed baseline skips its
  follow-ups (the subject gets no counts) and nothing else waits on it;
- a session whose worker dies (out of memory, segfault) is retried by Dask on another
  worker and, if it keeps killing workers, recorded in ``errors.tsv`` like any other
  failure;
- the study tables are rewritten after every subject, in the study's subject order, so
  they are identical to the serial run's whatever the order in which work finished;
- resume comes from the sessions' content-hash keys (an unchanged session is read from
  its sidecar), and every file is written atomically, so a killed run loses only the
  sessions in flight.

With ``scheduler=None`` a :class:`distributed.LocalCluster` is started, sized to the
machine (one worker process per core, one thread each). With ``scheduler="tcp://..."``
an existing cluster is used (for example one started by dask-jobqueue on SLURM): its
workers must have lesioncount installed and see the dataset and the output folder
under the same paths.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path

from .config import PipelineConfig
from .dataset import Session, Study, Subject, discover
from .io import remove_partial_files
from .longitudinal import SubjectResult
from .outputs import write_description, write_tables
from .pipeline import StudyResult, _error_row, session_task, track_task

log = logging.getLogger(__name__)

# What a worker's lesioncount log records are reduced to before travelling to the client.
_LOG_LEVEL = logging.INFO


def usable_cpus() -> int:
    """Cores this process may run on (the CPU affinity set by SLURM/cgroups, else all)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes of the default local cluster: one per usable core."""
    return usable_cpus()


# ------------------------------------------------------------------------- worker side

class _Capture(logging.Handler):
    """Collects a task's log records so the client can write them to OUT/lesioncount.log."""

    def __init__(self):
        super().__init__(_LOG_LEVEL)
        self.records: list[tuple[int, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.records.append((record.levelno, record.name, record.getMessage()))
        except Exception:  # a bad format string must not fail the task
            pass


@contextlib.contextmanager
def _worker_context(threads: int):
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(threads)))
    cap = _Capture()
    logger = logging.getLogger("lesioncount")
    old_level = logger.level
    logger.addHandler(cap)
    if logger.getEffectiveLevel() > _LOG_LEVEL:
        logger.setLevel(_LOG_LEVEL)
    try:
        yield cap
    finally:
        logger.removeHandler(cap)
        logger.setLevel(old_level)


def _peak_rss_mb() -> float:
    """Peak resident memory of this (worker) process so far, MB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _host_of(address: str) -> str:
    from urllib.parse import urlparse

    return urlparse(address).hostname or address


def _threads_for(slots: dict[str, int]) -> int:
    """This task's share of its host's cores, given the task slots on each host."""
    try:
        from distributed import get_worker

        host = _host_of(get_worker().address)
    except (ImportError, ValueError):  # not inside a Dask worker
        return 1
    return max(1, usable_cpus() // max(1, slots.get(host, 1)))


def _run_session(session: Session, baseline: Session, cfg: PipelineConfig, out: str,
                 force: bool, slots: dict[str, int]) -> dict:
    """Dask task: one session. Never raises for bad input (see ``session_task``)."""
    t0 = time.perf_counter()
    threads = _threads_for(slots)
    with _worker_context(threads) as cap:
        side, rows = session_task(session, baseline, True, cfg, Path(out), force, threads=threads)
    return {"sidecar": side, "rows": rows, "logs": cap.records, "threads": threads,
            "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "host": socket.gethostname(), "pid": os.getpid()}


def _run_tracking(subject: Subject, sidecars: dict[str, dict | None], cfg: PipelineConfig,
                  out: str, slots: dict[str, int]) -> dict:
    """Dask task: one subject's tracking and final label maps."""
    t0 = time.perf_counter()
    with _worker_context(_threads_for(slots)) as cap:
        result, rows = track_task(subject, sidecars, cfg, Path(out))
    return {"result": result, "rows": rows, "logs": cap.records,
            "seconds": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "host": socket.gethostname(), "pid": os.getpid()}


# ------------------------------------------------------------------------- client side

@contextlib.contextmanager
def open_client(scheduler: str | None = None, workers: int | None = None, *,
                memory_limit: str | float | None = "auto"):
    """A Dask client: to ``scheduler`` if given, else to a new local cluster.

    The local cluster has ``workers`` processes (default: one per usable core) of one
    thread each, no dashboard, and quiet logs.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="60s")
        try:
            yield client
        finally:
            client.close()
        return
    n = int(workers or default_workers())
    if n < 1:
        from .errors import ConfigError
        raise ConfigError(f"--workers must be at least 1, got {n}")
    env = {"OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
           "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # no dashboard; the scheduler's small HTTP server (health, metrics) on a free port, so
    # several runs on one machine do not compete for 8787
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR,
                           memory_limit=memory_limit, env=env,
                           scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"})
    client = Client(cluster)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()


def _task_slots(client) -> dict[str, int]:
    """Task slots (worker threads) per host, to share each host's cores among them."""
    slots: dict[str, int] = {}
    for addr, w in client.scheduler_info().get("workers", {}).items():
        host = _host_of(addr)
        slots[host] = slots.get(host, 0) + int(w.get("nthreads", 1))
    return slots


def _relay_logs(records, prefix: str) -> None:
    for level, name, msg in records:
        logging.getLogger(name).log(level, "%s%s", prefix, msg)


def _lost(future, what: str) -> str:
    """One line for a task that raised outside lesioncount's own handling (worker died)."""
    try:
        exc = future.exception()
    except Exception as e:  # cancelled, lost connection
        exc = e
    name = type(exc).__name__
    text = " ".join(str(exc).split())[:200]
    if name == "KilledWorker":
        return (f"{what}: its worker process died repeatedly (out of memory or crashed); "
                f"not counted ({text})")
    return f"{what}: task failed on the cluster ({name}: {text})"


def run_study_dask(dataset: str | Path | Study, out: str | Path,
                   cfg: PipelineConfig = PipelineConfig(), *, force: bool = False,
                   progress: bool = True, scheduler: str | None = None,
                   workers: int | None = None, subjects: list[str] | None = None,
                   client=None) -> StudyResult:
    """Run the whole pipeline on a study with Dask; write the output folder.

    Parameters
    ----------
    dataset : path or Study
        BIDS folder, TSV manifest, or an already discovered study.
    out : path
        Output folder (BIDS derivatives). Unchanged sessions already there are reused.
    cfg : PipelineConfig
        Every parameter (recorded in ``dataset_description.json``).
    force : bool
        Redo every session even when its content-hash key is unchanged.
    progress : bool
        Show a progress bar with each finished session's status.
    scheduler : str, optional
        Address of an existing Dask scheduler; default: a new local cluster.
    workers : int, optional
        Worker processes of the local cluster (default: one per usable core).
    subjects : list of str, optional
        Only these subjects.
    client : distributed.Client, optional
        Use this client (its cluster stays open); overrides ``scheduler``/``workers``.

    Returns
    -------
    StudyResult
        The same tables as :func:`lesioncount.pipeline.run_study`, rows in study order.
    """
    study = dataset if isinstance(dataset, Study) else discover(dataset)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    n_partial = remove_partial_files(out)
    if n_partial:
        log.info("removed %d partial file(s) left by an interrupted run", n_partial)
    write_description(out, cfg, study.root)
    todo = [s for s in study.subjects if subjects is None or s.subject in subjects]
    if client is not None:
        return _run(client, study, todo, out, cfg, force, progress)
    with open_client(scheduler, workers) as c:
        return _run(c, study, todo, out, cfg, force, progress)


def _run(client, study: Study, todo: list[Subject], out: Path, cfg: PipelineConfig, force: bool,
         progress: bool) -> StudyResult:
    from distributed import as_completed
    from tqdm.auto import tqdm

    problems = [_error_row(p.subject, p.session, p.file, p.reason) for p in study.problems]
    slots = _task_slots(client)
    log.info("Dask: %d worker thread(s) on %d host(s) (%s)", sum(slots.values()), len(slots),
             client.scheduler.address if client.scheduler else "?")
    n_sessions = sum(len(s.sessions) for s in todo)
    bar = tqdm(total=n_sessions, disable=not progress, unit="session", desc="lesioncount")

    # Per subject: session outcomes (sidecar, error rows) by session label; tracking outcome.
    outcome: dict[str, dict[str, tuple[dict | None, list[dict]]]] = {s.subject: {} for s in todo}
    tracked: dict[str, tuple[SubjectResult, list[dict]]] = {}
    by_name = {s.subject: s for s in todo}
    what: dict[str, tuple] = {}  # future key -> ("session", subject, session) / ("track", subject)
    stats: list[dict] = []
    track_sent: set[str] = set()
    ac = as_completed()
    out_s = str(out)

    def submit_session(subj: Subject, s: Session) -> None:
        f = client.submit(_run_session, s, subj.baseline, cfg, out_s, force, slots, pure=False,
                          key=f"session-{subj.subject}-{s.session}-{time.time_ns()}")
        what[f.key] = ("session", subj.subject, s)
        ac.add(f)

    def session_done(subj: Subject, s: Session, side, rows) -> None:
        outcome[subj.subject][s.session] = (side, rows)
        state = "cached" if side and side.get("cached") else ("ok" if side else "FAILED")
        bar.set_postfix_str(f"{s.subject} {s.session} {state}")
        bar.update(1)
        log.info("%s %s: %s%s", s.subject, s.session, state,
                 "" if side else f" ({rows[0]['reason'] if rows else ''})")
        if s.session == subj.baseline.session:
            for fu in subj.sessions[1:]:
                if side:
                    submit_session(subj, fu)
                else:  # no processing: the same skip row as the serial run
                    fside, frows = session_task(fu, subj.baseline, False, cfg, out, force)
                    session_done(subj, fu, fside, frows)
        if len(outcome[subj.subject]) == len(subj.sessions) and subj.subject not in track_sent:
            track_sent.add(subj.subject)
            sidecars = {k: v[0] for k, v in outcome[subj.subject].items()}
            f = client.submit(_run_tracking, subj, sidecars, cfg, out_s, slots, pure=False,
                              key=f"track-{subj.subject}-{time.time_ns()}")
            what[f.key] = ("track", subj.subject)
            ac.add(f)

    def tables() -> StudyResult:
        counts, lesions, subject_rows, errors = [], [], [], list(problems)
        for subj in todo:  # study order, whatever the completion order
            if subj.subject not in tracked:
                continue
            res, trows = tracked[subj.subject]
            counts += res.counts
            lesions += res.lesions
            subject_rows.append(res.subject)
            for s in subj.sessions:
                errors += outcome[subj.subject][s.session][1]
            errors += trows
        write_tables(out, counts, lesions, subject_rows, errors)
        return StudyResult(out, counts, lesions, subject_rows, errors)

    try:
        for subj in todo:
            submit_session(subj, subj.baseline)
        for f in ac if todo else ():
            kind = what.pop(f.key)
            if kind[0] == "session":
                _, sid, s = kind
                subj = by_name[sid]
                if f.status == "finished":
                    r = f.result()
                    _relay_logs(r["logs"], f"[{s.subject} {s.session}] ")
                    stats.append({"task": "session", "subject": sid, "session": s.session,
                                  **{k: r[k] for k in ("seconds", "peak_rss_mb", "host", "pid",
                                                       "threads")},
                                  "cached": bool(r["sidecar"] and r["sidecar"].get("cached"))})
                    session_done(subj, s, r["sidecar"], r["rows"])
                else:
                    reason = _lost(f, "session")
                    log.error("%s %s: %s", sid, s.session, reason)
                    session_done(subj, s, None, [_error_row(sid, s.session, s.post, reason)])
            else:
                _, sid = kind
                subj = by_name[sid]
                if f.status == "finished":
                    r = f.result()
                    _relay_logs(r["logs"], f"[{sid}] ")
                    stats.append({"task": "track", "subject": sid, "session": "",
                                  **{k: r[k] for k in ("seconds", "peak_rss_mb", "host", "pid")},
                                  "cached": False})
                    tracked[sid] = (r["result"], r["rows"])
                else:
                    reason = _lost(f, "tracking")
                    log.error("%s: %s", sid, reason)
                    tracked[sid] = (SubjectResult(subject={
                        "subject": sid, "group": subj.group, "sessions": len(subj.sessions),
                        "complete": False}), [_error_row(sid, "", "", reason)])
                f.release()
                # tables after every subject: a crash later loses nothing already computed
                tables()
        result = tables()
    finally:
        bar.close()
    result.task_stats = stats  # per task: seconds, peak RSS of its worker, host, pid
    return result
