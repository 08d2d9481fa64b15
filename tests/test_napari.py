"""The napari plugin with a real viewer (pytest-qt, offscreen Qt): open, choose, reject, add."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
pytest.importorskip("napari", reason="napari is not installed (pip install lesioncount[napari])")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
try:
    from qtpy.QtWidgets import QApplication  # noqa: F401  (a Qt binding is importable)
except Exception as e:  # pragma: no cover - depends on the machine
    pytest.skip(f"Qt cannot start: {e}", allow_module_level=True)

from lesioncount.io import read_tsv
from lesioncount.review import read_log
from lesioncount.review.example import lesion_world
from lesioncount.review.layers import world_to_index
from lesioncount.napari._widget import _camera

pytestmark = pytest.mark.qt


@pytest.fixture
def _texture_limits_without_gl(monkeypatch):
    """Offscreen Qt has no OpenGL context: napari asks GL for texture limits and gets None.

    Nothing is drawn offscreen, so plausible limits let the layers build.
    """
    from napari._vispy.layers import base, image, labels
    from napari._vispy.utils import gl

    if os.environ.get("QT_QPA_PLATFORM") == "offscreen":  # (asking GL here would crash at exit)
        for mod in (base, image, labels, gl):
            monkeypatch.setattr(mod, "get_max_texture_sizes", lambda: (4096, 512))
        monkeypatch.setattr(image, "get_gl_extensions", lambda: "")


@pytest.fixture
def widget(_texture_limits_without_gl, make_napari_viewer, out, qtbot):
    from lesioncount.napari._widget import ReviewWidget

    viewer = make_napari_viewer()
    w = ReviewWidget(viewer, out=out, reader="DrQt")
    viewer.window.add_dock_widget(w, name="review")
    return w


def _press(widget, key):
    """Run what the viewer does for a key press (its keymap, as napari's key handler does)."""
    want = key.replace("-", "+").lower()
    funcs = [f for k, f in widget.viewer.keymap.items() if str(k).lower() == want]
    assert funcs, f"no key binding for {key}"
    funcs[0](widget.viewer)


def test_reader_contribution(out, tmp_path):
    from lesioncount.napari._reader import get_reader

    assert get_reader(str(tmp_path / "nothing-here")) is None
    assert get_reader(str(out / "counts.tsv")) is None
    reader = get_reader(str(out / "sub-01"))
    layers = reader(str(out / "sub-01"))
    names = [kw["name"] for _, kw, _ in layers]
    assert names[:4] == ["post-contrast", "pre-contrast", "enhancement", "lesions"]
    shapes = {d.shape for d, _, _ in layers}
    assert len(shapes) == 1  # every layer on the one display grid
    assert all(kw["metadata"]["lesioncount"]["subject"] == "sub-01" for _, kw, _ in layers)


def test_manifest_is_found_by_npe2():
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover()
    assert "lesioncount" in pm._manifests
    mf = pm.get_manifest("lesioncount")
    assert mf.contributions.readers and mf.contributions.widgets


def test_open_choose_reject_add_and_reviewed_counts(widget, out):
    w, viewer = widget, widget.viewer
    assert w.subject == "sub-01" and w.session == "ses-01"
    for name in ("post-contrast", "pre-contrast", "enhancement", "lesions", "added lesions"):
        assert name in viewer.layers
    assert w.table.rowCount() == 1
    # ses-02 has A (persistent) and B (new); choosing B's row centres the view on B
    w.step_session(+1)
    assert w.session == "ses-02" and w.table.rowCount() == 2
    w.select_lesion(2)
    assert w.status_box.currentText() == "new"  # the drop-down follows the chosen lesion
    grid = w.review.grid("sub-01")
    expect = world_to_index(grid, lesion_world("B")) * grid.spacing
    assert viewer.dims.point[0] == pytest.approx(expect[0], abs=grid.spacing[0])
    assert np.allclose(_camera(viewer).center[-2:], expect[1:], atol=1.5)
    # reject it with the keyboard shortcut: the log has it, the counts follow
    _press(w, "R")
    rec = read_log(w.review.log.path)[-1]
    assert (rec["action"], rec["reader"], rec["lesion"]["lesion"]) == ("reject", "DrQt", 2)
    assert w.review.reviewed_counts("sub-01", "ses-02")["new_gd_count"] == 0
    assert "rejected" in w.table.item(1, 5).text()
    # 'N' moves to the next lesion, 'A' accepts it
    w.select_lesion(1)
    _press(w, "A")
    assert w.review.session_state("sub-01", "ses-02").lesions[1].verdict == "accepted"
    # ses-03: paint the missed lesion D, add it (status by overlap -> new), change C's status
    w.step_session(+1)
    assert w.session == "ses-03"
    paint = viewer.layers["paint missed lesion"]
    d = np.round(world_to_index(grid, lesion_world("D"))).astype(int)
    data = np.zeros(paint.data.shape, np.int32)
    data[d[0] - 2:d[0] + 3, d[1] - 2:d[1] + 3, d[2] - 2:d[2] + 3] = 1
    paint.data = data
    _press(w, "Shift-A")
    assert not viewer.layers["paint missed lesion"].data.any()
    assert viewer.layers["added lesions"].data.sum() == 125
    assert w.table.rowCount() == 3 and w.table.item(2, 2).text() == "new"
    w.select_lesion(2)  # C
    w.status_box.setCurrentText("persistent")
    w.status_btn.click()
    w.comment_edit.setText("adjacent to an old T2 lesion")
    w.comment_lesion_btn.click()
    w.signoff_btn.click()
    c = w.review.reviewed_counts("sub-01", "ses-03")
    # B (ses-03) became new because B at ses-02 was rejected; C is persistent; D added new
    assert (c["gd_count"], c["new_gd_count"], c["cumulative_new_gd"]) == (3, 2, 2)
    assert c["signed_off_by"] == "DrQt"
    w.review.write_reviewed()
    rows = {(r["subject"], r["session"]): r for r in read_tsv(out / "counts_reviewed.tsv")}
    assert rows[("sub-01", "ses-03")]["cumulative_new_gd"] == "2"
    les = [r for r in read_tsv(out / "lesions_reviewed.tsv") if r["session"] == "ses-03"]
    assert any(r["comment"] == "adjacent to an old T2 lesion" for r in les)


def test_a_lesion_kept_by_the_transient_rule_asks_to_be_checked(
        _texture_limits_without_gl, make_napari_viewer, out, qtbot):
    from lesioncount.io import write_tsv
    from lesioncount.napari._widget import TRANSIENT_HINT, ReviewWidget
    from lesioncount.outputs import LESIONS_COLUMNS

    rows = read_tsv(out / "lesions.tsv")
    for r in rows:  # ses-02's lesion 2 (B, new) was kept by the transient rule
        r["transient"] = (r["session"], r["lesion"]) == ("ses-02", "2")
    write_tsv(out / "lesions.tsv", rows, LESIONS_COLUMNS)
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer, out=out, reader="DrQt")
    w.step_session(+1)
    assert w.session == "ses-02"
    assert [w.table.item(r, 5).text() for r in range(2)] == ["", TRANSIENT_HINT]
    w.select_lesion(2)
    _press(w, "A")
    assert w.table.item(1, 5).text() == "accepted"  # decided: the hint gives way


