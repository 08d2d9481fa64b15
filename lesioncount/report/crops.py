"""Image crops for the report: lesion cards and registration checks, as PNG bytes.

Everything is shown in **baseline space**: a small plane grid is placed in the baseline
scan's world coordinates and each session's image is resampled onto it through that
session's saved transform (``_from-ceT1w_to-baseline_mode-image_xfm.tfm`` maps baseline
points to the session's points; the pre-contrast scan is reached through
``_from-T1w_to-ceT1w_mode-image_xfm.tfm`` after it). So the same place on two visits is
the same pixel, whatever the head position or the acquisition grid (1 mm or 3 mm slices).

Slices are shown in the radiological convention (the patient's right on the left of
the image, anterior at the top of an axial slice), as readers see them.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..image import Image, from_sitk, to_sitk
from ..io import load_image

log = logging.getLogger(__name__)

OUTLINE_RGB = (230, 159, 0)  # Okabe-Ito orange: the lesion outline
EDGE_RGB = (86, 180, 233)  # Okabe-Ito sky blue: baseline edges over a follow-up
CARD_FOV_MM = 48.0  # a lesion card shows 48 mm around the lesion: lesion plus landmarks
CARD_PIXELS = 160  # per panel side: at 48 mm (0.3 mm/px) a 3 mm lesion spans 10 px
REG_SPACING_MM = 1.0
CHECKER_MM = 16.0  # checkerboard tiles: a few gyri each, so a shift shows as broken edges

# rows (top -> bottom), columns (left -> right), normal; RAS unit vectors
PLANES = {
    "axial": ((0, -1, 0), (-1, 0, 0), (0, 0, 1)),
    "coronal": ((0, 0, -1), (-1, 0, 0), (0, 1, 0)),
    "sagittal": ((0, 0, -1), (0, 1, 0), (1, 0, 0)),
}


def plane_grid(center_ras, size_mm: float | tuple[float, float], spacing_mm: float,
               plane: str = "axial") -> Image:
    """A one-voxel-thick grid in a display orientation, centred on ``center_ras``.

    ``array[r, c, 0]`` of an image resampled onto it is the picture as displayed (row 0 at
    the top). ``size_mm`` is the field of view (rows, columns) or one value for both.
    """
    rows_mm, cols_mm = (size_mm, size_mm) if np.isscalar(size_mm) else size_mm
    n = (max(2, int(round(rows_mm / spacing_mm))), max(2, int(round(cols_mm / spacing_mm))))
    d = np.array(PLANES[plane], float).T  # columns: row axis, column axis, normal
    aff = np.eye(4)
    aff[:3, :3] = d * spacing_mm
    centre_index = np.array([(n[0] - 1) / 2, (n[1] - 1) / 2, 0.0])
    aff[:3, 3] = np.asarray(center_ras, float) - aff[:3, :3] @ centre_index
    return Image(np.zeros((n[0], n[1], 1), np.uint8), aff)


def window(values: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> tuple[float, float]:
    """Display window from the percentiles of the non-zero values (a subsample of them)."""
    v = np.asarray(values).ravel()
    v = v[v != 0]
    if v.size > 400_000:
        v = v[:: v.size // 400_000]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [low_pct, high_pct])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def to_grey(a: np.ndarray, win: tuple[float, float]) -> np.ndarray:
    lo, hi = win
    return (np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def overlay(grey: np.ndarray, mask: np.ndarray | None, rgb=OUTLINE_RGB) -> np.ndarray:
    """An RGB image: ``grey`` with the pixels of ``mask`` painted in ``rgb``."""
    out = np.repeat(grey[..., None], 3, axis=2)
    if mask is not None and mask.any():
        out[mask] = rgb
    return out


def ring(mask: np.ndarray, gap: int = 2, width: int = 2) -> np.ndarray:
    """An outline drawn just outside a 2D mask (``gap`` px away, ``width`` px wide), so the
    lesion's own edge stays visible under it."""
    from scipy import ndimage as ndi

    m = np.asarray(mask, bool)
    inner = ndi.binary_dilation(m, iterations=gap) if gap else m
    return ndi.binary_dilation(inner, iterations=width) & ~inner


def crosshair(shape: tuple[int, int], gap: int = 12, length: int = 14) -> np.ndarray:
    """Four ticks pointing at the centre (where a lesion is, when no outline can be drawn)."""
    m = np.zeros(shape, bool)
    r, c = shape[0] // 2, shape[1] // 2
    m[r, max(0, c - gap - length): c - gap] = True
    m[r, c + gap: c + gap + length] = True
    m[max(0, r - gap - length): r - gap, c] = True
    m[r + gap: r + gap + length, c] = True
    return m


