"""Dask batch runs: same results as the serial run, resume after a kill, atomic outputs, faults.

Everything runs on a tiny study (2 subjects x 2 visits on a 4 mm grid, ~1 s per session)
with a configuration made for it (see ``tiny_cfg``); the orchestration, not detection
quality, is under test.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("nilearn")

from lesioncount.config import PipelineConfig  # noqa: E402
from lesioncount.distributed import open_client, remove_partial_files, run_study_dask  # noqa: E402
from lesioncount.outputs import SessionPaths  # noqa: E402
from lesioncount.pipeline import run_study  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from tiny_study import tiny_study  # noqa: E402

pytestmark = pytest.mark.slow
TABLES = ("counts.tsv", "lesions.tsv", "subjects.tsv", "errors.tsv")
STEP = 4


def tiny_cfg() -> PipelineConfig:
    """Defaults, except what a 4 mm grid breaks: the CSF- and white-matter-shell rules (a 2 mm
    shell is less than a voxel) and the 1 mm tracking grid (slow, and finer than the data)."""
    cfg = PipelineConfig()
    return cfg.replace(
        classical=dataclasses.replace(cfg.classical, max_csf_fraction=1.01, min_shell_level=0.0),
        tracking=dataclasses.replace(cfg.tracking, grid_spacing_mm=float(STEP)))


def label_maps(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.asarray(nib.load(str(p)).dataobj)
            for p in sorted(out.rglob("*_desc-lesions_dseg.nii.gz"))}


def assert_same_outputs(a: Path, b: Path) -> None:
    for t in TABLES:
        assert (a / t).read_text() == (b / t).read_text(), t
    la, lb = label_maps(a), label_maps(b)
    assert la.keys() == lb.keys() and la
    for k in la:
        assert np.array_equal(la[k], lb[k]), k
    for p in sorted(a.rglob("*_desc-lesions_dseg.json")):
        q = b / p.relative_to(a)
        assert json.loads(p.read_text())["key"] == json.loads(q.read_text())["key"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return tiny_study(tmp_path_factory.mktemp("tiny") / "ds", n_subjects=2, n_sessions=2,
                      step_mm=STEP, seed=3)


@pytest.fixture(scope="module")
def serial(study, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    res = run_study(study, out, tiny_cfg(), progress=False)
    assert not res.errors and len(res.counts) == 4
    return out, res


@pytest.fixture(scope="module")
def client():
    with open_client(workers=2) as c:
        yield c


def test_two_worker_processes_give_the_serial_results(study, serial, client, tmp_path):
    ref, ref_res = serial
    info = client.scheduler_info()["workers"]
    assert len(info) == 2 and len({w["id"] for w in info.values()}) == 2
    res = run_study_dask(study, tmp_path / "out", tiny_cfg(), progress=False, client=client)
    assert_same_outputs(ref, tmp_path / "out")
    assert res.counts == ref_res.counts and res.subjects == ref_res.subjects
    pids = {s["pid"] for s in res.task_stats if s["task"] == "session"}
    assert len(pids) == 2, "both worker processes should have taken sessions"
    from lesioncount.distributed import usable_cpus

    assert {s["threads"] for s in res.task_stats if s["task"] == "session"} == \
        {max(1, usable_cpus() // 2)}, "two workers on one host share its cores"
    assert any(r["gd_count"] for r in res.counts), "a study with no lesion tests little"


def test_rerun_skips_unchanged_sessions_and_redoes_changed_ones(study, serial, client, tmp_path):
    import shutil

    ds, out = tmp_path / "ds", tmp_path / "out"
    shutil.copytree(study, ds)
    shutil.copytree(serial[0], out)  # a serial run's outputs: the Dask run resumes from them
    res = run_study_dask(ds, out, tiny_cfg(), progress=False, client=client)
    assert [s["cached"] for s in res.task_stats if s["task"] == "session"] == [True] * 4
    assert_same_outputs(serial[0], out)
    # change sub-01's baseline: its follow-up depends on it (key hashes baseline_post) too
    f = ds / "sub-01/ses-01/anat/sub-01_ses-01_ce-gadolinium_T1w.nii.gz"
    img = nib.load(str(f))
    arr = np.asarray(img.dataobj, np.float32)
    arr[0, 0, 0] += 1000
    nib.save(nib.Nifti1Image(arr, img.affine), str(f))
    res = run_study_dask(ds, out, tiny_cfg(), progress=False, client=client)
    redone = {(s["subject"], s["session"]) for s in res.task_stats
              if s["task"] == "session" and not s["cached"]}
    assert redone == {("sub-01", "ses-01"), ("sub-01", "ses-02")}
    # --force redoes everything
    res = run_study_dask(ds, out, tiny_cfg(), progress=False, client=client, force=True)
    assert not any(s["cached"] for s in res.task_stats if s["task"] == "session")


def test_a_session_parameter_changes_every_session_key_a_tracking_one_none(study):
    import dataclasses

    from lesioncount.pipeline import session_key

    from lesioncount.dataset import discover

    subj = discover(study).subjects[0]
    cfg = tiny_cfg()

    def key(c):
        return session_key(subj.sessions[1], subj.baseline, c)[0]

    k1 = key(cfg)
    assert k1 == key(tiny_cfg())
    assert key(cfg.replace(classical=dataclasses.replace(cfg.classical, seed_z=5.5))) != k1
    assert key(cfg.replace(use_flair=not cfg.use_flair)) != k1
    # read by the subject stage only: the cached sessions are re-tracked, not redone
    assert key(cfg.replace(max_baseline_gd=3)) == k1
    assert key(cfg.replace(tracking=dataclasses.replace(cfg.tracking, convention="any_earlier",
                                                        transient_min_z=6.0))) == k1


def _check_nothing_half_written(out: Path) -> None:
    for p in out.rglob("*.nii.gz"):
        if not p.name.startswith("."):
            np.asarray(nib.load(str(p)).dataobj)  # a truncated file raises here
    for p in out.rglob("*.json"):
        if not p.name.startswith("."):
            json.loads(p.read_text())
    for p in out.glob("*.tsv"):
        lines = p.read_text().splitlines()
        assert lines and all(len(ln.split("\t")) == len(lines[0].split("\t")) for ln in lines)
    for p in out.rglob("*.tfm"):
        if not p.name.startswith("."):
            assert "Transform:" in p.read_text()


@pytest.mark.parametrize("workers", [0, 2], ids=["serial", "dask-2-workers"])
def test_killed_run_resumes_to_the_uninterrupted_outputs(study, serial, tmp_path, workers):
    ref, _ = serial
    out = tmp_path / "out"
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(tiny_cfg().to_dict()))
    cmd = [sys.executable, "-m", "lesioncount.cli", "run", str(study), "--out", str(out),
           "--config", str(cfg_file), "--quiet"]
    cmd += ["--workers", str(workers)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if len(list(out.rglob("*_desc-lesions_dseg.json"))) >= 1:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.3)  # somewhere in the middle of the next session's writes
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its Dask workers, at once
        except ProcessLookupError:
            pass
        proc.wait(30)
    done = sorted(out.rglob("*_desc-lesions_dseg.json"))
    assert 1 <= len(done) < 4, "killed after some sessions and before the end"
    _check_nothing_half_written(out)
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    # resume serially, whatever the killed run was: the outputs do not depend on the engine
    rc = subprocess.run(cmd[:cmd.index("--quiet") + 1], env=env, stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    assert_same_outputs(ref, out)
    assert not list(out.rglob(".*.part*")), "partial files of the killed run are cleaned"
    for p, t in mtimes.items():  # sessions finished before the kill were not redone
        assert json.loads(p.read_text())["status"] == "ok" and p.stat().st_mtime_ns == t
    assert (out / "lesioncount.log").stat().st_size > 0


def test_partial_files_are_cleaned_and_outputs_readable_by_others(tmp_path):
    from lesioncount.io import write_text

    (tmp_path / "sub-01").mkdir()
    stale = tmp_path / "sub-01" / ".x.nii.gz.abc123.part.nii.gz"
    stale.write_bytes(b"half")
    keep = tmp_path / "sub-01" / "x.nii.gz"
    keep.write_bytes(b"whole")
    assert remove_partial_files(tmp_path) == 1
    assert not stale.exists() and keep.exists()
    p = write_text(tmp_path / "t.tsv", "a\n")
    assert p.stat().st_mode & 0o044 == 0o044 & ~_umask(), "atomic writes keep default permissions"


def _umask():
    m = os.umask(0o022)
    os.umask(m)
    return m


def _crash_plugin(subject: str, session: str):
    """A worker plugin that makes every worker process die on one session (as an OOM kill would)."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class Crash(WorkerPlugin):
        name = "crash-one-session"

        def setup(self, worker):
            import lesioncount.pipeline as pl

            original = pl.process_session

            def process_session(s, *a, **k):
                if (s.subject, s.session) == (subject, session):
                    os._exit(137)
                return original(s, *a, **k)

            pl.process_session = process_session

    return Crash()


