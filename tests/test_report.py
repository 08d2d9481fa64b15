"""The QC report (issue 6): endpoint statistics, crops in baseline space, the HTML page,
and a load check in headless Chromium."""
from __future__ import annotations

import base64
import importlib.util
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("statsmodels")
pytest.importorskip("matplotlib")

from lesioncount.report import crops, stats, write_report  # noqa: E402
from lesioncount.report.data import load_study, registration_checks  # noqa: E402
from lesioncount.report.example import make_example_output  # noqa: E402

ROOT = Path(__file__).parents[1]


def _endpoint(html: str) -> dict:
    m = re.search(r"<script type='application/json' id='lesioncount-endpoint'>(.*?)</script>",
                  html, re.S)
    assert m, "no endpoint data block in the report"
    return json.loads(m.group(1).replace("<\\/", "</"))


def _images(html: str) -> list[tuple[str, str]]:
    return re.findall(r'<img src="([^"]*)" alt="([^"]*)"', html)


# ------------------------------------------------------------------------------ statistics


def _simulate(n_per_arm, rate_ratio, rng, alpha=0.7, base_rate=0.5, followups=6):
    """Cumulative counts from an NB2 model with a true group rate ratio and a baseline effect."""
    rows = []
    for grp, rr in (("il2", rate_ratio), ("placebo", 1.0)):
        for i in range(n_per_arm):
            base = int(rng.poisson(1.0))
            mu = base_rate * followups * rr * np.exp(0.25 * base)
            lam = rng.gamma(1 / alpha, alpha * mu)
            rows.append({"subject": f"{grp}-{i}", "group": grp, "y": int(rng.poisson(lam)),
                         "baseline": base, "followups": followups, "eligible": base <= 2})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("true_rr", [0.4, 1.0])
def test_rate_ratio_recovers_a_simulated_effect(true_rr):
    res = stats.compare_groups(_simulate(150, true_rr, np.random.default_rng(3)))
    assert res.model.startswith("negative binomial")
    assert res.baseline_adjusted
    assert res.ci_low < true_rr < res.ci_high
    assert res.ci_low < res.rate_ratio < res.ci_high
    assert res.alpha > 0.2  # the simulated overdispersion is seen (alpha 0.7)
    if true_rr < 1:
        assert res.ci_high < 1 and res.p_value < 0.001 and res.mannwhitney_p < 0.01


def test_rate_ratio_goes_the_right_way_in_trial_sized_arms():
    res = stats.compare_groups(_simulate(15, 0.3, np.random.default_rng(11)))
    assert res.rate_ratio < 1
    assert res.mean_treated < res.mean_control


def test_exposure_accounts_for_missed_visits():
    # same rate per follow-up scan in both arms, but the IL-2 arm missed half its visits
    df = pd.DataFrame({"subject": [f"s{i}" for i in range(20)],
                       "group": ["il2"] * 10 + ["placebo"] * 10,
                       "y": [1, 2, 1, 0, 2, 1, 1, 2, 0, 1] + [2, 4, 2, 0, 4, 2, 2, 4, 0, 2],
                       "baseline": [0, 1] * 10, "followups": [3] * 10 + [6] * 10})
    res = stats.compare_groups(df)
    assert res.rate_ratio == pytest.approx(1.0, abs=0.02)


def test_degenerate_data_give_notes_not_crashes():
    rng = np.random.default_rng(0)
    df = _simulate(5, 0.5, rng)
    zero = df.assign(y=0)
    res = stats.compare_groups(zero)
    assert res.rate_ratio is None and res.mannwhitney_p == 1.0
    assert any("not estimable" in n for n in res.notes)

    one_arm = stats.compare_groups(df[df.group == "placebo"])
    assert one_arm.rate_ratio is None and one_arm.mannwhitney_p is None
    assert any("two arms" in n for n in one_arm.notes)

    no_treated_lesion = df.assign(y=np.where(df.group == "il2", 0, df.y + 1))
    res = stats.compare_groups(no_treated_lesion)
    assert res.rate_ratio is None and res.mannwhitney_p < 0.05
    assert any("boundary" in n for n in res.notes)

    tiny = stats.compare_groups(df.iloc[[0, 5]].assign(y=[1, 3]))
    assert tiny.rate_ratio is None and any("too few" in n for n in tiny.notes)

    unnamed = stats.compare_groups(df.replace({"il2": "armB", "placebo": "armA"}))
    assert (unnamed.treated, unnamed.control) == ("armB", "armA")
    assert any("neither IL-2 nor placebo" in n for n in unnamed.notes)


