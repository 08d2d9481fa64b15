"""The README's main command, `lesioncount demo`, end to end on its smallest study."""
import json

import pytest

from lesioncount.cli import main
from lesioncount.io import read_tsv

pytestmark = pytest.mark.slow


def test_demo_makes_counts_and_scores_a_phantom_study(tmp_path, capsys):
    work = tmp_path / "demo"
    rc = main(["demo", "--out", str(work), "--subjects", "1", "--sessions", "2",
               "--workers", "0", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "Per-subject endpoint" in text and "Against the phantom's truth" in text
    assert "lesion-wise" in text and "Cumulative new per subject" in text
    out = work / "derivatives"
    subjects = read_tsv(out / "subjects.tsv")
    assert [s["subject"] for s in subjects] == ["sub-01"]
    assert len(read_tsv(out / "counts.tsv")) == 2
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["sessions"]["evaluated"] == 2 and ev["lesions"]["scans"] == 2
    # a second run finds every session unchanged and gives the same endpoint
    rc2 = main(["demo", "--out", str(work), "--subjects", "1", "--sessions", "2",
                "--workers", "0", "--quiet"])
    assert rc2 == 0 and read_tsv(out / "subjects.tsv") == subjects
