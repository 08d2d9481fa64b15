"""napari plugin: central reader review of a lesioncount output folder.

The npe2 manifest (``napari.yaml``) declares a reader (an output folder, or one
``sub-*`` folder of it, opens as the layers of one session) and the review dock
widget. All Qt code is in :mod:`._widget`; everything it does is a call into
:mod:`lesioncount.review`. Importing this package imports neither napari nor Qt.
"""
from __future__ import annotations

from pathlib import Path


def launch(out: str | Path, subject: str | None = None, reader: str | None = None, *,
           block: bool = True):
    """Open napari with the review widget on ``out`` (``lesioncount review OUT``).

    Returns 0 after the window is closed (``block=True``), else the viewer.
    """
    import napari

    from ._widget import ReviewWidget

    viewer = napari.Viewer(title=f"lesioncount review: {Path(out).resolve()}")
    widget = ReviewWidget(viewer, out=out, reader=reader, subject=subject)
    viewer.window.add_dock_widget(widget, name="Gd+ lesion review", area="right")
    if not block:
        return viewer
    napari.run()
    return 0
