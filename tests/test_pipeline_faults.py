"""A corpus of bad input run through the whole pipeline (``lesioncount run``).

Each bad file must give one row in ``errors.tsv`` naming it with a one-line reason; the
rest of the batch is counted; the exit code says something failed. The same corpus on a
local Dask cluster gives the same ``errors.tsv`` and counts.
"""
from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("nilearn")

from lesioncount.cli import main  # noqa: E402
from lesioncount.io import read_tsv  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_distributed import tiny_cfg  # noqa: E402
from tiny_study import tiny_study  # noqa: E402

pytestmark = pytest.mark.slow
POST = "ce-gadolinium_T1w"


def _name(sub, ses, kind=POST):
    return f"{sub}/{ses}/anat/{sub}_{ses}_{kind}.nii.gz"


def _save(path: Path, arr, aff, *, codes=True):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(arr), aff)
    if not codes:
        img.set_qform(None, code=0)
        img.set_sform(None, code=0)
    nib.save(img, str(path))
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(dataset, {case: (subject, session, bad file, words expected in the reason)})."""
    base = tmp_path_factory.mktemp("corpus")
    good = tiny_study(base / "good", n_subjects=1, n_sessions=2, step_mm=4, seed=5)
    root = base / "ds"
    shutil.copytree(good, root)
    ref = nib.load(str(good / _name("sub-01", "ses-01")))
    arr = np.asarray(ref.dataobj, np.float32)
    aff = ref.affine
    cases = {}

    def bad(case, sub, make, words, ses="ses-01"):
        p = root / _name(sub, ses)
        p.parent.mkdir(parents=True, exist_ok=True)
        make(p)
        cases[case] = (sub, ses, p, words)

    bad("zero bytes", "sub-zero", lambda p: p.write_bytes(b""), "empty")

    def truncated(p):
        _save(p, arr, aff)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    bad("truncated", "sub-trunc", truncated, "truncated")
    bad("not NIfTI", "sub-text", lambda p: p.write_bytes(gzip.compress(b"hello " * 500)),
        "not a readable nifti")
    bad("NaN voxels", "sub-nan", lambda p: _save(p, np.where(arr > 900, np.nan, arr), aff), "NaN")
    bad("Inf voxels", "sub-inf", lambda p: _save(p, np.where(arr > 900, np.inf, arr), aff), "Inf")
    bad("4D", "sub-fourd", lambda p: _save(p, np.stack([arr, arr], -1), aff), "4D")
    bad("2D", "sub-twod", lambda p: _save(p, arr[:, :, 20:21], aff), "2D")

    def singular(p):
        img = nib.Nifti1Image(arr, None)
        img.header.set_sform(np.diag([4.0, 4.0, 0.0, 1.0]), code=2)
        p.parent.mkdir(parents=True, exist_ok=True)
        nib.save(img, str(p))
    bad("singular affine", "sub-singular", singular, "singular")
    bad("missing affine", "sub-noaffine", lambda p: _save(p, arr, aff, codes=False), "orientation")
    bad("absurd voxels", "sub-voxel",
        lambda p: _save(p, arr, np.diag([40.0, 40.0, 40.0, 1.0])), "voxel size")
    # a good baseline and a bad follow-up: counted up to the follow-up, marked incomplete
    shutil.copytree(good / "sub-01" / "ses-01", root / "sub-badfu" / "ses-01")
    for f in (root / "sub-badfu" / "ses-01" / "anat").iterdir():
        f.rename(f.with_name(f.name.replace("sub-01", "sub-badfu")))
    bad("bad follow-up", "sub-badfu", lambda p: _save(p, np.where(arr > 900, np.nan, arr), aff),
        "NaN", ses="ses-02")
    # a bad baseline and a good follow-up: no counts at all
    bad("bad baseline", "sub-badbase", lambda p: p.write_bytes(b""), "empty")
    _save(root / _name("sub-badbase", "ses-02"), arr, aff)
    # pre-contrast far away from its post: used without it, with a warning naming the pre
    pre = root / _name("sub-01", "ses-02", "T1w")
    far = aff.copy()
    far[:3, 3] += 400.0
    _save(pre, np.asarray(nib.load(str(pre)).dataobj, np.float32), far)
    cases["pre does not overlap"] = ("sub-01", "ses-02", pre, "does not overlap")
    # a FLAIR far away from its post: the session is counted from its T1 scans, with a
    # warning naming the FLAIR
    flair = root / _name("sub-01", "ses-01", "FLAIR")
    _save(flair, np.asarray(nib.load(str(root / _name("sub-01", "ses-01"))).dataobj, np.float32), far)
    cases["FLAIR does not overlap"] = ("sub-01", "ses-01", flair, "FLAIR not used")
    # duplicate session folders (ses-2 is ses-02) and a session without a post-contrast scan
    dup = root / "sub-01" / "ses-2"
    shutil.copytree(root / "sub-01" / "ses-02", dup)
    for f in (dup / "anat").iterdir():
        f.rename(f.with_name(f.name.replace("ses-02", "ses-2")))
    cases["duplicate session"] = ("sub-01", "ses-2", dup, "duplicate session")
    nopost = root / "sub-01" / "ses-03" / "anat"
    nopost.mkdir(parents=True)
    shutil.copy(pre, nopost / "sub-01_ses-03_T1w.nii.gz")
    cases["no post-contrast"] = ("sub-01", "ses-03", nopost, "no post-contrast")
    return root, cases


def _run(args) -> int:
    return main(["run", "--workers", "0", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def serial_run(corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("faults") / "out"
    cfg = out.parent / "cfg.json"
    cfg.write_text(json.dumps(tiny_cfg().to_dict()))
    rc = _run([root, "--out", out, "--config", cfg])
    return rc, out


def test_exit_code_says_something_failed(serial_run):
    rc, out = serial_run
    assert rc == 1
    assert (out / "errors.tsv").exists() and (out / "lesioncount.log").exists()


@pytest.mark.parametrize("case", [
    "zero bytes", "truncated", "not NIfTI", "NaN voxels", "Inf voxels", "4D", "2D",
    "singular affine", "missing affine", "absurd voxels", "bad follow-up", "bad baseline",
    "pre does not overlap", "FLAIR does not overlap", "duplicate session", "no post-contrast"])
def test_each_bad_input_has_a_one_line_error_naming_its_file(corpus, serial_run, case):
    _, cases = corpus
    _, out = serial_run
    sub, ses, path, words = cases[case]
    rows = [r for r in read_tsv(out / "errors.tsv") if r["subject"] == sub and r["session"] == ses]
    hits = [r for r in rows if r["file"] == str(path)]
    assert len(hits) == 1, (case, rows)
    reason = hits[0]["reason"]
    assert words.lower() in reason.lower(), reason
    assert reason and "\n" not in reason and len(reason) < 300
    level = "warning" if case in ("pre does not overlap", "FLAIR does not overlap") else "error"
    assert hits[0]["level"] == level


def test_the_rest_of_the_batch_is_counted(corpus, serial_run):
    _, out = serial_run
    counts = read_tsv(out / "counts.tsv")
    subjects = {r["subject"]: r for r in read_tsv(out / "subjects.tsv")}
    by = {(r["subject"], r["session"]) for r in counts}
    # the good subject keeps its two real visits (no duplicate, no post-less visit)
    assert {s for (sub, s) in by if sub == "sub-01"} == {"ses-01", "ses-02"}
    assert subjects["sub-01"]["complete"] == "true" and subjects["sub-01"]["cumulative_new_gd"]
    pre_used = {r["session"]: r["pre_used"] for r in counts if r["subject"] == "sub-01"}
    assert pre_used == {"ses-01": "true", "ses-02": "false"}
    # a bad follow-up: the baseline is counted, the subject is incomplete, no endpoint guessed
    assert {s for (sub, s) in by if sub == "sub-badfu"} == {"ses-01"}
    assert subjects["sub-badfu"]["complete"] == "false"
    assert subjects["sub-badfu"]["failed_sessions"] == "ses-02"
    # a failed baseline: no counts rather than wrong ones; its follow-up is not processed
    assert not {s for (sub, s) in by if sub == "sub-badbase"}
    assert subjects["sub-badbase"]["cumulative_new_gd"] == ""
    assert subjects["sub-badbase"]["eligible"] == ""
    errs = read_tsv(out / "errors.tsv")
    skip = [r for r in errs if (r["subject"], r["session"]) == ("sub-badbase", "ses-02")]
    assert len(skip) == 1 and "baseline session failed" in skip[0]["reason"]
    assert not (out / "sub-badbase" / "ses-02").exists()
    # nothing is half written or left over
    assert not list(out.rglob(".*.part*"))


def test_the_dask_run_records_the_same_errors_and_counts(corpus, serial_run, tmp_path):
    pytest.importorskip("distributed")
    root, _ = corpus
    _, ref = serial_run
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_cfg().to_dict()))
    rc = _run([root, "--out", out, "--config", cfg, "--workers", 2])
    assert rc == 1
    for t in ("errors.tsv", "counts.tsv", "subjects.tsv", "lesions.tsv"):
        assert (out / t).read_text() == (ref / t).read_text(), t


def test_a_dataset_with_no_subjects_is_a_usage_error_naming_the_folder(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run([empty, "--out", tmp_path / "out"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(empty) in err[0] and "no subject" in err[0]
    # subjects with no usable session are no better
    (empty / "sub-01" / "ses-01" / "anat").mkdir(parents=True)
    assert _run([empty, "--out", tmp_path / "out2"]) == 2
    assert "no subject with a usable session" in capsys.readouterr().err


def test_a_manifest_with_a_duplicate_row_and_a_missing_file(tmp_path):
    (tmp_path / "m.tsv").write_text(
        "subject\tsession\tpost\n01\tM0\tmissing.nii.gz\n01\tM0\tother.nii.gz\n")
    out = tmp_path / "out"
    assert _run([tmp_path / "m.tsv", "--out", out]) == 1
    rows = read_tsv(out / "errors.tsv")
    assert any("duplicate session" in r["reason"] for r in rows)
    miss = [r for r in rows if r["file"] == str(tmp_path / "missing.nii.gz")]
    assert len(miss) == 1 and "not found" in miss[0]["reason"]