def png(rgb: np.ndarray) -> bytes:
    """PNG bytes of a 2D grey or RGB uint8 array."""
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------- volumes


def read_transform(path: Path):
    """An ITK transform file, or ``None`` when it is absent or unreadable."""
    import SimpleITK as sitk

    if not Path(path).is_file():
        return None
    try:
        return sitk.ReadTransform(str(path))
    except RuntimeError as e:
        log.warning("%s: unreadable transform (%s)", path, str(e).splitlines()[-1])
        return None


class Volume:
    """One image held once as a SimpleITK image, resampled onto plane grids on demand."""

    def __init__(self, image: Image, *, label: bool = False, signed: bool = False):
        import SimpleITK as sitk

        self.label = label
        self.sitk = to_sitk(image, dtype=np.int32 if label else np.float32)
        self.interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
        # grey scans: 1-99.9th percentile, so enhancing lesions and vessels (the top ~0.1-1%)
        # are not clipped to the same white as bright white matter; an enhancement map:
        # from 0 (no enhancement, black) up
        if label:
            self.window = (0.0, 1.0)
        elif signed:
            self.window = (0.0, max(window(image.array, 1.0, 99.9)[1], 1e-3))
        else:
            self.window = window(image.array, 1.0, 99.9)
        self.image = image

    def on(self, grid: Image, transform=None) -> np.ndarray:
        """This volume on ``grid`` (``transform``: grid space points -> this volume's points)."""
        import SimpleITK as sitk

        ref = to_sitk(grid, dtype=np.uint8)
        tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
        pixel = sitk.sitkInt32 if self.label else sitk.sitkFloat32
        out = sitk.Resample(self.sitk, ref, tx, self.interp, 0.0, pixel)
        return from_sitk(out).array[:, :, 0]


def _load(path, *, label=False, signed=False) -> Volume | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        return Volume(load_image(path), label=label, signed=signed)
    except InputError as e:
        log.warning("%s", e)
        return None


@dataclass
class SessionImages:
    """The images and transforms of one session that the report draws from (lazily loaded)."""

    post_path: Path | None
    pre_path: Path | None
    labels_path: Path | None
    enhancement_path: Path | None
    to_baseline_path: Path | None  # None for the baseline session
    pre_to_post_path: Path | None
    is_baseline: bool = False
    _cache: dict = field(default_factory=dict, repr=False)

    def _get(self, name, path, label=False, signed=False):
        if name not in self._cache:
            self._cache[name] = _load(path, label=label, signed=signed)
        return self._cache[name]

    @property
    def post(self) -> Volume | None:
        return self._get("post", self.post_path)

    @property
    def pre(self) -> Volume | None:
        return self._get("pre", self.pre_path)

    @property
    def labels(self) -> Volume | None:
        return self._get("labels", self.labels_path, label=True)

    @property
    def enhancement(self) -> Volume | None:
        return self._get("enh", self.enhancement_path, signed=True)

    @property
    def to_baseline(self):
        """Baseline points -> this session's points; identity (None) for the baseline."""
        if self.is_baseline:
            return None
        if "tb" not in self._cache:
            self._cache["tb"] = read_transform(self.to_baseline_path) if self.to_baseline_path else None
        return self._cache["tb"]

    @property
    def registered(self) -> bool:
        return self.is_baseline or self.to_baseline is not None

    def pre_transform(self):
        """Baseline points -> this session's pre-contrast points (None if unknown)."""
        import SimpleITK as sitk

        pp = read_transform(self.pre_to_post_path) if self.pre_to_post_path else None
        if pp is None:
            return None
        if self.to_baseline is None:
            return pp
        # a composite applies its LAST transform first: baseline -> post, then post -> pre
        return sitk.CompositeTransform([pp, self.to_baseline])

    def release(self) -> None:
        self._cache.clear()


# ---------------------------------------------------------------------------- pictures


@dataclass
class Panel:
    title: str
    png: bytes
    note: str = ""


def card_fov(volume_mm3: float | None) -> float:
    """Field of view of a lesion card: 48 mm, or 4 equivalent-sphere diameters for a large
    lesion (so its surroundings stay in view), at most 120 mm."""
    if volume_mm3 is None or not np.isfinite(volume_mm3) or volume_mm3 <= 0:
        return CARD_FOV_MM
    d = (6 * volume_mm3 / np.pi) ** (1 / 3)
    return float(np.clip(4 * d, CARD_FOV_MM, 120.0))


