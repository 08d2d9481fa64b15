"""A session's images and labels on one display grid in baseline space (no Qt).

Every visit of a subject is resampled onto the same grid, so a reader steps
through visits without losing position:

- the display grid covers the baseline post-contrast field of view at
  ``ReviewConfig.display_spacing_mm``, axial and in radiological orientation:
  array axes are (inferior->superior, anterior->posterior, patient right->left),
  so a viewer that shows the last two axes shows an axial slice with anterior up
  and the patient's right on the viewer's left;
- the session's post-contrast scan, enhancement map and lesion labels go through
  the session->baseline transform (``..._from-ceT1w_to-baseline_mode-image_xfm.tfm``
  maps baseline points to session points, as :func:`lesioncount.image.resample`
  wants);
- the pre-contrast scan goes through the pre->post transform then the
  session->baseline one (one composite transform, one interpolation).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image import Image, apply_affine, resample
from ..io import load_image
from ..outputs import SessionPaths
from .state import ReviewConfig

log = logging.getLogger(__name__)


def display_grid(reference: Image, spacing_mm: float = 1.0) -> Image:
    """An axial, radiological-orientation grid covering ``reference``'s field of view."""
    sh = np.asarray(reference.shape)
    corners = np.array([[i, j, k] for i in (-0.5, sh[0] - 0.5) for j in (-0.5, sh[1] - 0.5)
                        for k in (-0.5, sh[2] - 0.5)])
    w = apply_affine(reference.affine, corners)
    lo, hi = w.min(0), w.max(0)
    s = float(spacing_mm)
    n = np.maximum(1, np.round((hi - lo) / s)).astype(int)  # per RAS axis x, y, z
    aff = np.zeros((4, 4))
    aff[3, 3] = 1.0
    aff[2, 0] = s    # axis 0 -> +z (superior)
    aff[1, 1] = -s   # axis 1 -> -y (anterior at the top)
    aff[0, 2] = -s   # axis 2 -> -x (patient right on the viewer's left)
    aff[:3, 3] = [hi[0] - s / 2, hi[1] - s / 2, lo[2] + s / 2]
    return Image(np.zeros((n[2], n[1], n[0]), dtype=np.uint8), aff)


def world_to_index(grid: Image, xyz) -> np.ndarray:
    """Continuous voxel index on ``grid`` of world RAS points (baseline space)."""
    inv = np.linalg.inv(grid.affine)
    return apply_affine(inv, np.asarray(xyz, dtype=np.float64))


@dataclass(frozen=True, eq=False)
class SessionLayers:
    """One session's layer data on the subject's display grid (arrays indexed like ``grid``)."""

    subject: str
    session: str
    grid: Image
    post: np.ndarray
    pre: np.ndarray | None
    enhancement: np.ndarray | None
    labels: np.ndarray  # int32, the automatic lesion ids of lesions.tsv
    is_baseline: bool
    post_path: Path
    pre_path: Path | None
    flair: np.ndarray | None = None
    flair_path: Path | None = None


def read_sidecar(out: str | Path, subject: str, session: str) -> dict:
    p = SessionPaths(out, subject, session).sidecar
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(p, "session sidecar not found: was this session counted?") from None
    except (OSError, ValueError) as e:
        raise InputError(p, f"unreadable session sidecar ({e})") from None


def _input_path(out: Path, value: str | None) -> Path | None:
    """An input scan's path as the sidecar records it (absolute, or relative to OUT or cwd)."""
    if not value:
        return None
    p = Path(value)
    for cand in ([p] if p.is_absolute() else [out / p, out.parent / p, p]):
        if cand.exists():
            return cand
    return None


def subject_grid(out: str | Path, subject: str, baseline: str,
                 cfg: ReviewConfig = ReviewConfig()) -> Image:
    """The display grid of a subject: its baseline post-contrast field of view."""
    import nibabel as nib

    out = Path(out)
    side = read_sidecar(out, subject, baseline)
    post = _input_path(out, (side.get("inputs") or {}).get("post"))
    src = post if post is not None else SessionPaths(out, subject, baseline).lesions
    if not Path(src).exists():
        raise InputError(src, "baseline post-contrast scan not found")
    hdr = nib.load(str(src))
    ref = Image(np.zeros(hdr.shape[:3], np.uint8), hdr.affine)
    return display_grid(ref, cfg.display_spacing_mm)