def test_endpoint_curves_mean_and_interval():
    counts = pd.DataFrame({"subject": ["a"] * 3 + ["b"] * 3 + ["c"] * 3,
                           "session": ["ses-M00", "ses-M01", "ses-M02"] * 3,
                           "days": [0, 30, 60] * 3,
                           "cumulative_new_gd": [0, 1, 3, 0, 0, 0, 0, 2, 3]})
    subjects = pd.DataFrame({"subject": ["a", "b", "c"], "group": ["placebo"] * 3})
    cur = stats.endpoint_curves(stats.patient_lines(counts, subjects))
    last = cur[cur.visit == 2].iloc[0]
    assert last["mean"] == pytest.approx(2.0) and last["n"] == 3
    assert 0 <= last["low"] <= 2.0 <= last["high"] <= 3
    assert cur[cur.visit == 0].iloc[0][["mean", "low", "high"]].tolist() == [0, 0, 0]


# ------------------------------------------------------------------------------ crops


def test_plane_grid_is_in_display_orientation():
    g = crops.plane_grid((10.0, 20.0, 30.0), 20.0, 1.0, "axial")
    assert g.shape == (20, 20, 1)
    centre = g.world(np.array([9.5, 9.5, 0]))
    np.testing.assert_allclose(centre, [10, 20, 30])
    top_left, bottom_right = g.world(np.array([0, 0, 0])), g.world(np.array([19, 19, 0]))
    assert top_left[1] > bottom_right[1]  # anterior at the top
    assert top_left[0] > bottom_right[0]  # the patient's right on the left (radiological)


def test_composite_pre_transform_order(tmp_path):
    """Baseline -> session (translation a) then post -> pre (translation b): a + b."""
    import SimpleITK as sitk

    sitk.WriteTransform(sitk.TranslationTransform(3, [1.0, 0, 0]), str(tmp_path / "tb.tfm"))
    sitk.WriteTransform(sitk.Euler3DTransform((0, 0, 0), 0, 0, np.pi / 2, (0, 0, 0)),
                        str(tmp_path / "pp.tfm"))
    s = crops.SessionImages(None, None, None, None, tmp_path / "tb.tfm", tmp_path / "pp.tfm")
    p = s.pre_transform().TransformPoint((0.0, 0.0, 0.0))
    # translate first (1,0,0), then rotate 90 degrees about z: (0,1,0); the other order gives (1,0,0)
    np.testing.assert_allclose(p, (0, 1, 0), atol=1e-9)


def _panel_array(panel) -> np.ndarray:
    from PIL import Image as PILImage

    return np.asarray(PILImage.open(io.BytesIO(panel.png)).convert("RGB"))


def test_lesion_card_finds_the_lesion_on_a_moved_follow_up(tmp_path):
    out = make_example_output(tmp_path, groups=(("placebo", 1),), n_visits=2, seed=4)
    data = load_study(out)
    les = data.lesions[data.lesions.status == "new"].iloc[0]
    from lesioncount.report.html import session_images

    cur = session_images(data, "sub-01", les["session"], False)
    prev = session_images(data, "sub-01", "ses-M00", True)
    assert cur.to_baseline is not None  # the follow-up really moved
    assert np.abs(cur.to_baseline.GetParameters()).max() > 0.3
    panels = crops.lesion_panels([les.x, les.y, les.z], int(les.lesion), cur, prev)
    assert [p.title.split()[0] for p in panels] == ["post-contrast", "previous", "pre-contrast",
                                                   "enhancement"]
    post, before = _panel_array(panels[0]), _panel_array(panels[1])
    ring_px = np.all(post == crops.OUTLINE_RGB, axis=-1)
    assert ring_px.sum() > 20  # the lesion is outlined
    from scipy import ndimage as ndi

    inside = ndi.binary_fill_holes(ring_px) & ~ring_px
    assert inside.sum() > 20
    # bright inside the outline on the visit, not on the previous visit (it is new)
    assert post[inside, 0].mean() > before[inside, 0].mean() + 40


def test_registration_panels_checkerboard_matches_when_aligned(tmp_path):
    out = make_example_output(tmp_path, groups=(("il2", 1),), n_visits=2, seed=5)
    data = load_study(out)
    from lesioncount.report.html import session_images

    base = session_images(data, "sub-01", "ses-M00", True)
    fol = session_images(data, "sub-01", "ses-M01", False)
    board = _panel_array(crops.registration_panels(base, fol)[0])[..., 0].astype(float)
    fol.is_baseline = True  # pretend no transform: the session is shown where it lies
    fol._cache.pop("tb", None)
    fol.to_baseline_path = None
    moved = _panel_array(crops.registration_panels(base, fol)[0])[..., 0].astype(float)

    def seam(a):  # intensity jumps across the tile borders
        t = int(crops.CHECKER_MM / crops.REG_SPACING_MM)
        cols = np.arange(t, a.shape[1] - 1, t)
        return np.abs(a[:, cols] - a[:, cols - 1]).mean()
    assert seam(board) < seam(moved)


