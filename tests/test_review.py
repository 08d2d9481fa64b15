"""The reader review model (no Qt): log, alignment, decisions, reviewed counts, two readers."""
from __future__ import annotations


import numpy as np
import pytest

from lesioncount.errors import ReviewError
from lesioncount.io import file_sha256, read_tsv
from lesioncount.review import (DecisionLog, Review, apply_decisions, disagreements, load_tables,
                                read_log, review_study)
from lesioncount.review.example import lesion_world
from lesioncount.review.layers import display_grid, world_to_index
from lesioncount.image import Image


def _auto_hashes(out):
    return {p.name: file_sha256(p) for p in out.rglob("*") if p.is_file() and "review" not in p.parts
            and "_reviewed" not in p.name and p.name != "disagreements.tsv"}


def _counts(out, name="counts_reviewed.tsv"):
    return {(r["subject"], r["session"]): r for r in read_tsv(out / name)}


# ------------------------------------------------------------------ the log

def test_log_appends_with_reader_and_time_and_survives_a_torn_line(tmp_path):
    log = DecisionLog(tmp_path, "Dr. A. Smith")
    log.append("signoff", "sub-01", "ses-01")
    log.append("comment", "sub-01", "ses-02", text="motion")
    assert log.path.name == "decisions_reader-DrASmith.jsonl"
    with open(log.path, "ab") as f:  # a crash in the middle of a write
        f.write(b'{"v": 1, "time": "2024-01-01T00:00:00", "reader": "Dr. A. Sm')
    log.append("reject", "sub-01", "ses-02", lesion={"lesion": 2})
    recs = read_log(log.path)
    assert [r["action"] for r in recs] == ["signoff", "comment", "reject"]
    assert all(r["reader"] == "Dr. A. Smith" and r["time"].endswith("+00:00") for r in recs)
    assert len(log.path.read_text().splitlines()) == 4  # torn line kept, isolated, skipped


def test_reader_name_must_have_a_letter(tmp_path):
    with pytest.raises(ReviewError):
        DecisionLog(tmp_path, " -- ")


# ------------------------------------------------------------------ alignment

