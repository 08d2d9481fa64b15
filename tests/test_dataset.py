"""Finding subjects and sessions in BIDS folders and manifests."""
import pytest

from lesioncount.dataset import discover, natural_key, parse_bids_name
from lesioncount.errors import LayoutError


def touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def make_bids(root, subjects=("01", "02"), sessions=("M0", "M1", "M6", "M12"), pre=True):
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    (root / "participants.tsv").write_text("participant_id\tgroup\n" +
                                           "".join(f"sub-{s}\t{'il2' if i else 'placebo'}\n"
                                                   for i, s in enumerate(subjects)))
    for s in subjects:
        for v in sessions:
            anat = root / f"sub-{s}" / f"ses-{v}" / "anat"
            touch(anat / f"sub-{s}_ses-{v}_ce-gadolinium_T1w.nii.gz")
            if pre:
                touch(anat / f"sub-{s}_ses-{v}_T1w.nii")
            touch(anat / f"sub-{s}_ses-{v}_FLAIR.nii.gz")
    return root


def test_natural_order():
    assert sorted(["M12", "M1", "M6", "M0"], key=natural_key) == ["M0", "M1", "M6", "M12"]


def test_parse_bids_name_with_other_entities():
    ents, suffix = parse_bids_name("sub-01_ses-M0_acq-3d_ce-gadolinium_rec-norm_run-2_T1w.nii.gz")
    assert suffix == "T1w" and ents["ce"] == "gadolinium" and ents["run"] == "2"
    assert parse_bids_name("README") is None


def test_bids_sessions_in_natural_order_with_pre_flair_and_group(tmp_path):
    st = discover(make_bids(tmp_path / "ds"))
    assert [s.subject for s in st.subjects] == ["sub-01", "sub-02"]
    s1 = st.subjects[0]
    assert [v.session for v in s1.sessions] == ["ses-M0", "ses-M1", "ses-M6", "ses-M12"]
    assert s1.group == "placebo" and st.subjects[1].group == "il2"
    assert s1.baseline.pre.name == "sub-01_ses-M0_T1w.nii"
    assert s1.baseline.flair is not None and s1.baseline.days is None
    assert not st.problems


def test_acq_time_orders_visits_and_gives_days(tmp_path):
    root = make_bids(tmp_path / "ds", subjects=("01",), sessions=("b", "a"))
    (root / "sub-01" / "sub-01_sessions.tsv").write_text(
        "session_id\tacq_time\nses-a\t2020-03-01T10:00:00\nses-b\t2020-01-31T10:00:00\n")
    s = discover(root).subjects[0]
    assert [v.session for v in s.sessions] == ["ses-b", "ses-a"]
    assert s.sessions[0].days == 0 and s.sessions[1].days == pytest.approx(30.0)


def test_session_without_post_is_a_recorded_problem_not_a_crash(tmp_path):
    root = make_bids(tmp_path / "ds", subjects=("01",), sessions=("M0", "M1"))
    (root / "sub-01/ses-M1/anat/sub-01_ses-M1_ce-gadolinium_T1w.nii.gz").unlink()
    st = discover(root)
    assert [v.session for v in st.subjects[0].sessions] == ["ses-M0"]
    assert len(st.problems) == 1 and "post-contrast" in st.problems[0].reason
    assert st.problems[0].session == "ses-M1"


def test_empty_and_unknown_layouts_raise_layout_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="empty"):
        discover(tmp_path / "empty")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "scan.nii.gz").write_bytes(b"x")
    with pytest.raises(LayoutError, match="unknown layout"):
        discover(tmp_path / "odd")
    with pytest.raises(LayoutError):
        discover(tmp_path / "missing")
    ds = make_bids(tmp_path / "nosess", subjects=("01",), sessions=())
    (ds / "sub-01").mkdir(exist_ok=True)
    with pytest.raises(LayoutError, match="no subject"):
        discover(ds)


def test_manifest_with_relative_paths_duplicates_and_groups(tmp_path):
    for f in ("a0.nii.gz", "a1.nii.gz", "p0.nii.gz", "b0.nii"):
        touch(tmp_path / "scans" / f)
    m = tmp_path / "study.tsv"
    m.write_text("subject\tsession\tpost\tpre\tacq_time\tgroup\n"
                 "01\tM1\tscans/a1.nii.gz\t\t2021-02-01\til2\n"
                 "01\tM0\tscans/a0.nii.gz\tscans/p0.nii.gz\t2021-01-01\til2\n"
                 "01\tM0\tscans/a0.nii.gz\t\t2021-01-01\til2\n"
                 "sub-02\tses-1\tscans/b0.nii\t\t\tplacebo\n")
    st = discover(m)
    assert st.layout == "manifest"
    s1 = st.subject("sub-01")
    assert [v.session for v in s1.sessions] == ["ses-M0", "ses-M1"]
    assert s1.sessions[0].pre == tmp_path / "scans" / "p0.nii.gz"
    assert s1.sessions[1].days == 31 and s1.group == "il2"
    assert len(st.problems) == 1 and "duplicate" in st.problems[0].reason
    assert discover(tmp_path).layout == "manifest"  # a folder holding one manifest


def test_manifest_missing_columns(tmp_path):
    m = tmp_path / "m.tsv"
    m.write_text("subject\tscan\n01\tx.nii.gz\n")
    with pytest.raises(LayoutError, match="session, post"):
        discover(m)