# ------------------------------------------------------------------------------ the page


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    out = make_example_output(root, groups=(("placebo", 3), ("il2", 3)),
                              new_per_visit={"placebo": 2, "il2": [1, 0, 0]}, n_visits=3,
                              failed=("sub-06", 1), seed=1)
    dest = write_report(out)
    return out, dest


def test_report_is_self_contained_with_every_section(study):
    out, dest = study
    html = dest.read_text()
    assert dest == out / "report.html"
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", html)  # nothing fetched
    assert "url(" not in html and "@import" not in html and "<link" not in html
    imgs = _images(html)
    assert imgs and all(src.startswith("data:image/png;base64,") for src, _ in imgs)
    for src, alt in imgs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n", alt
    data = load_study(out)
    for subj in data.subjects.subject:
        assert f"id='s-{subj}'" in html
    for sect in ("id='endpoint'", "id='eligibility'", "<h3>il2 vs placebo</h3>", "Automatic counts"):
        assert sect in html


def test_one_card_per_new_lesion_with_its_crops(study):
    out, dest = study
    html = dest.read_text()
    data = load_study(out)
    n_new = int((data.lesions.status == "new").sum())
    assert n_new > 5
    assert html.count("<div class='card lesion'><h4>") == n_new
    alts = [a for _, a in _images(html)]
    assert sum(a.startswith("post-contrast") for a in alts) == n_new
    assert sum(a.startswith("previous visit") for a in alts) == n_new
    assert sum(a.startswith("pre-contrast") for a in alts) == n_new


def test_a_lesion_kept_by_the_transient_rule_is_flagged_on_its_card(tmp_path):
    from lesioncount.io import read_tsv, write_tsv
    from lesioncount.outputs import LESIONS_COLUMNS

    out = make_example_output(tmp_path, groups=(("placebo", 1),), n_visits=3,
                              new_per_visit={"placebo": 2}, seed=2)
    rows = read_tsv(out / "lesions.tsv")
    new = [r for r in rows if r["status"] == "new"]
    assert len(new) >= 2
    for r in rows:
        r["transient"] = r is new[0]
    write_tsv(out / "lesions.tsv", rows, LESIONS_COLUMNS)
    html = write_report(out).read_text()
    assert html.count("kept because its enhancement comes and goes") == 1


def test_flagged_registration_is_shown_first(study):
    out, dest = study
    html = dest.read_text()
    ep = _endpoint(html)
    assert ep["flagged"] == [["sub-06", "ses-M01"]]
    assert html.index("Flagged registrations: look at these first") < html.index("id='endpoint'")
    sec = html[html.index("id='s-sub-06'"):]
    reg = sec[sec.index("Registration to baseline"):]
    assert reg.index("ses-M01") < reg.index("ses-M02")  # visit order would be M01, M02 anyway
    assert reg.index("FLAGGED") < reg.index("ses-M02")
    checks = registration_checks(load_study(out), "sub-06")
    assert [c.flagged for c in checks] == [False, True, False]


def test_flagged_visit_moves_ahead_of_ok_ones(tmp_path):
    out = make_example_output(tmp_path, groups=(("il2", 1),), n_visits=3, failed=("sub-01", 2))
    html = write_report(out).read_text()
    reg = html[html.index("Registration to baseline"):]
    assert reg.index("ses-M02") < reg.index("ses-M01")


def test_rate_ratio_in_the_report_goes_the_right_way(study):
    out, dest = study
    comp = _endpoint(dest.read_text())["comparison"]
    assert comp["treated"] == "il2" and comp["control"] == "placebo"
    assert comp["rate_ratio"] is not None and comp["rate_ratio"] < 1
    assert comp["mannwhitney_p"] is not None
    assert "rate ratio il2 / placebo" in dest.read_text()


def test_eligibility_table(tmp_path):
    out = make_example_output(tmp_path, groups=(("il2", 2),), n_visits=2)
    subj = pd.read_csv(out / "subjects.tsv", sep="\t")
    subj.loc[1, ["baseline_gd_count", "eligible"]] = [4, False]
    subj.to_csv(out / "subjects.tsv", sep="\t", index=False)
    html = write_report(out).read_text()
    table = html[html.index("id='eligibility'"):html.index("id='s-sub-01'")]
    assert "1 of 2 patients are eligible" in table
    assert table.count("excluded (&gt; 2)") == 1
    assert "baseline Gd+ count 4 &gt; 2" in html