def lesion_panels(center_ras, lesion_id: int | None, current: SessionImages,
                  previous: SessionImages | None, current_label: str = "",
                  previous_label: str = "", fov_mm: float = CARD_FOV_MM) -> list[Panel]:
    """The crops of one lesion card, all in baseline space around ``center_ras``.

    Panels: post-contrast at the lesion's visit; the same place on the previous visit;
    the pre-contrast scan of the visit (when there is one); the enhancement map (when
    written). The lesion (label ``lesion_id`` of the visit's label map) is outlined on
    every panel; where no outline can be drawn, ticks point at its centroid.
    """
    grid = plane_grid(center_ras, fov_mm, fov_mm / CARD_PIXELS, "axial")
    shape = grid.shape[:2]
    mask = None
    if current.labels is not None and lesion_id is not None:
        lab = current.labels.on(grid, current.to_baseline)
        if (lab == lesion_id).any():
            mask = ring(lab == lesion_id)
    mark = mask if mask is not None else crosshair(shape)
    panels = []

    def add(title, vol, tx, note=""):
        if vol is None:
            return
        a = vol.on(grid, tx)
        panels.append(Panel(title, png(overlay(to_grey(a, vol.window), mark)), note))

    add(f"post-contrast {current_label}".strip(), current.post, current.to_baseline)
    if previous is not None:
        note = "" if previous.registered else "no transform to baseline: shown unregistered"
        add(f"previous visit {previous_label}".strip(), previous.post, previous.to_baseline, note)
    if current.pre is not None:
        tx = current.pre_transform()
        add(f"pre-contrast {current_label}".strip(), current.pre, tx,
            "" if tx is not None else "no pre->post transform: shown unregistered")
    if current.enhancement is not None:
        add("enhancement map", current.enhancement, current.to_baseline)
    if not panels:
        blank = np.full(shape, 40, np.uint8)
        panels.append(Panel("images not found", png(overlay(blank, mark)),
                            "the session's input scans could not be read"))
    return panels


def registration_panels(baseline: SessionImages, session: SessionImages,
                        center_ras=None, planes: tuple[str, ...] = ("axial", "coronal")
                        ) -> list[Panel]:
    """Visual check of a session's registration to baseline, in baseline space.

    An axial checkerboard (baseline and the session in alternating tiles: a misalignment
    breaks the edges at the tile borders) and axial and coronal overlays of the baseline's
    edges (sky blue) on the registered session.
    """
    from skimage.feature import canny

    base = baseline.post
    cur = session.post
    if base is None or cur is None:
        return []
    img = base.image
    if center_ras is None:
        center_ras = _foreground_centre(img)
    corners = np.array([[i, j, k] for i in (0, img.shape[0]) for j in (0, img.shape[1])
                        for k in (0, img.shape[2])], float) - 0.5
    world = corners @ img.affine[:3, :3].T + img.affine[:3, 3]
    ext = world.max(0) - world.min(0)
    tx = session.to_baseline
    unreg = "" if session.registered else " (no transform: unregistered)"
    panels = []
    for plane in planes:
        rows_mm = ext[1] if plane == "axial" else ext[2]
        fov = (min(rows_mm, 260.0), min(ext[0], 260.0))
        grid = plane_grid(center_ras, fov, REG_SPACING_MM, plane)
        b = to_grey(base.on(grid), base.window)
        s = to_grey(cur.on(grid, tx), cur.window)
        if plane == "axial":
            r, c = np.indices(b.shape)
            tile = int(round(CHECKER_MM / REG_SPACING_MM))
            board = np.where(((r // tile) + (c // tile)) % 2 == 0, b, s)
            panels.append(Panel(f"checkerboard, axial{unreg}", png(board)))
        edges = canny(b.astype(float), sigma=2.0, low_threshold=20, high_threshold=40)
        panels.append(Panel(f"baseline edges on session, {plane}{unreg}",
                            png(overlay(s, edges, EDGE_RGB))))
    return panels


def _foreground_centre(img: Image) -> np.ndarray:
    a = img.array
    thr = np.percentile(a[a > 0], 20) if (a > 0).any() else 0
    idx = np.argwhere(a > thr)
    c = idx.mean(0) if len(idx) else (np.asarray(a.shape) - 1) / 2
    return img.affine[:3, :3] @ c + img.affine[:3, 3]
