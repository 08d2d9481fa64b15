"""The review dock widget: all of lesioncount's Qt code, a thin shell over lesioncount.review.

Keys (viewer-wide): ``N`` next lesion, ``Shift+N`` previous lesion, ``A`` accept,
``R`` reject, ``Shift+A`` add the painted lesion.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (QAbstractItemView, QComboBox, QFileDialog, QFormLayout, QGridLayout,
                            QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QMessageBox,
                            QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from ..errors import LesionCountError
from ..review import Review, default_reader
from ..review.layers import world_to_index
from ._reader import STATUS_COLOURS, added_colours, label_colours, session_layer_data

log = logging.getLogger(__name__)

COLUMNS = ["#", "track", "status", "mm³", "location", "decision"]
# Shown for a pending lesion that the tracking kept although the detector had set it aside
# (lesions.tsv "transient"): the least certain automatic lesions.
TRANSIENT_HINT = "check: comes and goes"
PAINT_LAYER = "paint missed lesion"
KEYS = {"N": "next_lesion", "Shift-N": "previous_lesion", "A": "accept", "R": "reject",
        "Shift-A": "add_painted"}


def _camera(viewer):
    """The camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _text_overlay(viewer):
    canvas = getattr(viewer, "canvas", None)
    return canvas.overlays["text"] if canvas is not None else viewer.text_overlay


def _hex(rgba) -> str:
    return QColor.fromRgbF(*rgba[:3]).name()