def test_a_session_that_kills_its_workers_is_recorded_and_the_rest_is_done(study, serial,
                                                                           tmp_path):
    import dask

    ref, ref_res = serial
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with open_client(workers=2) as c:
            c.register_plugin(_crash_plugin("sub-02", "ses-01"))
            res = run_study_dask(study, tmp_path / "out", tiny_cfg(), progress=False, client=c)
    err = {(e["subject"], e["session"]): e for e in res.errors}
    assert "worker process died" in err[("sub-02", "ses-01")]["reason"]
    assert "baseline session failed" in err[("sub-02", "ses-02")]["reason"]
    assert res.n_failed == 2
    # the other subject is complete and identical; the crashed one gets no counts
    assert [r for r in res.counts if r["subject"] == "sub-01"] == \
        [r for r in ref_res.counts if r["subject"] == "sub-01"]
    assert not [r for r in res.counts if r["subject"] == "sub-02"]
    sub2 = next(r for r in res.subjects if r["subject"] == "sub-02")
    assert sub2["cumulative_new_gd"] is None and sub2["complete"] is False
    assert not SessionPaths(tmp_path / "out", "sub-02", "ses-01").lesions.exists()


def test_sidecar_records_provenance(serial):
    out, _ = serial
    side = json.loads(SessionPaths(out, "sub-01", "ses-02").sidecar.read_text())
    assert set(side["inputs"]["sha256"]) == {"post", "pre", "baseline_post"}
    assert side["registration"]["to_baseline"]["quality"] > 0.5
    assert side["detector"] == "classical" and side["seconds"]["total"] > 0
    desc = json.loads((out / "dataset_description.json").read_text())
    gen = desc["GeneratedBy"][0]
    assert gen["Version"] and gen["Parameters"] == json.loads(json.dumps(tiny_cfg().to_dict()))


def test_a_change_to_the_session_code_changes_the_fingerprint_a_viewer_change_does_not(tmp_path):
    """The session key holds a fingerprint of the code registration and detection run, so
    an upgraded detector (same version number) does not serve the old code's cached
    results; a change to a viewer or to tracking re-tracks from the cached sessions."""
    import shutil

    import lesioncount
    from lesioncount.pipeline import session_code_fingerprint

    pkg = Path(lesioncount.__file__).parent
    copy = tmp_path / "lesioncount"
    shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    base = session_code_fingerprint(copy)
    assert base == session_code_fingerprint(pkg)
    for rel, changes in (("napari/_widget.py", False), ("tracking.py", False),
                         ("longitudinal.py", False), ("stability.py", False),
                         ("segmentation/classical.py", True), ("registration.py", True)):
        f = copy / rel
        f.write_text(f.read_text() + "\n# changed\n")
        session_code_fingerprint.cache_clear()
        assert (session_code_fingerprint(copy) != base) is changes, rel
        base = session_code_fingerprint(copy)
