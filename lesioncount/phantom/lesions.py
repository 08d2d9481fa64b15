"""Synthetic MS lesions: irregular ellipsoids rendered with exact partial volume on any grid.

A lesion is an analytic shape (:class:`LesionShape`) living in a "lesion space"
(world millimetres of the anatomy it was placed in). It is painted onto an image
grid through a 4x4 ``world_to_lesion`` transform (identity when the image is the
anatomy itself, the inverse head pose when the image is a moved acquisition), by
supersampling each voxel: the fraction of sub-samples inside the shape is the
voxel's coverage (a boxcar slice profile on thick slices), and the mean of the
sub-samples' intensities is what the voxel shows. The truth label of a lesion is
the set of voxels it covers by at least half (or, when it covers none that much,
its most covered voxel, so that every lesion in the truth has at least one voxel).

:func:`inject_lesions` uses this to put known enhancing lesions into a real scan.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..image import Image, apply_affine

log = logging.getLogger(__name__)

NODULAR = "nodular"
RING = "ring"
KINDS = (NODULAR, RING)

# Sub-sample spacing inside a voxel: 0.4 mm gives 3 sub-samples per 1 mm axis and 8
# per 3 mm slice, enough for coverage errors of a few percent on 3 mm lesions.
SUBSAMPLE_MM = 0.4
# Largest total amplitude of the boundary harmonics (relative radius): lesions stay
# convex-looking blobs, not stars.
MAX_JITTER = 0.22
# FLAIR of an enhancing lesion (x normal WM): oedema makes nearly every active MS lesion
# FLAIR-hyperintense (the consensus lesions of the shared patients measure 1.38 median,
# 1.17-1.66 from the 10th to the 90th percentile). A minority, mostly small early
# lesions, have a faint correlate: FLAIR_FAINT_FRACTION of them get FLAIR_FAINT.
FLAIR_ACTIVE = (1.2, 1.8)
FLAIR_FAINT = (1.0, 1.12)
FLAIR_FAINT_FRACTION = 0.08
# The FLAIR lesion (oedema) is as large as its enhancing part or larger: diameter x this.
FLAIR_EXTENT = (1.0, 1.4)


@dataclass(frozen=True, eq=False)
class LesionShape:
    """One lesion: a jittered ellipsoid with its appearance on post and pre T1.

    Intensities are multiples of the local normal white-matter level ``wm``:
    on post, a nodular lesion shows ``wm * (1 + contrast)`` (slightly brighter in its
    middle); a ring lesion shows that on its rim (outer ``rim`` fraction of the radius)
    and ``wm * (1 + contrast * core)`` inside. ``pre`` is the factor on pre-contrast
    T1 (below 1: T1-hypointense). A chronic (non-enhancing) lesion has ``contrast`` 0
    and ``post`` < 1 for a black hole. ``flair`` is the factor on FLAIR (above 1:
    hyperintense, as active and chronic MS lesions are; 1: no FLAIR correlate).
    """

    center: np.ndarray            # (3,) lesion-space mm
    radii: np.ndarray             # (3,) semi-axes, mm
    rotation: np.ndarray          # (3, 3) columns = the semi-axes' directions
    kind: str = NODULAR
    contrast: float = 0.5         # enhancement above WM on post (0.2-1.0 typical)
    rim: float = 0.35             # ring: rim thickness as a fraction of the radius
    core: float = 0.15            # ring: centre enhancement as a fraction of contrast
    pre: float = 0.9              # intensity factor on pre-contrast T1
    post: float = 1.0             # base factor on post before enhancement (chronic: < 1)
    flair: float = 1.0            # intensity factor on FLAIR
    harmonics: np.ndarray | None = None  # (m, 6): unit dir (3), frequency, phase, amplitude

    @property
    def bounding_radius(self) -> float:
        amp = 0.0 if self.harmonics is None else float(np.abs(self.harmonics[:, 5]).sum())
        return float(np.max(self.radii)) * (1.0 + amp)

    @property
    def diameter_mm(self) -> float:
        return float(2.0 * np.mean(self.radii))

    def scaled(self, factor: float, **changes) -> "LesionShape":
        """The same shape shrunk or grown about its centre, with other fields changed."""
        kw = dict(center=self.center, radii=self.radii * factor, rotation=self.rotation,
                  kind=self.kind, contrast=self.contrast, rim=self.rim, core=self.core,
                  pre=self.pre, post=self.post, flair=self.flair, harmonics=self.harmonics)
        kw.update(changes)
        return LesionShape(**kw)

    def relative_radius(self, points: np.ndarray) -> np.ndarray:
        """rho / boundary(direction): < 1 inside the lesion, 1 on its surface. points (n, 3)."""
        q = ((points - self.center) @ self.rotation) / self.radii
        rho = np.sqrt((q * q).sum(axis=1))
        bound = np.ones_like(rho)
        if self.harmonics is not None and len(self.harmonics):
            u = q / np.maximum(rho, 1e-9)[:, None]
            h = self.harmonics
            bound = bound + (h[:, 5] * np.cos(h[:, 3] * (u @ h[:, :3].T) + h[:, 4])).sum(axis=1)
        return rho / bound


def random_shape(rng: np.random.Generator, center, diameter_mm: float, *, kind: str = NODULAR,
                 contrast: float = 0.5, jitter: bool = True, **fields) -> LesionShape:
    """A random irregular lesion of about ``diameter_mm`` centred at ``center``."""
    if kind not in KINDS:
        raise ValueError(f"lesion kind must be one of {KINDS}, got {kind!r}")
    r = 0.5 * float(diameter_mm)
    aspect = np.clip(1.0 + 0.15 * rng.standard_normal(3), 0.75, 1.3) if jitter else np.ones(3)
    radii = r * aspect / np.cbrt(np.prod(aspect))  # same volume as the sphere of that diameter
    qmat, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    harm = None
    if jitter:
        m = 4
        dirs = rng.standard_normal((m, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        amps = rng.uniform(0.0, 1.0, m)
        amps *= rng.uniform(0.08, MAX_JITTER) / amps.sum()
        harm = np.column_stack([dirs, rng.uniform(1.5, 4.0, m), rng.uniform(0, 2 * np.pi, m), amps])
    kw = dict(rim=float(rng.uniform(0.25, 0.45)), core=float(rng.uniform(0.0, 0.25)),
              pre=float(rng.uniform(0.82, 0.95)))
    kw.update(fields)
    return LesionShape(center=np.asarray(center, float), radii=radii, rotation=qmat, kind=kind,
                       contrast=float(contrast), harmonics=harm, **kw)


def random_flair(rng: np.random.Generator, shape: LesionShape) -> LesionShape:
    """The FLAIR appearance of an enhancing lesion: its shape grown by the oedema, with its
    FLAIR factor (see FLAIR_ACTIVE, FLAIR_FAINT); paint it with ``which="flair"``."""
    rng_f = FLAIR_FAINT if rng.random() < FLAIR_FAINT_FRACTION else FLAIR_ACTIVE
    return shape.scaled(float(rng.uniform(*FLAIR_EXTENT)), flair=float(rng.uniform(*rng_f)))


@dataclass(frozen=True, eq=False)
class Rendered:
    """A lesion rendered on a grid, inside the crop ``slices``."""

    slices: tuple[slice, slice, slice]
    coverage: np.ndarray   # fraction of each voxel inside the lesion, [0, 1]
    post: np.ndarray       # sum over sub-samples of the post factor / number of sub-samples
    pre: np.ndarray        # same for pre
    flair: np.ndarray      # same for FLAIR

    @property
    def empty(self) -> bool:
        return self.coverage.size == 0 or float(self.coverage.max()) <= 0.0

    def label_mask(self) -> np.ndarray:
        """Voxels covered >= 50%, or the most covered voxel when none is."""
        m = self.coverage >= 0.5
        if not m.any() and not self.empty:
            m = self.coverage >= self.coverage.max() - 1e-6
        return m


def render(shape: LesionShape, grid_shape, affine: np.ndarray,
           world_to_lesion: np.ndarray | None = None) -> Rendered:
    """Partial-volume rendering of ``shape`` on a grid (``affine``: voxel -> world)."""
    affine = np.asarray(affine, float)
    w2l = np.eye(4) if world_to_lesion is None else np.asarray(world_to_lesion, float)
    vox2les = w2l @ affine
    les2vox = np.linalg.inv(vox2les)
    rb = shape.bounding_radius + 0.5
    corners = np.array([[sx, sy, sz] for sx in (-rb, rb) for sy in (-rb, rb) for sz in (-rb, rb)])
    cv = apply_affine(les2vox, shape.center + corners)
    lo = np.maximum(np.floor(cv.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(cv.max(axis=0)).astype(int) + 2, np.asarray(grid_shape))
    slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    if np.any(hi <= lo):
        z = np.zeros((0, 0, 0), np.float32)
        return Rendered(slices, z, z, z, z)
    spacing = np.sqrt((vox2les[:3, :3] ** 2).sum(axis=0))
    nsub = np.maximum(1, np.ceil(spacing / SUBSAMPLE_MM)).astype(int)
    offs = [(np.arange(n) + 0.5) / n - 0.5 for n in nsub]
    sub = np.stack(np.meshgrid(*offs, indexing="ij"), -1).reshape(-1, 3)  # (s, 3)
    crop = tuple(int(b - a) for a, b in zip(lo, hi))
    ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    ijk = ijk.reshape(-1, 1, 3) + sub[None]  # (v, s, 3)
    pts = apply_affine(vox2les, ijk.reshape(-1, 3))
    rel = shape.relative_radius(pts).reshape(-1, sub.shape[0])
    inside = rel <= 1.0
    # enhancement fades to half at the border over the outer 15 % of the radius: real lesion
    # margins are not sharp; the border still counts fully in coverage and truth
    soft = 0.5 + 0.5 * np.clip((1.0 - rel) / 0.15, 0.0, 1.0)
    if shape.kind == RING:
        rim = rel >= 1.0 - shape.rim
        enh = np.where(rim, shape.contrast * soft, shape.contrast * shape.core)
        pre = np.where(rim, shape.pre, shape.pre - 0.08)  # the ring's centre is darker on pre
    else:
        enh = shape.contrast * (1.0 - 0.25 * rel * rel) * soft  # a little brighter in the middle
        pre = np.full(rel.shape, shape.pre)
    post_val = shape.post + enh
    flair = 1.0 + (shape.flair - 1.0) * soft  # the whole lesion (a ring's centre too)
    n = float(sub.shape[0])
    coverage = (inside.sum(axis=1) / n).reshape(crop).astype(np.float32)
    post_sum = (np.where(inside, post_val, 0.0).sum(axis=1) / n).reshape(crop).astype(np.float32)
    pre_sum = (np.where(inside, pre, 0.0).sum(axis=1) / n).reshape(crop).astype(np.float32)
    flair_sum = (np.where(inside, flair, 0.0).sum(axis=1) / n).reshape(crop).astype(np.float32)
    return Rendered(slices, coverage, post_sum, pre_sum, flair_sum)


def paint(array: np.ndarray, r: Rendered, level: float | np.ndarray, which: str = "post") -> None:
    """Blend a rendered lesion into ``array`` in place: background x (1 - coverage) + lesion.

    ``level`` is the normal white-matter intensity the lesion factors multiply
    (a scalar or an array on the crop).
    """
    if r.empty:
        return
    vals = {"post": r.post, "pre": r.pre, "flair": r.flair}[which]
    sl = r.slices
    array[sl] = array[sl] * (1.0 - r.coverage) + vals * level


def chronic_look(rng: np.random.Generator, shape: LesionShape) -> LesionShape:
    """A non-enhancing chronic lesion: a T1 black hole (35 %) or nearly isointense."""
    if rng.random() < 0.35:
        pre, post = rng.uniform(0.55, 0.75), rng.uniform(0.65, 0.8)
    else:
        pre, post = rng.uniform(0.88, 0.97), rng.uniform(0.93, 1.0)
    return shape.scaled(1.0, kind=NODULAR, contrast=0.0, pre=float(pre), post=float(post))


# FLAIR of a chronic lesion (x normal WM), as the phantom study's chronic lesions.
FLAIR_CHRONIC = (1.25, 1.8)


def paint_chronic_lesions(post: np.ndarray, pre: np.ndarray | None, flair: np.ndarray | None,
                          mask: np.ndarray, affine: np.ndarray, n: int, rng: np.random.Generator,
                          *, levels: tuple[float, float, float], diameter_mm=(3.0, 12.0),
                          min_gap_mm: float = 3.0) -> np.ndarray:
    """Paint ``n`` chronic (non-enhancing, FLAIR-bright) lesions in place; return their mask.

    The arrays share one grid (``affine``); centres go inside ``mask`` as
    :func:`inject_lesions` places them. ``levels``: the normal white-matter intensities of
    post, pre and FLAIR that the lesion factors multiply. Each lesion is a T1 black hole or
    nearly isointense (:func:`chronic_look`), never brighter than white matter on post, with
    a FLAIR factor in ``FLAIR_CHRONIC``. Returns the voxels they cover by >= 50 %: the
    enhancing lesions injected afterwards should keep away from them (``avoid``).
    """
    mask = np.asarray(mask, bool)
    sp = np.sqrt((np.asarray(affine, float)[:3, :3] ** 2).sum(axis=0))
    inner = ndi.distance_transform_edt(mask, sampling=sp)
    placed: list[LesionShape] = []
    out = np.zeros(mask.shape, bool)
    for _ in range(int(n)):
        shape = _place_one(rng, affine, inner, None, placed, (NODULAR,), diameter_mm, (0.0, 0.0),
                           min_gap_mm)
        if shape is None:
            log.warning("paint_chronic_lesions: room for only %d of %d lesions", len(placed), n)
            break
        placed.append(shape)
        look = chronic_look(rng, shape).scaled(1.0, flair=float(rng.uniform(*FLAIR_CHRONIC)))
        r = render(look, mask.shape, affine)
        for arr, level, which in ((post, levels[0], "post"), (pre, levels[1], "pre"),
                                  (flair, levels[2], "flair")):
            if arr is not None:
                paint(arr, r, level, which)
        if not r.empty:
            out[r.slices] |= r.label_mask()
    return out


def inject_lesions(post: Image, pre: Image | None, brain_or_wm_mask: np.ndarray, n: int,
                   rng: np.random.Generator, *, kinds=KINDS, diameter_mm=(3.0, 12.0),
                   contrast=(0.2, 1.0), avoid: np.ndarray | None = None,
                   wm_level: float | None = None, min_gap_mm: float = 3.0,
                   flair: Image | None = None,
                   ) -> tuple[Image, Image | None, np.ndarray, list[dict], Image | None]:
    """Inject ``n`` synthetic enhancing lesions into a real post-contrast scan.

    Parameters
    ----------
    post : Image
        Post-contrast T1 (not modified).
    pre : Image or None
        Pre-contrast T1 of the same session, in the same world space (any grid);
        lesions are painted there T1-iso/hypointense, without enhancement.
    brain_or_wm_mask : ndarray of bool, on ``post``'s grid
        Where lesion centres may go. Pass a white-matter mask (see
        :func:`lesioncount.phantom.anatomy.white_matter_mask`) for realism; a
        whole-brain mask also works but then lesions may land in grey matter.
    n : int
        Number of lesions wanted; fewer are placed (with a warning in the log) when
        the mask has no room for them.
    rng : numpy.random.Generator
    kinds : tuple of {"nodular", "ring"}
    diameter_mm : (low, high)
        Diameters are drawn log-uniformly (small lesions are the common ones).
    contrast : (low, high)
        Enhancement above ``wm_level`` on post (0.2 = 20 % brighter than white matter).
    avoid : ndarray of bool, optional
        Voxels (e.g. the real lesion mask) that lesions must stay ``min_gap_mm`` away from.
    wm_level : float, optional
        Normal white-matter intensity on post; the median of ``post`` inside the mask
        by default.
    min_gap_mm : float
        Smallest gap between two lesions, and between a lesion and ``avoid``.
    flair : Image, optional
        FLAIR of the same session in the same world space (any grid): each lesion is
        painted there hyperintense (:func:`random_flair`). Its random numbers are drawn
        after all placements, so the T1 lesions are the same with or without it.

    Returns
    -------
    post, pre : Image, Image or None
        New images (float32) with the lesions.
    labels : ndarray of int32 on ``post``'s grid
        Label k marks the voxels lesion k covers by >= 50 %.
    lesions : list of dict
        One per lesion: ``lesion`` (its label), ``kind``, ``diameter_mm``, ``contrast``,
        ``volume_mm3`` (rendered volume), ``n_voxels``, ``x``, ``y``, ``z`` (world mm),
        and with ``flair`` its ``flair`` factor.
    flair : Image or None
        The new FLAIR (None without one).

    Examples
    --------
    >>> post2, pre2, labels, lesions, _ = inject_lesions(post, pre, wm, 5, np.random.default_rng(0))
    """
    mask = np.asarray(brain_or_wm_mask, bool)
    if mask.shape != post.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the post grid {post.shape}")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"lesion kind must be one of {KINDS}, got {k!r}")
    out_post = post.array.astype(np.float32, copy=True)
    out_pre = pre.array.astype(np.float32, copy=True) if pre is not None else None
    level = float(np.median(post.array[mask])) if wm_level is None else float(wm_level)
    pre_level = float(np.median(pre.array[mask])) if (pre is not None and pre.shape == post.shape) \
        else (float(np.percentile(pre.array[pre.array > 0], 75)) if pre is not None else 0.0)
    spacing = post.spacing
    inner = ndi.distance_transform_edt(mask, sampling=spacing)
    far = (ndi.distance_transform_edt(~np.asarray(avoid, bool), sampling=spacing)
           if avoid is not None and np.any(avoid) else None)
    labels = np.zeros(post.shape, np.int32)
    placed: list[LesionShape] = []
    records: list[dict] = []
    for _ in range(int(n)):
        shape = _place_one(rng, post.affine, inner, far, placed, kinds, diameter_mm, contrast,
                           min_gap_mm)
        if shape is None:
            log.warning("inject_lesions: room for only %d of %d lesions", len(placed), n)
            break
        r = render(shape, post.shape, post.affine)
        if r.empty:
            continue
        placed.append(shape)
        k = len(placed)
        paint(out_post, r, level, "post")
        lm = r.label_mask() & (labels[r.slices] == 0)
        labels[r.slices][lm] = k
        if out_pre is not None:
            paint(out_pre, render(shape, pre.shape, pre.affine), pre_level, "pre")
        records.append(dict(lesion=k, kind=shape.kind, diameter_mm=shape.diameter_mm,
                            contrast=shape.contrast,
                            volume_mm3=float(r.coverage.sum() * post.voxel_volume),
                            n_voxels=int(lm.sum()), x=float(shape.center[0]),
                            y=float(shape.center[1]), z=float(shape.center[2])))
    new_pre = Image(out_pre, pre.affine) if pre is not None else None
    new_flair = None
    if flair is not None:
        out_fl = flair.array.astype(np.float32, copy=True)
        fl_level = (float(np.median(flair.array[mask])) if flair.shape == post.shape
                    else float(np.percentile(flair.array[flair.array > 0], 50)))
        for shape, rec in zip(placed, records):
            fs = random_flair(rng, shape)
            paint(out_fl, render(fs, flair.shape, flair.affine), fl_level, "flair")
            rec["flair"] = fs.flair
        new_flair = Image(out_fl, flair.affine)
    return Image(out_post, post.affine), new_pre, labels, records, new_flair


def _place_one(rng, affine, inner, far, placed, kinds, diameter_mm, contrast, gap,
               tries: int = 300) -> LesionShape | None:
    lo, hi = np.log(diameter_mm[0]), np.log(diameter_mm[1])
    for _ in range(tries):
        d = float(np.exp(rng.uniform(lo, hi)))
        # the centre must lie at least half a radius inside the mask
        cand = np.flatnonzero(inner.ravel() >= max(0.5 * 0.5 * d, 1.0))
        if cand.size == 0:
            continue
        ijk = np.array(np.unravel_index(cand[rng.integers(cand.size)], inner.shape), float)
        ijk += rng.uniform(-0.5, 0.5, 3)
        c = apply_affine(affine, ijk)
        shape = random_shape(rng, c, d, kind=str(rng.choice(list(kinds))),
                             contrast=float(rng.uniform(*contrast)))
        rb = shape.bounding_radius
        if far is not None:
            vi = tuple(np.clip(np.round(ijk).astype(int), 0, np.asarray(far.shape) - 1))
            if far[vi] < rb + gap:
                continue
        if any(np.linalg.norm(p.center - c) < rb + p.bounding_radius + gap for p in placed):
            continue
        return shape
    return None
