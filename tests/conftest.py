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
