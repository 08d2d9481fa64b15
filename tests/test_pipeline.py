"""End to end on a small phantom study: the output contract, internal consistency, accuracy."""
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesioncount.cli import main
from lesioncount.io import read_tsv

pytestmark = pytest.mark.slow

CONTRACT = {
    "counts.tsv": ["subject", "session", "days", "gd_count", "new_gd_count", "cumulative_new_gd"],
    "lesions.tsv": ["subject", "session", "lesion", "track", "status", "volume_mm3", "x", "y", "z"],
    "subjects.tsv": ["subject", "group", "sessions", "baseline_gd_count", "eligible",
                     "cumulative_new_gd"],
}


@pytest.fixture(scope="module")
def run(phantom_run):
    return phantom_run


def test_exit_code_and_contract_columns(run):
    study, out, rc = run
    assert rc == 0, (out / "errors.tsv").read_text()
    for name, cols in CONTRACT.items():
        header = (out / name).read_text().splitlines()[0].split("\t")
        assert header[: len(cols)] == cols, name
    desc = json.loads((out / "dataset_description.json").read_text())
    gen = desc["GeneratedBy"][0]
    assert gen["Name"] == "lesioncount" and gen["Version"] and "Parameters" in gen
    assert desc["DatasetType"] == "derivative"


def test_label_maps_are_on_each_input_grid_and_match_lesions_tsv(run):
    study, out, _ = run
    lesions = read_tsv(out / "lesions.tsv")
    counts = read_tsv(out / "counts.tsv")
    assert len(counts) == 6
    for c in counts:
        sub, ses = c["subject"], c["session"]
        post = next((study / sub / ses / "anat").glob("*_ce-gadolinium_T1w.nii*"))
        dseg = out / sub / ses / "anat" / f"{sub}_{ses}_ce-gadolinium_desc-lesions_dseg.nii.gz"
        a, b = nib.load(str(post)), nib.load(str(dseg))
        assert a.shape[:3] == b.shape and np.allclose(a.affine, b.affine, atol=1e-4)
        labels = np.asarray(b.dataobj)
        assert np.issubdtype(labels.dtype, np.integer)
        rows = [r for r in lesions if r["subject"] == sub and r["session"] == ses]
        assert sorted(int(r["lesion"]) for r in rows) == sorted(set(np.unique(labels)) - {0})
        assert int(c["gd_count"]) == len(rows)
        assert int(c["new_gd_count"]) == sum(r["status"] == "new" for r in rows)
        zooms = np.prod(b.header.get_zooms()[:3])
        for r in rows:
            assert float(r["volume_mm3"]) == pytest.approx((labels == int(r["lesion"])).sum() * zooms,
                                                           rel=1e-3)


def test_counts_follow_the_convention(run):
    _, out, _ = run
    counts = read_tsv(out / "counts.tsv")
    subjects = {r["subject"]: r for r in read_tsv(out / "subjects.tsv")}
    for sub in subjects:
        rows = [c for c in counts if c["subject"] == sub]
        assert rows[0]["new_gd_count"] == "0" and rows[0]["days"] == "0"
        cum = np.cumsum([int(r["new_gd_count"]) for r in rows])
        assert [int(r["cumulative_new_gd"]) for r in rows] == list(cum)
        s = subjects[sub]
        assert int(s["cumulative_new_gd"]) == cum[-1]
        assert int(s["baseline_gd_count"]) == int(rows[0]["gd_count"])
        assert (s["eligible"] == "true") == (int(rows[0]["gd_count"]) <= 2)
    lesions = read_tsv(out / "lesions.tsv")
    assert {r["status"] for r in lesions} <= {"baseline", "new", "persistent"}
    assert all(r["status"] == "baseline" for r in lesions if r["session"] == "ses-M00")


