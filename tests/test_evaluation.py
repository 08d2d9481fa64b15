"""Evaluation on hand-made label maps with exact expected figures."""
import json

import numpy as np
import pytest

from lesioncount.evaluation import evaluate, format_table, wilson_ci95, write_evaluation
from lesioncount.image import Image
from lesioncount.io import save_image, write_tsv

SHAPE = (20, 20, 12)
AFF = np.array([[-1.0, 0, 0, 10], [0, 1.0, 0, -10], [0, 0, 3.0, -18], [0, 0, 0, 1]])
SUB = "sub-01"
SESS = ["ses-M00", "ses-M01"]


def box(lab, k, i, j, s):
    lab[i:i + 3, j:j + 3, s:s + 2] = k


def truth_maps():
    m0 = np.zeros(SHAPE, np.int16)
    box(m0, 1, 2, 2, 2)
    m1 = np.zeros(SHAPE, np.int16)
    box(m1, 1, 2, 2, 2)    # persistent (same place)
    box(m1, 2, 12, 12, 6)  # new
    return [m0, m1]


def write_truth(root, maps):
    rows_c, rows_l = [], []
    statuses = [["baseline"], ["persistent", "new"]]
    cum = 0
    for v, (ses, m) in enumerate(zip(SESS, maps)):
        d = root / SUB / ses / "anat"
        save_image(Image(m, AFF), d / f"{SUB}_{ses}_ce-gadolinium_desc-truth_dseg.nii.gz")
        mim = np.zeros(SHAPE, np.uint8)
        mim[16:19, 2:5, 8:10] = 1  # a vein
        save_image(Image(mim, AFF), d / f"{SUB}_{ses}_ce-gadolinium_desc-mimics_dseg.nii.gz")
        n_new = statuses[v].count("new") if v else 0
        cum += n_new
        rows_c.append(dict(subject=SUB, session=ses, days=28 * v, gd_count=int(m.max()),
                           new_gd_count=n_new, cumulative_new_gd=cum,
                           acquisition="2d3mm" if v else "3d1mm", whole_head=bool(v),
                           background="mni", has_pre=True))
        for k, st in enumerate(statuses[v], 1):
            rows_l.append(dict(subject=SUB, session=ses, lesion=k, track=k, status=st, kind="nodular",
                               volume_mm3=54.0, x=0, y=0, z=0, contrast=0.5, site="deep"))
    write_tsv(root / "truth_counts.tsv", rows_c, list(rows_c[0]))
    write_tsv(root / "truth_lesions.tsv", rows_l, list(rows_l[0]))
    write_tsv(root / "truth_subjects.tsv",
              [dict(subject=SUB, group="placebo", sessions=2, baseline_gd_count=1, eligible=True,
                    cumulative_new_gd=cum)],
              ["subject", "group", "sessions", "baseline_gd_count", "eligible", "cumulative_new_gd"])


def write_result(root, maps, counts, statuses, cumulative, eligible=True, skip=()):
    rows_c, rows_l = [], []
    for v, (ses, m) in enumerate(zip(SESS, maps)):
        if ses in skip:
            continue
        save_image(Image(m.astype(np.int16), AFF),
                   root / SUB / ses / "anat" / f"{SUB}_{ses}_ce-gadolinium_desc-lesions_dseg.nii.gz")
        rows_c.append(dict(subject=SUB, session=ses, days=28 * v, gd_count=counts[v][0],
                           new_gd_count=counts[v][1], cumulative_new_gd=0, status="ok"))
        for k, st in enumerate(statuses[v], 1):
            rows_l.append(dict(subject=SUB, session=ses, lesion=k, track=k, status=st,
                               volume_mm3=1, x=0, y=0, z=0))
    write_tsv(root / "counts.tsv", rows_c, ["subject", "session", "days", "gd_count", "new_gd_count",
                                            "cumulative_new_gd", "status"])
    write_tsv(root / "lesions.tsv", rows_l, ["subject", "session", "lesion", "track", "status",
                                             "volume_mm3", "x", "y", "z"])
    write_tsv(root / "subjects.tsv", [dict(subject=SUB, group="placebo", sessions=2, baseline_gd_count=1,
                                           eligible=eligible, cumulative_new_gd=cumulative)],
              ["subject", "group", "sessions", "baseline_gd_count", "eligible", "cumulative_new_gd"])