class ReviewWidget(QWidget):
    """Dock widget: navigation, lesion table, decisions, painting, comments, sign-off.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    out : path, optional
        Output folder; omitted, taken from layers opened by the lesioncount reader, or
        chosen with the "Open folder" button.
    reader, subject : str, optional
    """

    def __init__(self, napari_viewer, out: str | Path | None = None, reader: str | None = None,
                 subject: str | None = None):
        super().__init__()
        self.viewer = napari_viewer
        self.review: Review | None = None
        self.subject: str | None = None
        self.session: str | None = None
        self._rows: list[dict] = []
        self._busy = False
        self._build(reader or default_reader())
        self._bind_keys()
        if out is None:
            out = self._out_from_layers()
        if out is not None:
            self.open_folder(out, subject=subject)

    # ------------------------------------------------------------------ layout
    def _build(self, reader: str) -> None:
        self.setObjectName("lesioncount-review")
        self.setMinimumWidth(430)
        v = QVBoxLayout(self)
        v.setContentsMargins(6, 6, 6, 6)

        top = QFormLayout()
        self.reader_edit = QLineEdit(reader)
        self.reader_edit.setToolTip("Your name: recorded with every decision")
        self.reader_edit.editingFinished.connect(self._reader_changed)
        row = QHBoxLayout()
        row.addWidget(self.reader_edit)
        self.open_btn = QPushButton("Open folder…")
        self.open_btn.clicked.connect(self._choose_folder)
        row.addWidget(self.open_btn)
        top.addRow("Reader", row)
        self.subject_box = QComboBox()
        self.subject_box.currentTextChanged.connect(self._subject_chosen)
        top.addRow("Subject", self.subject_box)
        nav = QHBoxLayout()
        self.prev_ses = QPushButton("◀")
        self.prev_ses.setFixedWidth(34)
        self.prev_ses.clicked.connect(lambda: self.step_session(-1))
        self.session_box = QComboBox()
        self.session_box.currentTextChanged.connect(self._session_chosen)
        self.next_ses = QPushButton("▶")
        self.next_ses.setFixedWidth(34)
        self.next_ses.clicked.connect(lambda: self.step_session(+1))
        nav.addWidget(self.prev_ses)
        nav.addWidget(self.session_box, 1)
        nav.addWidget(self.next_ses)
        top.addRow("Session", nav)
        v.addLayout(top)

        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.RichText)
        v.addWidget(self.summary)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        hdr = self.table.horizontalHeader()
        hdr.setSectionResizeMode(QHeaderView.ResizeToContents)
        hdr.setSectionResizeMode(4, QHeaderView.Stretch)
        self.table.setMinimumHeight(170)
        self.table.itemSelectionChanged.connect(self._row_chosen)
        v.addWidget(self.table, 1)

        dec = QGroupBox("Lesion")
        g = QGridLayout(dec)
        self.accept_btn = QPushButton("Accept  [A]")
        self.reject_btn = QPushButton("Reject  [R]")
        self.prev_btn = QPushButton("Previous  [Shift+N]")
        self.next_btn = QPushButton("Next  [N]")
        self.accept_btn.clicked.connect(self.accept)
        self.reject_btn.clicked.connect(self.reject)
        self.prev_btn.clicked.connect(self.previous_lesion)
        self.next_btn.clicked.connect(self.next_lesion)
        g.addWidget(self.accept_btn, 0, 0)
        g.addWidget(self.reject_btn, 0, 1)
        g.addWidget(self.prev_btn, 1, 0)
        g.addWidget(self.next_btn, 1, 1)
        self.status_box = QComboBox()
        self.status_box.addItems(["new", "persistent", "baseline"])
        self.status_btn = QPushButton("Set status")
        self.status_btn.clicked.connect(lambda: self.set_status(self.status_box.currentText()))
        g.addWidget(self.status_box, 2, 0)
        g.addWidget(self.status_btn, 2, 1)
        v.addWidget(dec)

        paint = QGroupBox("Missed lesion")
        p = QGridLayout(paint)
        self.paint_btn = QPushButton("Paint")
        self.paint_btn.setCheckable(True)
        self.paint_btn.toggled.connect(self._paint_mode)
        self.add_status = QComboBox()
        self.add_status.addItems(["status by overlap", "new", "persistent", "baseline"])
        self.add_btn = QPushButton("Add painted  [Shift+A]")
        self.add_btn.clicked.connect(self.add_painted)
        p.addWidget(self.paint_btn, 0, 0)
        p.addWidget(self.add_status, 0, 1)
        p.addWidget(self.add_btn, 1, 0, 1, 2)
        v.addWidget(paint)

        com = QGroupBox("Comment and sign-off")
        c = QGridLayout(com)
        self.comment_edit = QLineEdit()
        self.comment_edit.setPlaceholderText("free text, e.g. 'vessel', 'motion artefact'")
        self.comment_lesion_btn = QPushButton("On lesion")
        self.comment_session_btn = QPushButton("On session")
        self.comment_lesion_btn.clicked.connect(lambda: self.add_comment(on_lesion=True))
        self.comment_session_btn.clicked.connect(lambda: self.add_comment(on_lesion=False))
        self.signoff_btn = QPushButton("Sign off session")
        self.signoff_btn.clicked.connect(self.toggle_signoff)
        c.addWidget(self.comment_edit, 0, 0, 1, 2)
        c.addWidget(self.comment_lesion_btn, 1, 0)
        c.addWidget(self.comment_session_btn, 1, 1)
        c.addWidget(self.signoff_btn, 2, 0, 1, 2)
        v.addWidget(com)

        legend = QHBoxLayout()
        legend.addWidget(QLabel("Legend:"))
        for name in ("baseline", "new", "persistent", "rejected"):
            sw = QLabel(f"<span style='color:{_hex(STATUS_COLOURS[name])}; font-size:15px'>■"
                        f"</span> {name}")
            sw.setTextFormat(Qt.RichText)
            legend.addWidget(sw)
        legend.addStretch(1)
        v.addLayout(legend)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        v.addWidget(self.message)

    def _bind_keys(self) -> None:
        for key, name in KEYS.items():
            method = getattr(self, name)
            self.viewer.bind_key(key, lambda _viewer, m=method: m(), overwrite=True)

    # ------------------------------------------------------------------ folder and navigation
    def _out_from_layers(self):
        for layer in self.viewer.layers:
            meta = (layer.metadata or {}).get("lesioncount")
            if meta:
                return meta["out"]
        return None

    def _choose_folder(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "lesioncount output folder")
        if d:
            self.open_folder(d)

    def _reader_changed(self) -> None:
        if self.review is not None and self.reader_edit.text().strip() != self.review.reader:
            self.open_folder(self.review.out, subject=self.subject)

    def open_folder(self, out, subject: str | None = None) -> None:
        """Open an output folder at ``subject``, else where this reader left off."""
        try:
            self.review = Review(out, self.reader_edit.text().strip() or default_reader())
        except LesionCountError as e:
            self._say(str(e), error=True)
            return
        where = self.review.resume() or {}
        subject = subject or where.get("subject") or self.review.subjects()[0]
        self._busy = True
        self.subject_box.clear()
        self.subject_box.addItems(self.review.subjects())
        self._busy = False
        session = where.get("session") if where.get("subject") == subject else None
        self.go(subject, session, lesion=where.get("lesion") if session else None)
        if where:
            self._say(f"Resumed where {self.review.reader} left off: {where['subject']} "
                      f"{where['session']} ({where['action']} at {where['time'][:16]})")

    def go(self, subject: str, session: str | None = None, lesion=None) -> None:
        """Show a subject's session (its first by default) and select a lesion."""
        sessions = self.review.sessions(subject)
        session = session if session in sessions else sessions[0]
        self._busy = True
        if self.subject_box.currentText() != subject:
            self.subject_box.setCurrentText(subject)
        if self.subject != subject or self.session_box.count() != len(sessions):
            self.session_box.clear()
            self.session_box.addItems(sessions)
        self.session_box.setCurrentText(session)
        self._busy = False
        first_view = self.subject != subject
        self.subject, self.session = subject, session
        try:
            self._show_layers(reset_view=first_view or "post-contrast" not in self.viewer.layers)
        except LesionCountError as e:
            self._say(str(e), error=True)
            return
        self.review.open(subject, session, lesion if isinstance(lesion, int) else None)
        self._refresh_table()
        if lesion is not None:
            self.select_lesion(lesion)
        elif self._rows:
            self.select_lesion(self._first_undecided())

    def _subject_chosen(self, subject: str) -> None:
        if not self._busy and subject and self.review is not None:
            self.go(subject)

    def _session_chosen(self, session: str) -> None:
        if not self._busy and session and self.review is not None:
            self.go(self.subject, session)

    def step_session(self, step: int) -> None:
        sessions = self.review.sessions(self.subject)
        k = sessions.index(self.session) + step
        if 0 <= k < len(sessions):
            self.go(self.subject, sessions[k])

    def _show_layers(self, reset_view: bool) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        data = session_layer_data(self.review, self.subject, self.session)
        for arr, kw, kind in data:
            name = kw["name"]
            if name in self.viewer.layers and self.viewer.layers[name].data.shape == arr.shape:
                layer = self.viewer.layers[name]
                layer.data = arr
                layer.metadata = kw["metadata"]
                if kind == "labels":
                    layer.colormap = DirectLabelColormap(color_dict=kw["colormap"])
                elif "contrast_limits" in kw:
                    layer.contrast_limits = kw["contrast_limits"]
            else:
                if name in self.viewer.layers:
                    self.viewer.layers.remove(name)
                layer = getattr(self.viewer, f"add_{kind}")(arr, **kw)
                if kind == "labels":
                    layer.contour = 1  # outlines keep the enhancement visible underneath
        grid = self.review.grid(self.subject)
        if PAINT_LAYER in self.viewer.layers and \
                self.viewer.layers[PAINT_LAYER].data.shape != grid.shape:
            self.viewer.layers.remove(PAINT_LAYER)
        if PAINT_LAYER not in self.viewer.layers:
            paint = self.viewer.add_labels(np.zeros(grid.shape, np.int32), name=PAINT_LAYER,
                                           scale=tuple(grid.spacing), opacity=0.7,
                                           colormap={None: (0, 0, 0, 0), 0: (0, 0, 0, 0),
                                                     1: (0.2, 1.0, 0.4, 1.0)})
            paint.brush_size = 3
        self.viewer.layers.selection.active = self.viewer.layers["post-contrast"]
        text = _text_overlay(self.viewer)
        text.visible = True
        text.text = f"{self.subject}  {self.session}"
        text.font_size = 14
        if reset_view:
            self.viewer.reset_view()

    def _recolour(self) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        self.viewer.layers["lesions"].colormap = DirectLabelColormap(
            color_dict=label_colours(self.review, self.subject, self.session))
        layer = self.viewer.layers["added lesions"]
        layer.data = self.review.added_mask(self.subject, self.session)
        layer.colormap = DirectLabelColormap(
            color_dict=added_colours(self.review, self.subject, self.session))

    # ------------------------------------------------------------------ the table
    def _refresh_table(self, keep: object = None) -> None:
        self._rows = self.review.lesion_rows(self.subject, self.session)
        self._busy = True
        self.table.setRowCount(len(self._rows))
        for r, row in enumerate(self._rows):
            decision = row["verdict"] if row["verdict"] != "pending" else ""
            if row["verdict"] != "added" and row["verdict"] != "rejected" and \
                    row["status"] != row["auto_status"]:
                decision = f"{decision} (was {row['auto_status']})".strip()
            if row.get("transient") and row["verdict"] == "pending":
                decision = TRANSIENT_HINT
            lesion = row["lesion"] if isinstance(row["lesion"], int) else "+"
            cells = [lesion, row["track"] if row["track"] is not None else "",
                     row["status"], f"{row['volume_mm3']:.0f}" if row["volume_mm3"] else "",
                     row["location"], decision]
            for c, val in enumerate(cells):
                item = QTableWidgetItem(str(val))
                if c in (0, 1, 3):
                    item.setTextAlignment(Qt.AlignRight | Qt.AlignVCenter)
                if c == 2:
                    key = "rejected" if row["verdict"] == "rejected" else row["status"]
                    item.setForeground(QColor(_hex(STATUS_COLOURS.get(key, (1, 1, 1)))))
                if row["verdict"] == "rejected":
                    font = item.font()
                    font.setStrikeOut(True)
                    item.setFont(font)
                self.table.setItem(r, c, item)
        self._busy = False
        if keep is not None:
            for r, row in enumerate(self._rows):
                if row["lesion"] == keep:
                    self.table.selectRow(r)
        self._update_summary()

    def _update_summary(self) -> None:
        c = self.review.reviewed_counts(self.subject, self.session)
        sr = self.review.session_state(self.subject, self.session)
        sessions = self.review.sessions(self.subject)
        signed = sum(1 for s in sessions
                     if self.review.session_state(self.subject, s).signed_off)
        days = c.get("days")
        when = f" · day {days:.0f}" if isinstance(days, (int, float)) else ""
        base = " (baseline)" if sessions[0] == self.session else ""
        sign = (f"<b style='color:#7fd67f'>signed off</b> by {sr.signed_off['reader']}"
                if sr.signed_off else "<span style='color:#e0a040'>not signed off</span>")
        self.summary.setText(
            f"<b>{self.subject} {self.session}</b>{base}{when} · {sign}<br>"
            f"Reviewed: <b>{c['gd_count']}</b> Gd+, <b style='color:"
            f"{_hex(STATUS_COLOURS['new'])}'>{c['new_gd_count']} new</b>, "
            f"cumulative new <b>{c['cumulative_new_gd']}</b> "
            f"<span style='color:#999'>(automatic: {c['auto_gd_count']} Gd+, "
            f"{c['auto_new_gd_count']} new)</span><br>"
            f"<span style='color:#999'>{signed}/{len(sessions)} sessions of {self.subject} "
            f"signed off · reader {self.review.reader}</span>")
        self.signoff_btn.setText("Reopen session" if sr.signed_off else "Sign off session")

    def current_row(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        if not rows:
            return None
        return self._rows[rows[0].row()]

    def _first_undecided(self):
        for row in self._rows:
            if row["verdict"] == "pending":
                return row["lesion"]
        return self._rows[0]["lesion"]

    def select_lesion(self, lesion) -> None:
        for r, row in enumerate(self._rows):
            if row["lesion"] == lesion:
                self.table.selectRow(r)
                self.centre_on(row)
                self._show_status(row)
                return

    def _row_chosen(self) -> None:
        if self._busy:
            return
        row = self.current_row()
        if row is not None:
            self.centre_on(row)
            self._show_status(row)

    def _show_status(self, row: dict) -> None:
        """The status drop-down shows the chosen lesion's current status."""
        if row["status"] in ("new", "persistent", "baseline"):
            self.status_box.setCurrentText(row["status"])

    def centre_on(self, row: dict) -> None:
        """Move the slice and the camera to a lesion's centroid (baseline world mm)."""
        grid = self.review.grid(self.subject)
        ijk = world_to_index(grid, [row["x"], row["y"], row["z"]])
        world = ijk * grid.spacing
        self.viewer.dims.set_point(0, float(world[0]))
        _camera(self.viewer).center = tuple(float(w) for w in world)
        _camera(self.viewer).zoom = max(_camera(self.viewer).zoom, self._lesion_zoom(grid))

    def _lesion_zoom(self, grid) -> float:
        """Zoom at which about 90 mm of the slice fills the canvas."""
        size = self.viewer.window._qt_viewer.canvas.size if hasattr(self.viewer, "window") \
            else (600, 600)
        try:
            px = float(min(size))
        except TypeError:
            px = 600.0
        return px / 90.0

    # ------------------------------------------------------------------ actions
    def _say(self, text: str, error: bool = False) -> None:
        colour = "#ff7070" if error else "#bbbbbb"
        self.message.setText(f"<span style='color:{colour}'>{text}</span>")
        (log.warning if error else log.info)(text)

    def _auto_lesion(self) -> dict | None:
        row = self.current_row()
        if row is None or not isinstance(row["lesion"], int):
            self._say("choose a detected lesion in the table first", error=True)
            return None
        return row

    def _after(self, lesion, advance: bool = False) -> None:
        self._recolour()
        self._refresh_table(keep=lesion)
        if advance:
            self.next_lesion()

    def accept(self) -> None:
        row = self._auto_lesion()
        if row:
            self.review.accept(self.subject, self.session, row["lesion"])
            self._after(row["lesion"], advance=True)

    def reject(self) -> None:
        row = self._auto_lesion()
        if row:
            text = self.comment_edit.text().strip() or None
            self.review.reject(self.subject, self.session, row["lesion"], reason=text)
            self._after(row["lesion"], advance=True)

    def set_status(self, status: str) -> None:
        row = self._auto_lesion()
        if not row:
            return
        try:
            self.review.set_status(self.subject, self.session, row["lesion"], status)
        except LesionCountError as e:
            self._say(str(e), error=True)
            return
        self._after(row["lesion"])

    def next_lesion(self, step: int = 1) -> None:
        if not self._rows:
            return
        row = self.current_row()
        k = -1 if row is None else self._rows.index(row)
        k = min(max(k + step, 0), len(self._rows) - 1)
        self.select_lesion(self._rows[k]["lesion"])

    def previous_lesion(self) -> None:
        self.next_lesion(-1)

    def add_comment(self, on_lesion: bool = True) -> None:
        text = self.comment_edit.text().strip()
        if not text:
            return
        row = self._auto_lesion() if on_lesion else None
        if on_lesion and row is None:
            return
        self.review.comment(self.subject, self.session, text,
                            lesion=row["lesion"] if row else None)
        self.comment_edit.clear()
        self._refresh_table(keep=row["lesion"] if row else None)
        self._say("comment saved")

    def toggle_signoff(self) -> None:
        if self.review.session_state(self.subject, self.session).signed_off:
            self.review.reopen(self.subject, self.session)
        else:
            self.review.sign_off(self.subject, self.session)
        self._update_summary()

    def _paint_mode(self, on: bool) -> None:
        layer = self.viewer.layers[PAINT_LAYER]
        if on:
            self.viewer.layers.selection.active = layer
            layer.selected_label = 1
            layer.mode = "paint"
        else:
            layer.mode = "pan_zoom"
            self.viewer.layers.selection.active = self.viewer.layers["post-contrast"]

    def add_painted(self) -> None:
        layer = self.viewer.layers[PAINT_LAYER]
        mask = np.asarray(layer.data) > 0
        if not mask.any():
            self._say("nothing painted: press Paint, paint the lesion on each slice, then Add",
                      error=True)
            return
        choice = self.add_status.currentText()
        status = None if choice.startswith("status by") else choice
        try:
            recs = self.review.add_lesion(self.subject, self.session, mask, status=status,
                                          comment=self.comment_edit.text().strip() or None)
        except LesionCountError as e:
            self._say(str(e), error=True)
            return
        layer.data = np.zeros_like(layer.data)
        self.paint_btn.setChecked(False)
        self._after(recs[-1]["added"]["id"])
        self._say(", ".join(f"added a {r['added']['status']} lesion of "
                            f"{r['added']['volume_mm3']:.0f} mm³" for r in recs))

    @property
    def reader_name(self) -> str:
        return self.review.reader if self.review else self.reader_edit.text()


def warn(parent, text: str) -> None:  # pragma: no cover - interactive only
    QMessageBox.warning(parent, "lesioncount", text)