def test_accuracy_against_the_phantom_truth(run):
    """A regression floor at what was measured on this study (seed 11, 2 mm voxels).

    Measured: skull-stripped 2 mm 3D subject: 2/2 lesions found, 1.0 false positive per
    scan; every matched lesion has the right status. The whole-head subject at 2x2x6 mm
    (3 mm slices taken every 2nd voxel) is far off (brain mask leaks at such coarse grids):
    it is not asserted here; the benchmark measures real 1x1x3 mm acquisitions.
    """
    from lesioncount.evaluation import evaluate

    study, out, _ = run
    ev = evaluate(out, Path(study) / "derivatives" / "truth")
    stripped = ev["by_whole_head"]["false"]
    assert stripped["sensitivity"] == 1.0
    assert stripped["false_positives_per_scan"] <= 1.5
    assert ev["status"]["accuracy"] == 1.0


def test_each_session_registers_and_uses_its_flair(run):
    """The phantom writes a FLAIR per visit: each is registered onto its post-contrast scan
    (a transform and a quality figure saved) and used by the classical detector."""
    study, out, _ = run
    sides = sorted(out.glob("sub-*/ses-*/anat/*_desc-lesions_dseg.json"))
    assert len(sides) == 6
    for side_path in sides:
        side = json.loads(side_path.read_text())
        assert side["flair_used"] is True and side["inputs"]["flair"].endswith(
            ("_FLAIR.nii", "_FLAIR.nii.gz"))
        reg = side["registration"]["flair_to_post"]
        assert reg["failed"] is False and reg["quality"] > 0.3
        assert list(side_path.parent.glob("*from-FLAIR_to-ceT1w_mode-image_xfm.tfm"))
        assert side["detection"]["flair"] is True


def test_rerun_skips_every_unchanged_session(run):
    study, out, _ = run
    before = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/ses-*/anat/*_desc-lesions_dseg.json")}
    assert main(["run", str(study), "--out", str(out), "--quiet"]) == 0
    after = {p: p.stat().st_mtime_ns for p in out.glob("sub-*/ses-*/anat/*_desc-lesions_dseg.json")}
    assert before == after  # sidecars untouched: nothing recomputed


def _benchmark_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "benchmark", Path(__file__).parents[1] / "scripts" / "benchmark.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_benchmark_records_which_code_it_measured():
    """benchmark.json names the lesioncount it ran (package path, git commit, local changes)
    and the configuration, so a figure can be checked against the code that made it."""
    import lesioncount
    from lesioncount.config import PipelineConfig

    ident = _benchmark_module().code_identity()
    assert ident["package"] == str(Path(lesioncount.__file__).resolve().parent)
    assert ident["config"] == PipelineConfig().to_dict()
    if (Path(lesioncount.__file__).parents[1] / ".git").exists():
        assert len(ident["commit"]) == 40 and isinstance(ident["dirty"], bool)


def test_the_benchmark_reads_each_sessions_time_and_its_stages(run):
    """scripts/benchmark.py reports time per session from the sidecars: mean, max, how many
    sessions miss the 30 s target and where the time went (each stage's mean)."""
    bench = _benchmark_module()
    _, out, _ = run
    per = bench.session_seconds(out)
    totals = [json.loads(p.read_text())["seconds"]["total"]
              for p in out.glob("sub-*/ses-*/anat/*_desc-lesions_dseg.json")]
    assert per["n"] == len(totals) == 6
    assert per["max"] == max(totals) and abs(per["mean"] - sum(totals) / 6) < 1e-9
    assert per["over_target"] == sum(t > bench.SESSION_TARGET_S for t in totals)
    assert {"brain_mask", "detect", "register_pre", "register_baseline"} <= set(per["stage_mean"])
    assert all(0 <= v <= per["max"] for v in per["stage_mean"].values())  # parts of a session
    sides = [json.loads(p.read_text()) for p in out.glob("sub-*/ses-*/anat/*_desc-lesions_dseg.json")]
    cpu = [s["cpu_seconds"] for s in sides]
    assert all(c > 0 for c in cpu) and per["cpu_max"] == max(cpu)
    assert all(s["load_average"] >= 0 for s in sides)  # (None where the OS has no load average)
    assert len(per["over_target_sessions"]) == per["over_target"]


def test_a_system_without_a_load_average_records_none(monkeypatch):
    """The sidecar's load_average is None where os.getloadavg is missing (Windows), instead
    of the session failing."""
    import os

    from lesioncount import pipeline

    assert pipeline._load_average() >= 0
    monkeypatch.delattr(os, "getloadavg")
    assert pipeline._load_average() is None
