"""The npe2 reader: a lesioncount output folder (or a ``sub-*`` folder in one) -> layers.

No Qt here. The layers are those of the session where the reader left off (else
the first session of the subject), each tagged in ``metadata["lesioncount"]`` so
the review widget can take them over.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..review import Review, is_output_folder
from ..review.layers import contrast_limits

log = logging.getLogger(__name__)

STATUS_COLOURS = {  # RGBA, chosen to stay distinct on a grey MRI background
    "baseline": (0.25, 0.62, 1.0, 1.0),    # blue
    "new": (1.0, 0.2, 0.2, 1.0),            # red: what the endpoint counts
    "persistent": (1.0, 0.78, 0.1, 1.0),    # amber
    "rejected": (0.55, 0.55, 0.55, 0.6),    # grey
}
TRANSPARENT = (0.0, 0.0, 0.0, 0.0)


def _locate(path) -> tuple[Path, str | None] | None:
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(str(path))
    if is_output_folder(p):
        return p, None
    if p.is_dir() and p.name.startswith("sub-") and is_output_folder(p.parent):
        return p.parent, p.name
    return None


def get_reader(path):
    """napari reader hook: a function for lesioncount output folders, ``None`` otherwise."""
    try:
        found = _locate(path)
    except OSError:
        return None
    if found is None:
        return None
    out, subject = found

    def read(_path):
        review = Review(out)
        where = review.resume()
        subj = subject or (where or {}).get("subject") or review.subjects()[0]
        sessions = review.sessions(subj)
        ses = (where or {}).get("session") if (where or {}).get("subject") == subj else None
        return session_layer_data(review, subj, ses if ses in sessions else sessions[0])

    return read


def label_colours(review: Review, subject: str, session: str) -> dict:
    """Colour of each automatic label by its reviewed status (rejected ones grey)."""
    colours = {None: TRANSPARENT, 0: TRANSPARENT}
    for row in review.lesion_rows(subject, session):
        if row["verdict"] == "added":
            continue
        key = "rejected" if row["verdict"] == "rejected" else row["status"]
        colours[int(row["lesion"])] = STATUS_COLOURS.get(key, (1, 1, 1, 1))
    return colours


def added_colours(review: Review, subject: str, session: str) -> dict:
    colours = {None: TRANSPARENT, 0: TRANSPARENT}
    added = [r for r in review.lesion_rows(subject, session) if r["verdict"] == "added"]
    for n, row in enumerate(added, start=1):
        colours[n] = STATUS_COLOURS.get(row["status"], (1, 1, 1, 1))
    return colours


def session_layer_data(review: Review, subject: str, session: str) -> list[tuple]:
    """napari LayerData tuples for one session, all on the subject's display grid."""
    lay = review.layers(subject, session)
    scale = tuple(float(s) for s in lay.grid.spacing)
    meta = {"lesioncount": {"out": str(review.out), "subject": subject, "session": session}}
    common = {"scale": scale, "metadata": meta}
    smooth = {"interpolation2d": "linear"}  # no blocky voxels on 3 mm-slice visits
    data = [(lay.post, {**common, "name": "post-contrast", "colormap": "gray",
                         "contrast_limits": contrast_limits(lay.post), **smooth}, "image")]
    if lay.pre is not None:
        data.append((lay.pre, {**common, "name": "pre-contrast", "colormap": "gray",
                               "contrast_limits": contrast_limits(lay.pre), "visible": False,
                               **smooth},
                     "image"))
    if lay.flair is not None:
        data.append((lay.flair, {**common, "name": "FLAIR", "colormap": "gray",
                                 "contrast_limits": contrast_limits(lay.flair), "visible": False,
                                 **smooth},
                     "image"))
    if lay.enhancement is not None:
        hi = float(max(np.percentile(lay.enhancement, 99.9), 1.0))
        data.append((lay.enhancement, {**common, "name": "enhancement", "colormap": "inferno",
                                       "contrast_limits": (0.0, hi), "opacity": 0.5,
                                       "blending": "additive", "visible": False}, "image"))
    data.append((lay.labels, {**common, "name": "lesions", "opacity": 0.9,
                              "colormap": label_colours(review, subject, session)}, "labels"))
    data.append((review.added_mask(subject, session),
                 {**common, "name": "added lesions", "opacity": 0.9,
                  "colormap": added_colours(review, subject, session)}, "labels"))
    return data