def test_display_grid_is_axial_radiological_and_covers_the_field_of_view():
    aff = np.diag([-2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = [10, -20, 5]
    g = display_grid(Image(np.zeros((10, 12, 8)), aff), 1.0)
    assert g.shape == (24, 24, 20)  # (z, y, x) extents 24, 24, 20 mm
    assert np.allclose(g.affine[:3, :3], [[0, 0, -1], [0, -1, 0], [1, 0, 0]])
    # the reference's voxel centres fall inside the grid
    ijk = world_to_index(g, Image(np.zeros((10, 12, 8)), aff).world(np.array([[0, 0, 0], [9, 11, 7]])))
    assert np.all(ijk > -0.5) and np.all(ijk < np.array(g.shape) - 0.5)


def test_every_visit_and_the_pre_scan_land_in_baseline_space(out):
    r = Review(out, "DrA")
    g = r.grid("sub-01")
    expected = {"ses-01": {"A": 1}, "ses-02": {"A": 1, "B": 2}, "ses-03": {"B": 1, "C": 2}}
    brain_centres = []
    for ses, labels in expected.items():
        lay = r.layers("sub-01", ses)
        assert lay.post.shape == lay.pre.shape == lay.labels.shape == g.shape
        for name in "ABCD":
            ijk = tuple(np.round(world_to_index(g, lesion_world(name))).astype(int))
            assert lay.labels[ijk] == labels.get(name, 0), (ses, name)
        # undetected lesion D is visible on the ses-03 scan, at its baseline position
        d = tuple(np.round(world_to_index(g, lesion_world("D"))).astype(int))
        assert (lay.post[d] > 150) == (ses == "ses-03")
        brain_centres += [np.argwhere(lay.post > 50).mean(0), np.argwhere(lay.pre > 50).mean(0)]
    spread = np.ptp(np.array(brain_centres), axis=0)
    assert np.all(spread < 0.5), spread  # visits and pre scans moved by 1-4 mm, realigned


# ------------------------------------------------------------------ decisions -> counts

def test_reject_add_and_status_change_give_the_reviewed_counts(out):
    before = _auto_hashes(out)
    r = Review(out, "DrA")
    assert r.reviewed_counts("sub-01", "ses-03")["cumulative_new_gd"] == 2
    r.reject("sub-01", "ses-02", 2, reason="vessel")  # B, the new lesion at ses-02
    c2, c3 = r.reviewed_counts("sub-01", "ses-02"), r.reviewed_counts("sub-01", "ses-03")
    assert (c2["gd_count"], c2["new_gd_count"], c2["cumulative_new_gd"]) == (1, 0, 0)
    # B at ses-03 was persistent from the rejected B: enhancement where none was -> new
    assert (c3["new_gd_count"], c3["cumulative_new_gd"]) == (2, 2)
    # the missed lesion D, painted at ses-03: overlaps nothing at ses-02 -> new
    g = r.grid("sub-01")
    mask = np.zeros(g.shape, bool)
    cd = np.round(world_to_index(g, lesion_world("D"))).astype(int)
    mask[cd[0] - 2:cd[0] + 3, cd[1] - 2:cd[1] + 3, cd[2] - 2:cd[2] + 3] = True
    rec = r.add_lesion("sub-01", "ses-03", mask)[0]
    assert rec["added"]["status"] == "new" and rec["added"]["volume_mm3"] == pytest.approx(125.0)
    assert np.allclose(rec["added"]["xyz"], lesion_world("D"), atol=1.0)
    assert r.reviewed_counts("sub-01", "ses-03")["new_gd_count"] == 3
    # painted over A's place at ses-02 -> persistent on A's track (status by overlap)
    mask2 = np.zeros(g.shape, bool)
    ca = np.round(world_to_index(g, lesion_world("A"))).astype(int)
    mask2[tuple(ca)] = True
    rec2 = r.add_lesion("sub-01", "ses-02", mask2)[0]
    assert rec2["added"]["status"] == "persistent" and rec2["added"]["track"] == 1
    r.remove_added("sub-01", "ses-02", rec2["added"]["id"])
    # a reader's status change: C at ses-03 new -> persistent
    r.set_status("sub-01", "ses-03", 2, "persistent")
    with pytest.raises(ReviewError):
        r.set_status("sub-01", "ses-01", 1, "new")  # baseline lesions are baseline
    r.sign_off("sub-01", "ses-03")
    r.write_reviewed()
    counts = _counts(out)
    assert [counts[("sub-01", s)]["new_gd_count"] for s in ("ses-01", "ses-02", "ses-03")] == \
        ["0", "0", "2"]
    assert counts[("sub-01", "ses-03")]["cumulative_new_gd"] == "2"
    assert counts[("sub-01", "ses-03")]["signed_off_by"] == "DrA"
    assert counts[("sub-01", "ses-03")]["auto_new_gd_count"] == "1"
    subj = {s["subject"]: s for s in read_tsv(out / "subjects_reviewed.tsv")}
    assert subj["sub-01"]["cumulative_new_gd"] == "2" and subj["sub-01"]["eligible"] == "true"
    les = read_tsv(out / "lesions_reviewed.tsv")
    assert [(x["session"], x["status"], x["review"]) for x in les] == [
        ("ses-01", "baseline", "auto"), ("ses-02", "persistent", "auto"),
        ("ses-03", "new", "status_rederived"), ("ses-03", "persistent", "status_changed"),
        ("ses-03", "new", "added")]
    auto_cols = list(read_tsv(out / "counts.tsv")[0])
    assert auto_cols == list(read_tsv(out / "counts_reviewed.tsv")[0])[:len(auto_cols)]
    assert _auto_hashes(out) == before  # automatic outputs untouched


def test_reopening_shows_where_the_reader_left_off(out):
    r = Review(out, "DrA")
    assert r.resume() is None
    r.accept("sub-01", "ses-02", 1)
    r.open("sub-01", "ses-03", 2)
    again = Review(out, "DrA")
    res = again.resume()
    assert (res["subject"], res["session"], res["lesion"]) == ("sub-01", "ses-03", 2)
    assert res["xyz"] == pytest.approx(list(lesion_world("C")), abs=0.5)
    assert again.state.session("sub-01", "ses-02").lesions[1].verdict == "accepted"
    assert Review(out, "DrB").resume() is None  # each reader has their own log


def test_decisions_survive_a_rerun_that_renumbers_lesions(out):
    r = Review(out, "DrA")
    r.reject("sub-01", "ses-03", 2)  # C
    # a rerun writes the same lesions with ids swapped (and a far-away extra lesion)
    rows = read_tsv(out / "lesions.tsv")
    text = (out / "lesions.tsv").read_text().splitlines()
    header = text[0].split("\t")
    new = []
    for line in text[1:]:
        cells = dict(zip(header, line.split("\t")))
        if cells["session"] == "ses-03":
            cells["lesion"] = {"1": "2", "2": "1"}[cells["lesion"]]
        new.append("\t".join(cells[h] for h in header))
    (out / "lesions.tsv").write_text("\n".join([text[0]] + new) + "\n")
    assert len(rows) == len(new)
    state = apply_decisions(load_tables(out), read_log(r.log.path))
    ses3 = state.session("sub-01", "ses-03")
    assert ses3.lesions[1].verdict == "rejected"  # C now has id 1
    assert ses3.lesions[2].verdict == "pending"
    assert not state.unmatched


def test_a_decision_whose_lesion_is_gone_is_reported_not_applied(out):
    r = Review(out, "DrA")
    r.reject("sub-01", "ses-02", 2)
    lines = (out / "lesions.tsv").read_text().splitlines()
    kept = [ln for ln in lines if not ("\tses-02\t2\t" in ln)]
    (out / "lesions.tsv").write_text("\n".join(kept) + "\n")
    state = apply_decisions(load_tables(out), read_log(r.log.path))
    assert len(state.unmatched) == 1 and state.unmatched[0]["action"] == "reject"


# ------------------------------------------------------------------ two readers

def test_two_readers_disagreements_and_adjudicator_last(out):
    a, b = Review(out, "DrA"), Review(out, "DrB")
    a.reject("sub-01", "ses-02", 2)
    b.accept("sub-01", "ses-02", 2)
    a.set_status("sub-01", "ses-03", 2, "persistent")
    b.accept("sub-01", "ses-03", 2)
    res = review_study(out, ["DrA", "DrB"])
    items = sorted((d["session"], d["item"], d["value_a"], d["value_b"]) for d in res.disagreements)
    assert ("ses-02", "lesion", "rejected", "new") in items
    assert ("ses-03", "lesion", "persistent", "new") in items
    assert ("ses-02", "new_gd_count", 0, 1) in items
    assert (out / "disagreements.tsv").exists()
    # DrB listed last wins: B kept at ses-02 and C new at ses-03
    c = _counts(out)
    assert c[("sub-01", "ses-02")]["new_gd_count"] == "1"
    assert c[("sub-01", "ses-03")]["cumulative_new_gd"] == "2"
    with pytest.raises(ReviewError):
        review_study(out)  # two readers, none named
    with pytest.raises(ReviewError):
        review_study(out, ["DrC"])


def test_same_decisions_no_disagreement(out):
    a, b = Review(out, "DrA"), Review(out, "DrB")
    for r in (a, b):
        r.reject("sub-01", "ses-02", 2)
    t = load_tables(out)
    sa = apply_decisions(t, read_log(a.log.path))
    sb = apply_decisions(t, read_log(b.log.path))
    assert disagreements(sa, sb, "DrA", "DrB") == []


def test_cli_reviewed_writes_tables(out, capsys):
    from lesioncount.cli import main

    Review(out, "DrA").reject("sub-01", "ses-02", 2)
    assert main(["reviewed", str(out), "--reader", "DrA"]) == 0
    c = _counts(out)
    assert (c[("sub-01", "ses-02")]["cumulative_new_gd"], c[("sub-01", "ses-02")]["gd_count"]) \
        == ("0", "1")
    assert main(["reviewed", str(out / "nope")]) == 2