def test_reopening_resumes_where_the_reader_left_off(_texture_limits_without_gl,
                                                    make_napari_viewer, out):
    from lesioncount.napari._widget import ReviewWidget
    from lesioncount.review import Review

    earlier = Review(out, "DrQt")  # an earlier sitting of the same reader
    earlier.accept("sub-01", "ses-03", 2)
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer, out=out, reader="DrQt")
    viewer.window.add_dock_widget(w, name="review")
    assert (w.subject, w.session) == ("sub-01", "ses-03")
    assert w.current_row()["lesion"] == 2
    assert "Resumed" in w.message.text()
    assert "accepted" in w.table.item(1, 5).text()


def test_a_real_phantom_output_opens_and_a_rejection_changes_its_counts(
        _texture_limits_without_gl, make_napari_viewer, phantom_run, tmp_path):
    import shutil

    from lesioncount.napari._widget import ReviewWidget

    _, auto_out, rc = phantom_run
    assert rc == 0
    out = tmp_path / "phantom_out"
    shutil.copytree(auto_out, out)
    auto = {(r["subject"], r["session"]): r for r in read_tsv(out / "counts.tsv")}
    subject, session = next(k for k, r in auto.items() if int(r["gd_count"]) > 0)
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer, out=out, reader="DrPhantom", subject=subject)
    viewer.window.add_dock_widget(w, name="review")
    while w.session != session:
        w.step_session(+1)
    assert w.table.rowCount() == int(auto[(subject, session)]["gd_count"])
    for name in ("post-contrast", "pre-contrast", "FLAIR", "enhancement", "lesions"):
        assert name in viewer.layers
    # the FLAIR is shown registered: on the display grid, bright where the lesion is
    fl, post = viewer.layers["FLAIR"].data, viewer.layers["post-contrast"].data
    assert fl.shape == post.shape and np.isfinite(fl).all() and fl.max() > 0
    w.select_lesion(1)
    _press(w, "R")
    c = w.review.reviewed_counts(subject, session)
    assert c["gd_count"] == int(auto[(subject, session)]["gd_count"]) - 1
    w.review.write_reviewed()
    rows = {(r["subject"], r["session"]): r for r in read_tsv(out / "counts_reviewed.tsv")}
    assert int(rows[(subject, session)]["gd_count"]) == c["gd_count"]
    # the automatic table is untouched
    assert read_tsv(out / "counts.tsv") == read_tsv(auto_out / "counts.tsv")