@pytest.fixture
def dirs(tmp_path):
    t, r = tmp_path / "truth", tmp_path / "out"
    write_truth(t, truth_maps())
    return t, r


def test_perfect_result(dirs):
    t, r = dirs
    write_result(r, truth_maps(), [(1, 0), (2, 1)], [["baseline"], ["persistent", "new"]], 1)
    ev = evaluate(r, t)
    assert ev["lesions"]["f1"] == 1.0 and ev["lesions"]["sensitivity"] == 1.0
    assert ev["lesions"]["precision"] == 1.0 and ev["lesions"]["false_positives_per_scan"] == 0.0
    assert ev["counts"]["gd_mean_abs_error"] == 0.0 and ev["counts"]["gd_fraction_exact"] == 1.0
    assert ev["counts"]["new_fraction_exact"] == 1.0 and ev["counts"]["followup_sessions"] == 1
    assert ev["subjects"]["cumulative_fraction_exact"] == 1.0
    assert ev["subjects"]["eligibility_agreement"] == 1.0
    assert ev["status"]["accuracy"] == 1.0 and ev["status"]["matched"] == 3
    assert ev["sessions"]["failed"] == 0
    assert "counted/true (* = not exact): sub-01 1/1\n" in format_table(ev)


def test_one_miss_one_false_positive(dirs):
    t, r = dirs
    m0 = np.zeros(SHAPE, np.int16)
    box(m0, 1, 3, 3, 3)     # overlaps truth lesion 1 by one corner region: a match
    m1 = np.zeros(SHAPE, np.int16)
    box(m1, 1, 2, 2, 2)     # the persistent one, found
    m1[16:19, 2:5, 8:10] = 2  # a false positive on the vein; the new lesion is missed
    # statuses as the result claims: the matched persistent lesion called "new"
    write_result(r, [m0, m1], [(1, 0), (2, 2)], [["baseline"], ["new", "new"]], 2, eligible=False)
    ev = evaluate(r, t)
    les = ev["lesions"]
    assert (les["true_lesions"], les["detected_true"], les["detections"], les["false_positives"]) == (3, 2, 3, 1)
    assert les["sensitivity"] == pytest.approx(2 / 3)
    assert les["precision"] == pytest.approx(2 / 3)
    assert les["f1"] == pytest.approx(2 / 3)
    assert les["false_positives_per_scan"] == pytest.approx(0.5)
    assert ev["counts"]["gd_mean_abs_error"] == 0.0  # 2 found of 2 true: the count is right by luck
    assert ev["counts"]["new_mean_error"] == 1.0 and ev["counts"]["new_fraction_exact"] == 0.0
    assert ev["subjects"]["cumulative_mean_abs_error"] == 1.0
    assert ev["subjects"]["cumulative_fraction_exact"] == 0.0
    assert ev["subjects"]["eligibility_agreement"] == 0.0
    assert ev["status"]["matched"] == 2 and ev["status"]["accuracy"] == 0.5
    assert ev["status"]["confusion"]["persistent"] == {"new": 1}
    assert ev["false_positives_on"] == {"vein": 1}
    assert ev["by_acquisition"]["3d1mm"]["sensitivity"] == 1.0
    assert ev["by_acquisition"]["2d3mm"]["sensitivity"] == 0.5
    assert ev["by_acquisition"]["2d3mm"]["false_positives"] == 1
    assert ev["sensitivity_by"]["status"]["new"] == {"detected": 0, "total": 1, "sensitivity": 0.0}
    lo, hi = les["sensitivity_ci95"]
    assert lo < 2 / 3 < hi and (lo, hi) == pytest.approx(wilson_ci95(2, 3))
    assert ev["subjects"]["cumulative_exact_ci95"] == pytest.approx(wilson_ci95(0, 1))
    txt = format_table(ev)
    assert "66.7%" in txt and "vein 1" in txt
    assert f"sensitivity (95% CI {100 * lo:.0f}-{100 * hi:.0f}%)" in txt
    assert "counted/true (* = not exact): sub-01 2/1 *" in txt


