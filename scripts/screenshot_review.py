"""Screenshot of the reader review (napari + the review widget) in a real window.

Needs an X display: run under Xvfb, e.g.

    xvfb-run -a -s "-screen 0 1680x1000x24" python scripts/screenshot_review.py \
        [--out OUT] [--subject sub-01] [--session ses-02] [--png docs/review.png]

Without ``--out`` it writes the small example output folder of
:mod:`lesioncount.review.example` to a temporary folder and reviews that. The
decisions it makes (to show a rejected lesion) go to a throwaway reader's log.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="lesioncount output folder (default: the example)")
    ap.add_argument("--subject")
    ap.add_argument("--session")
    ap.add_argument("--lesion", type=int, help="lesion id to centre on")
    ap.add_argument("--reject", type=int, help="reject this lesion id first (to show it)")
    ap.add_argument("--png", default=str(Path(__file__).parents[1] / "docs" / "review.png"))
    ap.add_argument("--size", default="1680x1000")
    ap.add_argument("--zoom", type=float, default=1.0, help="extra zoom factor")
    args = ap.parse_args(argv)

    import napari
    from qtpy.QtWidgets import QApplication

    from lesioncount.napari._widget import ReviewWidget

    tmp = tempfile.mkdtemp(prefix="lesioncount-shot-")
    if args.out is None:
        from lesioncount.review.example import write_example

        out = write_example(tmp)
        subject, session = "sub-01", "ses-03"
        lesion, reject = 2, 1
    else:
        import shutil
        out = Path(tmp) / "out"  # a copy: the screenshot's decisions stay out of the real log
        shutil.copytree(args.out, out, ignore=shutil.ignore_patterns("review"))
        subject, session, lesion, reject = args.subject, args.session, args.lesion, args.reject

    w_px, h_px = (int(v) for v in args.size.split("x"))
    viewer = napari.Viewer(title="lesioncount review", show=True)
    viewer.window._qt_window.resize(w_px, h_px)
    widget = ReviewWidget(viewer, out=out, reader="Central reader", subject=subject)
    viewer.window.add_dock_widget(widget, name="Gd+ lesion review", area="right")
    subject = subject or widget.subject
    session = session or widget.session
    if reject is not None:
        widget.review.reject(subject, session, reject, reason="vessel")
    widget.go(subject, session, lesion=lesion)
    for _ in range(20):
        QApplication.processEvents()
    if lesion is None and widget._rows:
        widget.select_lesion(widget._rows[0]["lesion"])
    from lesioncount.napari._widget import _camera

    _camera(viewer).zoom = _camera(viewer).zoom * args.zoom
    for _ in range(20):
        QApplication.processEvents()
    png = Path(args.png)
    png.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(png), canvas_only=False)
    print(f"screenshot written to {png}")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