def load_session_layers(out: str | Path, subject: str, session: str, grid: Image
                        ) -> SessionLayers:
    """Read one session's scans, maps and labels and put them on ``grid`` (baseline space).

    Raises
    ------
    InputError
        When the post-contrast scan named by the sidecar's ``inputs.post`` or the
        lesion label map cannot be read.
    """
    import SimpleITK as sitk

    from ..registration import load_transform

    out = Path(out)
    paths = SessionPaths(out, subject, session)
    side = read_sidecar(out, subject, session)
    inputs = side.get("inputs") or {}
    post_path = _input_path(out, inputs.get("post"))
    if post_path is None:
        raise InputError(inputs.get("post") or paths.sidecar,
                         "post-contrast input scan not found (moved since the run?)")
    is_base = bool(side.get("is_baseline"))
    to_base = None
    if not is_base and paths.to_baseline.exists():
        to_base = load_transform(paths.to_baseline)
    post = load_image(post_path)
    post_g = resample(post, grid, to_base).array
    labels = resample(load_image(paths.lesions, dtype=np.int32), grid, to_base,
                      interpolation="nearest").array.astype(np.int32)
    enh = None
    if paths.enhancement.exists():
        enh = resample(load_image(paths.enhancement), grid, to_base).array
    def same_session(key, to_post: Path, name: str):
        """Another scan of the session (pre-contrast, FLAIR) through its transform to post."""
        path = _input_path(out, inputs.get(key))
        if path is None:
            return None, None
        chain = []
        if to_post.exists():
            chain.append(load_transform(to_post))
        if to_base is not None:
            chain.append(to_base)
        tx = sitk.CompositeTransform(chain) if chain else None  # scan(post(baseline point))
        try:
            return resample(load_image(path), grid, tx).array, path
        except InputError as e:
            log.warning("%s not shown: %s", name, e)
            return None, path

    pre, pre_path = same_session("pre", paths.pre_to_post, "pre-contrast scan")
    flair, flair_path = same_session("flair", paths.flair_to_post, "FLAIR")
    return SessionLayers(subject, session, grid, post_g, pre, enh, labels, is_base,
                         post_path, pre_path, flair, flair_path)


def contrast_limits(array: np.ndarray) -> tuple[float, float]:
    """Display window from the foreground's 1st and 99.7th percentiles (robust to outliers)."""
    fg = array[array > 0]
    if fg.size < 10:
        fg = array.ravel()
    lo, hi = np.percentile(fg, [1, 99.7])
    return float(lo), float(max(hi, lo + 1e-3))


def painted_components(mask: np.ndarray) -> list[np.ndarray]:
    """Each connected part of a painted mask (the one lesion definition's connectivity)."""
    from ..lesions import components

    labels, n = components(mask)
    return [np.argwhere(labels == k) for k in range(1, n + 1)]


def status_by_overlap(ijk: np.ndarray, previous: np.ndarray | None, grid: Image,
                      tolerance_mm: float) -> tuple[str, int | None]:
    """Status of a painted lesion from the previous session's lesions on the same grid.

    ``previous`` holds the previous session's kept lesions as track ids (0 = none);
    ``None`` means the painted session is the baseline. Returns (status, track or None).
    """
    if previous is None:
        return "baseline", None
    r = np.maximum(np.floor(tolerance_mm / grid.spacing), 0).astype(int)
    lo = np.maximum(ijk.min(0) - r, 0)
    hi = np.minimum(ijk.max(0) + r + 1, previous.shape)
    box = previous[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    mine = np.zeros(box.shape, bool)
    loc = ijk - lo
    mine[tuple(loc.T)] = True
    if tolerance_mm > 0:
        from scipy import ndimage as ndi

        from ..tracking import _ball
        mine = ndi.binary_dilation(mine, structure=_ball(tolerance_mm, grid.spacing))
    hit = box[mine]
    hit = hit[hit > 0]
    if hit.size == 0:
        return "new", None
    vals, counts = np.unique(hit, return_counts=True)
    return "persistent", int(vals[np.argmax(counts)])