def test_reviewed_counts_are_used_and_said(tmp_path):
    out = make_example_output(tmp_path, groups=(("il2", 2), ("placebo", 2)), n_visits=2)
    for t in ("counts", "subjects"):
        df = pd.read_csv(out / f"{t}.tsv", sep="\t")
        df["cumulative_new_gd"] = df["cumulative_new_gd"] + 7  # a reader's (visible) change
        df.to_csv(out / f"{t}_reviewed.tsv", sep="\t", index=False, na_rep="n/a")
    les = pd.read_csv(out / "lesions.tsv", sep="\t")
    les["review"] = "auto"
    added = les[les.status == "new"].iloc[[0]].assign(lesion=99, review="added", reader="dr-a")
    pd.concat([les, added]).to_csv(out / "lesions_reviewed.tsv", sep="\t", index=False,
                                   na_rep="n/a")
    html = write_report(out).read_text()
    assert "Reviewed counts." in html and "counts_reviewed.tsv" in html
    ep = _endpoint(html)
    assert ep["reviewed"] == ["counts_reviewed.tsv", "lesions_reviewed.tsv", "subjects_reviewed.tsv"]
    assert html.count("<div class='card lesion'>") == int((les.status == "new").sum()) + 1
    assert "reader: added (dr-a)" in html  # a lesion the reader added has its card too
    assert all(p["y"] >= 7 for p in ep["patients"])
    html2 = write_report(out, tmp_path / "auto.html", use_reviewed=False).read_text()
    assert "Automatic counts." in html2 and all(p["y"] < 7 for p in _endpoint(html2)["patients"])


def test_not_an_output_folder(tmp_path):
    from lesioncount.errors import InputError

    with pytest.raises(InputError, match="counts.tsv"):
        write_report(tmp_path)


def test_cli_report(study, tmp_path):
    from lesioncount.cli import main

    out, _ = study
    dest = tmp_path / "r.html"
    assert main(["report", str(out), "--dest", str(dest)]) == 0
    assert dest.stat().st_size > 10_000


# ------------------------------------------------------------------------------ browser


def _render_module():
    spec = importlib.util.spec_from_file_location("render_report", ROOT / "scripts" / "render_report.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


chromium = pytest.mark.skipif(_render_module().find_chromium() is None,
                              reason="chromium not installed (Debian: apt-get install chromium)")


@chromium
def test_report_loads_in_chromium_with_every_image(study, tmp_path):
    out, dest = study
    render = _render_module()
    rec = render.check_report(dest)
    assert rec["ok"], rec
    assert rec["images"] == len(_images(dest.read_text()))
    shot = render.screenshot(dest, tmp_path / "shot.png", 1000, 1400)
    from PIL import Image as PILImage

    px = np.asarray(PILImage.open(shot).convert("L"))
    assert px.shape == (1400, 1000) and px.std() > 10  # not a blank page


@chromium
def test_chromium_probe_catches_a_broken_image(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head><title>x</title></head><body>"
                    "<img src='data:image/png;base64,AAAA' alt='broken'></body></html>")
    rec = _render_module().check_report(page)
    assert not rec["ok"] and rec["bad_images"] == ["broken"]


def test_flair_registration_quality_is_shown_and_a_failed_one_flagged(tmp_path):
    out = make_example_output(tmp_path, groups=(("il2", 1),), n_visits=3)
    sides = sorted(out.glob("sub-01/ses-*/anat/*_desc-lesions_dseg.json"))
    assert len(sides) == 3
    for side_path, (q, failed) in zip(sides[1:], ((0.71, False), (0.12, True))):
        side = json.loads(side_path.read_text())
        side["registration"]["flair_to_post"] = {"quality": q, "failed": failed}
        side_path.write_text(json.dumps(side))
    checks = registration_checks(load_study(out), "sub-01")
    assert [c.flair_quality for c in checks] == [None, 0.71, 0.12]
    assert [c.flagged for c in checks] == [False, False, True]
    reg = write_report(out).read_text()
    reg = reg[reg.index("Registration to baseline"):]
    assert "FLAIR&rarr;post quality 0.71" in reg
    assert "FLAIR&rarr;post quality 0.12 (failed: FLAIR not used)" in reg
    assert reg.index("ses-M02") < reg.index("ses-M01")  # the flagged visit first