def test_lesions_kept_by_the_transient_rule_are_scored_apart(dirs):
    """The FP on the vein and the true persistent lesion of the test above, both flagged
    as kept by the transient rule: one true, one false positive."""
    from lesioncount.io import read_tsv

    t, r = dirs
    m0 = np.zeros(SHAPE, np.int16)
    box(m0, 1, 3, 3, 3)
    m1 = np.zeros(SHAPE, np.int16)
    box(m1, 1, 2, 2, 2)
    m1[16:19, 2:5, 8:10] = 2
    write_result(r, [m0, m1], [(1, 0), (2, 2)], [["baseline"], ["new", "new"]], 2)
    assert "Kept by the transient" not in format_table(evaluate(r, t))  # no such column
    rows = read_tsv(r / "lesions.tsv")
    for row in rows:
        row["transient"] = row["session"] == SESS[1]
    write_tsv(r / "lesions.tsv", rows, list(rows[0]))
    ev = evaluate(r, t)
    assert ev["transient"] == {"detections": 2, "true": 1, "false_positives": 1}
    assert "Kept by the transient-enhancement rule: 2 detections, 1 true, 1 false positives" \
        in format_table(ev)


def test_failed_session_is_counted_not_fatal(dirs, tmp_path):
    t, r = dirs
    write_result(r, truth_maps(), [(1, 0), (2, 1)], [["baseline"], ["persistent", "new"]], 1,
                 skip=("ses-M01",))
    ev = evaluate(r, t)
    assert ev["sessions"] == {"total": 2, "evaluated": 1, "failed": 1,
                              "failed_sessions": [{"subject": SUB, "session": "ses-M01",
                                                   "reason": "no row in counts.tsv"}]}
    assert ev["lesions"]["scans"] == 1 and ev["lesions"]["f1"] == 1.0
    assert ev["subjects"]["complete"] == 0 and ev["subjects"]["cumulative_mean_abs_error"] is None
    assert ev["subjects"]["eligibility_agreement"] == 1.0  # baseline was evaluated
    dest = write_evaluation(ev, tmp_path / "ev.json")
    assert json.loads(dest.read_text())["sessions"]["failed"] == 1
    assert "failed: sub-01 ses-M01" in format_table(ev)


def test_label_map_on_wrong_grid_fails_the_session(dirs):
    t, r = dirs
    write_result(r, truth_maps(), [(1, 0), (2, 1)], [["baseline"], ["persistent", "new"]], 1)
    p = r / SUB / "ses-M01" / "anat" / f"{SUB}_ses-M01_ce-gadolinium_desc-lesions_dseg.nii.gz"
    save_image(Image(np.zeros((20, 20, 36), np.int16), np.diag([1.0, 1, 1, 1])), p)
    ev = evaluate(r, t)
    assert ev["sessions"]["failed"] == 1 and "grid" in ev["sessions"]["failed_sessions"][0]["reason"]


def test_endpoint_per_arm_and_ratio_of_the_means():
    """Two arms: each arm's mean cumulative new count as counted and as true, the fraction
    counted, and the ratio of the means; incomplete subjects are left out."""
    from lesioncount.evaluation import _subject_figures

    subjects = [("s1", "il2", 2, 2), ("s2", "il2", 1, 2), ("s3", "placebo", 6, 8),
                ("s4", "placebo", 4, 4), ("s5", "placebo", 0, 9)]  # s5: a session failed
    t_counts = [dict(subject=s, session=e) for s, *_ in subjects for e in ("ses-1", "ses-2")]
    t_subjects = [dict(subject=s, group=g, cumulative_new_gd=str(t), eligible="true")
                  for s, g, _, t in subjects]
    r_subjects = {s: dict(cumulative_new_gd=str(c), eligible="true") for s, _, c, _ in subjects}
    ok = {(s, e) for s, *_ in subjects for e in ("ses-1", "ses-2")} - {("s5", "ses-2")}
    fig = _subject_figures(t_counts, t_subjects, r_subjects, ok)
    il2, pla = fig["arms"]["il2"], fig["arms"]["placebo"]
    assert (il2["subjects"], il2["mean_cumulative_new"], il2["true_mean_cumulative_new"]) == (2, 1.5, 2.0)
    assert (pla["subjects"], pla["mean_cumulative_new"], pla["true_mean_cumulative_new"]) == (2, 5.0, 6.0)
    assert il2["fraction_counted"] == 0.75 and pla["fraction_counted"] == 10 / 12
    assert fig["arm_ratio"]["arms"] == ["il2", "placebo"]
    assert fig["arm_ratio"]["counted"] == 1.5 / 5.0 and fig["arm_ratio"]["true"] == 2.0 / 6.0
    # one arm only: no ratio
    one = _subject_figures(t_counts, [dict(t, group="il2") for t in t_subjects], r_subjects, ok)
    assert one["arm_ratio"] is None and one["arms"]["il2"]["subjects"] == 4


