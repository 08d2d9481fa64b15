"""Fixtures shared by several test modules."""
import shutil

import pytest


@pytest.fixture(scope="session")
def review_example_root(tmp_path_factory):
    """A tiny output folder in the contract's format (lesioncount.review.example), built once."""
    from lesioncount.review.example import write_example

    root = tmp_path_factory.mktemp("review_example")
    write_example(root)
    return root


@pytest.fixture
def out(review_example_root, tmp_path):
    """A fresh copy of the example output folder (inputs shared, read-only use)."""
    dst = tmp_path / "out"
    shutil.copytree(review_example_root / "out", dst)
    return dst


@pytest.fixture(scope="session")
def phantom_run(tmp_path_factory):
    """A small phantom study (2 subjects x 3 visits, 2 mm) run through ``lesioncount run``.

    Returns (study folder, output folder, exit code). Shared by the end-to-end tests and the
    napari test that opens a real pipeline output; tests must not modify the output folder
    (copy it first).
    """
    from lesioncount.cli import main
    from lesioncount.phantom import make_study

    root = tmp_path_factory.mktemp("e2e")
    study = make_study(root / "study", n_subjects=2, n_sessions=3, seed=11, backgrounds=("mni",),
                       whole_head_fraction=0.5, thick_slice_fraction=0.5, step_mm=2)
    out = root / "out"
    rc = main(["run", str(study), "--out", str(out), "--quiet"])
    return study, out, rc