def test_subject_figures_per_acquisition_type():
    """Cumulative exactness and eligibility split by each subject's acquisition and
    whole-head flag (issue 2 asks for each figure per acquisition type); a subject whose
    visits differ is 'mixed'; a subject with a failed baseline has no eligibility figure."""
    from lesioncount.evaluation import _subject_figures, _Tally

    # subject, acquisition per visit, whole head, counted, true, eligible counted / true
    subjects = [("s1", ("3d1mm", "3d1mm"), "true", 2, 2, "true", "true"),
                ("s2", ("3d1mm", "3d1mm"), "false", 1, 2, "false", "true"),
                ("s3", ("2d3mm", "2d3mm"), "false", 4, 4, "true", "true"),
                ("s4", ("2d3mm", "3d1mm"), "false", 0, 0, "true", "true")]
    t_counts = [dict(subject=s, session=f"ses-{i}", acquisition=a, whole_head=w)
                for s, acq, w, *_ in subjects for i, a in enumerate(acq)]
    t_subjects = [dict(subject=s, cumulative_new_gd=str(t), eligible=te)
                  for s, _, _, _, t, _, te in subjects]
    r_subjects = {s: dict(cumulative_new_gd=str(c), eligible=e) for s, _, _, c, _, e, _ in subjects}
    ok = {(r["subject"], r["session"]) for r in t_counts} - {("s3", "ses-0")}
    fig = _subject_figures(t_counts, t_subjects, r_subjects, ok)
    acq = fig["by_acquisition"]
    assert set(acq) == {"3d1mm", "2d3mm", "mixed"}
    assert (acq["3d1mm"]["subjects"], acq["3d1mm"]["complete"]) == (2, 2)
    assert acq["3d1mm"]["cumulative_fraction_exact"] == 0.5 and acq["3d1mm"]["cumulative_exact"] == 1
    assert acq["3d1mm"]["eligibility_agreement"] == 0.5
    # s3's baseline failed: neither its cumulative count nor its eligibility is scored
    assert acq["2d3mm"]["complete"] == 0 and acq["2d3mm"]["eligibility_evaluated"] == 0
    assert acq["mixed"]["cumulative_fraction_exact"] == 1.0
    wh = fig["by_whole_head"]
    assert wh["true"]["cumulative_fraction_exact"] == 1.0 and wh["false"]["complete"] == 2
    # the overall figures are those of all subjects together
    assert fig["complete"] == 3 and fig["cumulative_fraction_exact"] == 2 / 3
    assert fig["eligibility_evaluated"] == 3 and fig["eligibility_agreement"] == 2 / 3
    table = format_table({"sessions": {"evaluated": 7, "total": 8, "failed": 1, "failed_sessions": []},
                          "lesions": _Tally().figures(),
                          "counts": dict.fromkeys(("gd_mean_abs_error", "gd_mean_error",
                                                   "gd_fraction_exact", "new_mean_abs_error",
                                                   "new_mean_error", "new_fraction_exact",
                                                   "followup_sessions")), "subjects": fig,
                          "status": {"matched": 0, "accuracy": None, "confusion": {}},
                          "by_acquisition": {}, "by_whole_head": {}, "by_has_pre": {},
                          "sensitivity_by": {}, "false_positives_on": {}, "transient": {}})
    assert "acq=3d1mm: cumulative new exact 1/2, eligibility 1/2 (2 subjects)" in table


def test_wilson_interval_of_a_proportion():
    # Wilson score interval, 95 %: 43 of 48 (the held-out injections) and the edges
    lo, hi = wilson_ci95(43, 48)
    assert (lo, hi) == pytest.approx((0.7783, 0.9547), abs=1e-4)
    lo0, hi0 = wilson_ci95(0, 10)
    assert lo0 == pytest.approx(0.0, abs=1e-12) and 0.25 < hi0 < 0.35
    lo1, hi1 = wilson_ci95(10, 10)
    assert hi1 == pytest.approx(1.0) and 0.65 < lo1 < 0.75
    assert wilson_ci95(0, 0) is None
