"""Classical Gd+ detector: enhancement map, hysteresis threshold, suppression of normal enhancement.

Steps (every number in :class:`lesioncount.config.ClassicalConfig`, with its reason):

1. Enhancement in robust z-units (:mod:`lesioncount.segmentation.normalise`): relative to
   the registered pre-contrast scan when there is one (nonparametric intensity mapping +
   smooth relative bias), else relative to normal-appearing white matter.
2. Light Gaussian smoothing in mm, then hysteresis: seeds above ``seed_z`` grow into
   connected voxels above ``extent_z``.
3. Per candidate component (one lesion definition, :func:`lesioncount.lesions.components`):
   holes filled (a ring-enhancing lesion is one lesion with its full volume), then rejected
   if it is a vessel (elongated or thin for its volume), a sheet (dura, falx), mostly at the
   brain surface (dura, sinuses, cortical veins), mostly surrounded by CSF (choroid plexus in
   the ventricles), or too small (:class:`~lesioncount.config.LesionConfig`).
   With a FLAIR: rejected too when not FLAIR-hyperintense (veins, dura and choroid plexus are
   not; active lesions are) unless strongly enhancing and not FLAIR-dark, and seeded from a
   lower threshold where FLAIR is hyperintense. A FLAIR-bright, strongly enhancing candidate
   wrapped in white matter is kept even where it touches a vein or a ventricle, and one
   enhancing more strongly still whatever surrounds it. With a pre-contrast scan, a round,
   clearly enhancing blob wrapped in white matter is kept without a FLAIR correlate
   (``round_*``) unless its FLAIR is dark. With a pre-contrast scan too, a
   candidate inside a clear FLAIR lesion, in white matter, is kept whatever its shape
   (``flair_lesion_ratio``), and a large vessel-shaped part is opened again
   (``reopen_mm``, then the finer ``reopen_fine_mm`` for a 3-4 mm lesion) so that a
   FLAIR-bright lesion merged with a thick vein is judged alone.
4. ``probability``: a logistic of the enhancement, capped below 0.5 in rejected candidates.

Everything is measured in mm and mm^3 from the affine, so 1 mm isotropic and 1x1x3 mm
acquisitions in any orientation are treated alike.
"""
from __future__ import annotations

import logging
import time

import numpy as np
from scipy import ndimage as ndi

from ..config import ClassicalConfig, LesionConfig
from ..errors import GridError, InputError
from ..image import Image
from ..lesions import component_volumes, components, label_lesions
from ..morphology import fill_holes
from . import Detection
from .normalise import enhancement_from_pre, enhancement_from_wm, flair_ratio, wm_normalise

log = logging.getLogger(__name__)

# Reasons a candidate component was rejected (keys of ``Detection.info["rejected"]``).
REASONS = ("small", "large", "elongated", "thin", "vessel_piece", "sheet", "surface", "csf",
           "not_wm", "no_flair", "faint")
# Rejections for looking like a vein, the choroid plexus or grey matter (shape, place, no
# FLAIR correlate), not for being faint, small or at the brain surface: such a candidate
# peaking at the seed threshold is deferred to the tracking stage, which keeps it when its
# place does not enhance on most visits (lesioncount.stability.transient_foci). Only with
# a FLAIR, and not where it is darker than white matter (flair_veto_ratio: the FLAIR says
# vessel): on tuning seeds 13/17/19 every look-alike that enhanced on <= 2 visits at z >= 8
# without being a lesion was FLAIR-dark, so without a FLAIR the rule would count veins.
# A candidate whose only fault is its FLAIR (no_flair) is deferred down to
# no_flair_defer_ratio: 0.9-1.0 is no correlate rather than a dark one.
DEFERRABLE = ("elongated", "thin", "vessel_piece", "sheet", "csf", "not_wm", "no_flair")


def _check_inputs(post: Image, pre: Image | None, brain: np.ndarray,
                  flair: Image | None = None) -> None:
    brain = np.asarray(brain)
    if brain.shape != post.shape:
        raise GridError(None, f"brain mask shape {brain.shape} does not match the "
                              f"post-contrast grid {post.shape}")
    for name, other in (("pre-contrast", pre), ("FLAIR", flair)):
        if other is None:
            continue
        if other.shape != post.shape:
            raise GridError(None, f"{name} shape {other.shape} does not match the "
                                  f"post-contrast grid {post.shape}: resample it first")
        d = float(np.abs(other.affine - post.affine).max())
        if d > 1e-2:
            raise GridError(None, f"{name} affine differs from the post-contrast grid "
                                  f"by {d:.3g} mm: resample it first")
    if not brain.any():
        raise InputError(None, "brain mask is empty")


def enhancement(post: Image, pre: Image | None, brain: np.ndarray,
                cfg: ClassicalConfig = ClassicalConfig()) -> tuple[np.ndarray, dict]:
    """Enhancement map in robust z-units (0 outside the brain) and notes on its reference."""
    z, _, info = _enhancement(post, pre, brain, cfg)
    return z, info


def _enhancement(post, pre, brain, cfg):
    _check_inputs(post, pre, brain)
    brain = np.asarray(brain, dtype=bool)
    sp = post.spacing
    p = np.nan_to_num(post.array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if cfg.smoothing_mm > 0:
        p = ndi.gaussian_filter(p, cfg.smoothing_mm / sp).astype(np.float32)
    if pre is not None:
        q = np.nan_to_num(pre.array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if cfg.smoothing_mm > 0:
            q = ndi.gaussian_filter(q, cfg.smoothing_mm / sp).astype(np.float32)
        z, resid, info = enhancement_from_pre(p, q, brain, sp, cfg.bias_sigma_mm, cfg.mapping_bins,
                                       context_mm=cfg.context_mm,
                                       local_sigma_mm=cfg.local_noise_mm)
    else:
        z, resid, info = enhancement_from_wm(p, brain, sp, cfg.bias_sigma_mm, cfg.local_noise_mm)
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(z, -cfg.z_clip, cfg.z_clip, out=z)
    resid = np.nan_to_num(resid, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    return z.astype(np.float32), resid, info


def _shape(coords_mm: np.ndarray, spacing: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Principal standard deviations (mm, descending) of a voxel set, voxel extent included.

    Each voxel is a box, not a point: its own second moment (spacing^2 / 12 along each
    voxel axis, rotated to world by ``axes``) is added, so a one-slice 3 mm lesion is not
    mistaken for a sheet.
    """
    c = np.cov(coords_mm.T) if len(coords_mm) > 1 else np.zeros((3, 3))
    c = c + axes @ np.diag(spacing ** 2 / 12.0) @ axes.T
    ev = np.sort(np.linalg.eigvalsh(c))[::-1]
    return np.sqrt(np.maximum(ev, 1e-12))


def _ball(radius_mm: float, spacing: np.ndarray) -> np.ndarray:
    """Structuring element: voxel offsets within ``radius_mm`` (physical, anisotropy-aware)."""
    h = np.floor(radius_mm / spacing + 1e-6).astype(int)
    g = np.meshgrid(*[np.arange(-k, k + 1) * s for k, s in zip(h, spacing)], indexing="ij")
    return sum(x ** 2 for x in g) <= radius_mm ** 2 + 1e-6


def _thickness(comp: np.ndarray, sp: np.ndarray, volume: float) -> float:
    """Largest inscribed radius over the radius of the ball (or disk) of the same size.

    ~1 for nodules and filled rings, ~0.3-0.5 for tortuous vessels. On thick slices (one
    voxel side over 1.5x another) a small lesion covers one or two slices, its volume is
    inflated by the slice thickness and its inscribed radius capped by it (lesions of 36-60
    mm^3 measured 0.58-0.69 and were rejected as vessels), so there the ratio is measured
    in-plane, on the slice where the component is largest. Tuning seed 11, 28 thick-slice
    scans: 25 instead of 22 of 28 lesions found; the vessel pieces it lets through recur on
    most visits and are removed by lesioncount.stability.
    """
    if sp.max() <= 1.5 * sp.min():
        inner = ndi.distance_transform_edt(np.pad(comp, 1), sampling=sp).max()
        return float(inner / ((3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)))
    ax = int(np.argmax(sp))
    planes = np.moveaxis(comp, ax, 0)
    k = int(np.argmax(planes.reshape(planes.shape[0], -1).sum(axis=1)))
    sp2 = np.delete(sp, ax)
    inner = ndi.distance_transform_edt(np.pad(planes[k], 1), sampling=sp2).max()
    r_eq = np.sqrt(planes[k].sum() * float(np.prod(sp2)) / np.pi)
    return float(inner / r_eq)


# Features _shape_features measures; None in a candidate rejected by its cheap features.
SHAPE_FEATURES = ("elongation", "flatness", "ref_level", "thickness", "csf_fraction", "shell_level",
                  "flair_ratio")


def _cheap_features(comp, lo, box, z, depth, post, cfg, resid=None) -> dict:
    """Volume, surface fraction, contrast, peak z, centroid: enough for "large" and "surface".

    ``depth`` is the distance to the brain's surface on ``box`` (:func:`_surface_depth`).
    """
    volume = float(comp.sum() * post.voxel_volume)
    ijk = np.argwhere(comp) + np.asarray(lo)
    # enhancement in white-matter units (0.3 = 30 % above the expected intensity): the
    # median over the component's brightest half, robust to its partial-volume rim
    rv = np.sort(resid[box][comp]) if resid is not None else np.zeros(1)
    return dict(volume_mm3=volume, n_voxels=int(comp.sum()),
                contrast=float(np.median(rv[len(rv) // 2:])),
                surface_fraction=float(np.mean(depth[comp] < cfg.surface_margin_mm)),
                max_z=float(z[box][comp].max()),
                centroid_ijk=[float(v) for v in ijk.mean(axis=0)])


def _surface_depth(brain: np.ndarray, box: tuple, spacing: np.ndarray) -> np.ndarray:
    """:func:`lesioncount.brain.brain_surface_distance` on ``box`` of the grid alone.

    A distance under the box's margin around a voxel is the whole grid's (the voxels
    outside the brain that set it lie in the box), and the grid's edge still bounds the
    brain; a larger one may be larger than the whole grid's, which no test here reads.
    The whole grid's distance map cost ~1 s of a 1 mm whole head's detection; a hundred
    candidate boxes cost a few hundredths.
    """
    edge = [(int(s.start == 0), int(s.stop == n)) for s, n in zip(box, brain.shape)]
    d = ndi.distance_transform_edt(np.pad(brain[box], edge), sampling=spacing)
    return d[tuple(slice(a, n - b) for (a, b), n in zip(edge, d.shape))]


def _geometry(comp, lo, post, volume: float) -> dict:
    """Elongation, flatness and thickness of a component (all the vessel-piece test needs)."""
    sp = post.spacing
    axes = post.affine[:3, :3] / sp
    xyz = (np.argwhere(comp) + np.asarray(lo)) @ post.affine[:3, :3].T
    s1, s2, s3 = _shape(xyz, sp, axes)
    # thickness: largest inscribed radius vs the radius of a ball of the same volume
    tight = ndi.find_objects(comp.astype(np.uint8))[0]
    return dict(elongation=float(s1 / s2), flatness=float(s2 / s3),
                thickness=_thickness(comp[tight], sp, volume))


def _reach(mask: np.ndarray, ball: np.ndarray) -> tuple:
    """The part of ``mask``'s array a morphology with ``ball`` can touch: its bounding box
    grown by the ball's half-width (clipped to the array, whose edge stays an edge).

    A dilation or opening on that window gives exactly the voxels it gives on the whole
    array. The parts of a vessel tree share their tree's box, which can span the brain:
    morphology on each part's own window cut a 1 mm whole head's detection from 25 to
    ~17 s on one core (measured on held-out seed 2026 sub-01, identical results).
    """
    tight = ndi.find_objects(mask.astype(np.uint8))[0]
    half = np.asarray(ball.shape) // 2
    return tuple(slice(max(0, t.start - h), min(n, t.stop + h))
                 for t, h, n in zip(tight, half, mask.shape))


def _shape_features(comp, lo, box, ref, brain, post, cfg, volume: float) -> dict:
    """Geometry, and the surrounding shell (the costly part)."""
    # shell of surrounding tissue within shell_mm (anisotropy-aware: a dilation by a
    # ball in mm is the set of voxels within shell_mm of the component)
    ball = _ball(cfg.shell_mm, post.spacing)
    w = _reach(comp, ball)
    c = comp[w]
    shell = ndi.binary_dilation(c, structure=ball) & ~c & brain[box][w]
    r = ref[box][w]
    return dict(_geometry(comp, lo, post, volume), ref_level=float(np.median(r[c])),
                csf_fraction=float(np.mean(r[shell] < cfg.csf_level)) if shell.any() else 1.0,
                shell_level=float(np.median(r[shell])) if shell.any() else 0.0)


def _is_vessel_piece(part: dict, parent: dict | None, cfg: ClassicalConfig) -> bool:
    """A round piece cut out of a vessel by the opening is still a vessel: when the whole
    component (``parent``; None when the opening cut nothing) is vessel-shaped and this
    piece is a minor part of it, smaller than any lesion-sized blob a vein cannot be."""
    return bool(
        parent is not None
        and (parent["elongation"] > cfg.max_elongation
             or parent["thickness"] < cfg.min_thickness_ratio)
        and part["volume_mm3"] < cfg.min_part_fraction * parent["volume_mm3"]
        and part["volume_mm3"] < cfg.vessel_piece_max_mm3)


def _cheap_reason(f: dict, cfg: ClassicalConfig) -> str | None:
    """The rejections decided by :func:`_cheap_features` alone (checked first by _reason)."""
    if f["volume_mm3"] > cfg.max_volume_mm3:
        return "large"
    if f["surface_fraction"] > cfg.max_surface_fraction:
        return "surface"
    return None


def _round_in_wm(f: dict, cfg: ClassicalConfig) -> bool:
    """A round, clearly enhancing blob wrapped in white matter (ClassicalConfig.round_*):
    an active lesion even without a FLAIR correlate (see there)."""
    return bool(cfg.round_max_axis_ratio > 0
                and f["elongation"] <= cfg.round_max_axis_ratio
                and f["flatness"] <= cfg.round_max_axis_ratio
                and f["shell_level"] >= cfg.round_min_shell
                and f["csf_fraction"] <= cfg.round_max_csf
                and f["contrast"] >= cfg.round_min_contrast
                and f["max_z"] >= cfg.seed_z)


def _reason(f: dict, cfg: ClassicalConfig, with_pre: bool = True) -> str | None:
    """Why candidate ``f`` is rejected (one of REASONS), None when kept. ``with_pre``: its
    enhancement was measured against a pre-contrast scan."""
    cheap = _cheap_reason(f, cfg)
    if cheap is not None:
        return cheap
    fr = f.get("flair_ratio")
    # from the post-contrast scan alone (no pre-contrast scan, no FLAIR: flair_ratio None)
    if (not with_pre and fr is None
            and f.get("n_voxels", cfg.min_voxels_post) < cfg.min_voxels_post):
        return "small"
    flair_bright = fr is not None and fr >= cfg.flair_min_ratio
    # FLAIR-confirmed, strongly enhancing and wrapped in white matter: not a vein or plexus
    confirmed = (flair_bright and f["max_z"] >= cfg.flair_rescue_z
                 and f["shell_level"] >= cfg.min_shell_level)
    # inside a clear FLAIR lesion, in white matter, enhancing to seed_z: its shape and
    # shell do not make it a vessel or grey matter
    lesion_like = (with_pre and fr is not None and fr >= cfg.flair_lesion_ratio
                   and f["csf_fraction"] <= cfg.flair_lesion_max_csf
                   and f["shell_level"] >= cfg.flair_lesion_min_shell
                   and f["thickness"] >= cfg.flair_lesion_min_thickness)
    in_lesion = lesion_like and f["max_z"] >= cfg.seed_z
    # a typical MS lesion's FLAIR, clearly enhancing: at a ventricle's edge (csf, not_wm)
    # or cut off a vessel by the opening, it is still a lesion
    clear = (with_pre and fr is not None and fr >= cfg.flair_clear_ratio
             and f["max_z"] >= cfg.flair_clear_z)
    # seeded by the FLAIR alone but enhancing visibly (the "faint" test below): a small
    # faint lesion's thickness is that of a few voxels, not of a vessel; the vessel_piece
    # and shell rules still apply to it
    faint_in_lesion = lesion_like and f["contrast"] >= cfg.flair_seed_min_contrast
    if f.get("vessel_piece") and not (confirmed or in_lesion or clear):
        return "vessel_piece"
    if f["elongation"] > cfg.max_elongation:
        return "elongated"
    if f["thickness"] < cfg.min_thickness_ratio and not (in_lesion or faint_in_lesion):
        return "thin"
    if f["flatness"] > cfg.max_flatness:
        return "sheet"
    # (measured on the post-contrast scan when there is no pre-contrast one: stricter)
    max_csf = cfg.max_csf_fraction if with_pre else cfg.max_csf_fraction_post
    min_shell = cfg.min_shell_level if with_pre else cfg.min_shell_level_post
    if f["csf_fraction"] > max_csf and not (confirmed or clear):
        return "csf"
    if f["shell_level"] < min_shell and not (in_lesion or clear) and not (
            flair_bright and f["max_z"] >= cfg.flair_rescue_any_shell_z):
        return "not_wm"
    # FLAIR darker than white matter contradicts a lesion; a FLAIR that merely fails to
    # confirm does not outweigh strong enhancement
    if fr is not None and fr < cfg.flair_min_ratio and (
            fr < cfg.flair_veto_ratio or f["max_z"] < cfg.flair_override_z) and not (
            with_pre and fr >= cfg.no_flair_defer_ratio and _round_in_wm(f, cfg)):
        return "no_flair"
    # seeded by the FLAIR alone (peak under seed_z): it must enhance visibly and lie in a
    # clear FLAIR lesion, not at the edge of the FLAIR threshold that seeded it
    if fr is not None and f["max_z"] < cfg.seed_z and (
            f["contrast"] < cfg.flair_seed_min_contrast or fr < cfg.flair_seed_min_ratio):
        return "faint"
    # too little enhancement over the pre-contrast scan to be a Gd+ lesion (a chronic
    # lesion's residual from the pre -> post mapping)
    if with_pre and f["contrast"] < cfg.min_contrast_with_pre:
        return "faint"
    return None


def candidates(post: Image, pre: Image | None, brain: np.ndarray,
               cfg: ClassicalConfig = ClassicalConfig(),
               lesion_cfg: LesionConfig = LesionConfig(), flair: Image | None = None):
    """Enhancement map, candidate labels and per-candidate features (before the decision).

    Returns ``(z, info, labels, features)``: ``labels`` numbers the candidates 1..n on
    ``post``'s grid and ``features[k - 1]`` describes candidate ``k`` (volume, voxel count,
    elongation, flatness, thickness, surface and CSF fractions, peak z, centroid). Candidates below
    the minimum lesion volume are dropped (counted in ``info["n_small"]``).
    """
    brain = np.asarray(brain, dtype=bool)
    _check_inputs(post, pre, brain, flair)
    z, resid, info = _enhancement(post, pre, brain, cfg)
    sp = post.spacing
    vox = post.voxel_volume
    # Reference for the CSF test: the pre scan (no enhancement) when present, else post,
    # both normalised so that white matter is 1.
    refimg = pre.array if pre is not None else post.array
    ref, _ = wm_normalise(np.nan_to_num(refimg.astype(np.float32)), brain, sp, cfg.bias_sigma_mm)
    fl = None
    seed_mask = brain & (z > cfg.seed_z)
    if flair is not None:
        fl = flair_ratio(flair.array, ref, brain, sp, cfg.bias_sigma_mm, cfg.flair_nawm_band)
        seed_mask |= brain & (z > cfg.flair_seed_z) & (fl >= cfg.flair_min_ratio)
        if pre is not None and cfg.flair_lesion_seed_z < cfg.flair_seed_z:
            # inside a clear FLAIR lesion, any visible enhancement over the pre-contrast
            # scan (from post alone a T1-bright FLAIR lesion would pass for one)
            seed_mask |= brain & (z > cfg.flair_lesion_seed_z) & (fl >= cfg.flair_lesion_ratio)
        info = dict(info, flair=True)
    seeds = _hysteresis(brain & (z > cfg.extent_z), seed_mask)
    labels, n = components(seeds, lesion_cfg)
    opener = _ball(cfg.opening_mm, sp) if cfg.opening_mm > 0 else None
    out = np.zeros(post.shape, dtype=np.int32)
    feats: list[dict] = []
    n_small = 0
    # (the box around a candidate holds its shell, and every voxel within
    # surface_margin_mm of it: its surface depth is measured on the box alone)
    pad = np.ceil(max(cfg.shell_mm, cfg.surface_margin_mm) / sp).astype(int) + 2
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        lo = [max(0, s.start - p) for s, p in zip(sl, pad)]
        hi = [min(n_, s.stop + p) for s, p, n_ in zip(sl, pad, post.shape)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        comp = labels[box] == lab
        if comp.sum() * vox < lesion_cfg.min_volume_mm3:
            n_small += 1
            continue
        depth = _surface_depth(brain, box, sp)
        if cfg.extent_fraction > 0:
            # the lesion's edge is where its enhancement (in intensity, not z: the noise
            # scale varies with the pre intensity) falls to a fraction of its own peak
            # (half maximum), not where it merges into the noise
            # The peak is local (within peak_radius_mm), so a lesion touching a brighter
            # vessel keeps its own edge instead of falling below half the vessel's peak.
            rb = np.where(comp, resid[box], 0)
            h = np.maximum(1, np.round(cfg.peak_radius_mm / sp)).astype(int)
            # (the peak of the residual smoothed at 1 mm: one noisy voxel does not set it)
            peak = ndi.maximum_filter(ndi.gaussian_filter(rb, 1.0 / sp), size=tuple(2 * h + 1))
            grow = comp & (rb >= cfg.extent_fraction * peak)
            seed = grow & seed_mask[box]
            if seed.any():
                gl, _ = components(grow, lesion_cfg)
                keep = np.unique(gl[seed])
                comp = np.isin(gl, keep[keep > 0])
        # rings become one lesion with their full volume
        comp = fill_holes(comp) & brain[box] | comp
        parts = [comp]
        cut = False
        if opener is not None:
            # an opening cuts thin vessels off a nodule (and from each other): each
            # remaining thick part is judged on its own, the thin rest is dropped. A
            # candidate it leaves nothing of is judged whole, and so is one it leaves only
            # specks of when a clear FLAIR lesion backs it (a 3-4 mm lesion; opening_mm)
            opened = ndi.binary_opening(comp, structure=opener)
            plab, pn = components(opened, lesion_cfg)
            vols = component_volumes(plab, vox)
            big = [plab == k for k in range(1, pn + 1) if vols[k] >= lesion_cfg.min_volume_mm3]
            if big:
                parts = big
                n_small += pn - len(big)
                cut = pn > 1 or opened.sum() < 0.9 * comp.sum()
            elif pn and (fl is None
                         or float(np.median(fl[box][comp])) < cfg.flair_seed_min_ratio):
                parts = []
                n_small += 1
        parts = _reopen(parts, lo, box, fl if pre is not None else None, post, cfg, lesion_cfg)
        parent = None
        for part, own_parent in parts:
            if part.sum() * vox < lesion_cfg.min_volume_mm3:
                n_small += 1
                continue
            f = _cheap_features(part, lo, box, z, depth, post, cfg, resid)
            if _cheap_reason(f, cfg) is not None:
                # rejected whatever its shape: the costly features are not measured (~2/3
                # of the candidates of a 1 mm scan touch the brain surface)
                f.update(dict.fromkeys(SHAPE_FEATURES), vessel_piece=False)
            else:
                f.update(_shape_features(part, lo, box, ref, brain, post, cfg, f["volume_mm3"]))
                f["flair_ratio"] = float(np.median(fl[box][part])) if fl is not None else None
                if own_parent is not None:
                    f["vessel_piece"] = _is_vessel_piece(f, own_parent, cfg)
                else:
                    if cut and parent is None:
                        v = float(comp.sum() * vox)
                        parent = dict(_geometry(comp, lo, post, v), volume_mm3=v)
                    f["vessel_piece"] = _is_vessel_piece(f, parent, cfg)
            feats.append(f)
            out[box][part] = len(feats)
    info = dict(info)
    info.update(n_candidates=len(feats), n_small=n_small)
    return z, info, out, feats


def _reopen(parts, lo, box, fl, post, cfg, lesion_cfg):
    """Large vessel-shaped parts opened again with reopen_mm: when one of the thick cores
    it leaves is FLAIR-bright (a lesion merged with a vessel), every core is judged on its
    own, with the part as its parent; other parts stay whole. A vessel-shaped part that
    this leaves whole (too small, or no FLAIR-bright core) is opened with the finer
    reopen_fine_mm ball the same way (a 3-4 mm lesion against a vein or the plexus).
    Returns (mask, parent or None) pairs. ``fl`` None (no FLAIR, or no pre-contrast scan)
    or reopen_mm 0: every part stays whole (reopen_fine_mm 0: no finer opening)."""
    vox = post.voxel_volume
    out = []
    scales = [(cfg.reopen_mm, cfg.reopen_min_mm3, cfg.reopen_min_part_mm3),
              (cfg.reopen_fine_mm, cfg.reopen_fine_min_mm3, cfg.reopen_fine_min_part_mm3)]
    scales = [s for s in scales if s[0] > 0] if cfg.reopen_mm > 0 else []
    for part in parts:
        v = float(part.sum() * vox)
        cores = None
        if fl is not None and scales and v >= min(s[1] for s in scales):
            g = _geometry(part, lo, post, v)
            if g["thickness"] < cfg.min_thickness_ratio or g["elongation"] > cfg.max_elongation:
                for radius, min_part, min_core in scales:
                    if v >= min_part:
                        cores = _bright_cores(part, box, fl, radius, min_core, post, cfg,
                                              lesion_cfg)
                    if cores:
                        break
        if cores:
            out += [(c, dict(g, volume_mm3=v)) for c in cores]
        else:
            out.append((part, None))
    return out


def _bright_cores(part, box, fl, radius_mm, min_core_mm3, post, cfg, lesion_cfg):
    """The cores of ``part`` opened with a ball of ``radius_mm`` (at least min_core_mm3
    each) when one of them reaches flair_lesion_ratio on the FLAIR, else None."""
    # (a core's median reaches it only if half its voxels do: a part with fewer such
    # voxels than half the smallest core has none, and is not opened at all)
    bright = int(np.count_nonzero(fl[box][part] >= cfg.flair_lesion_ratio))
    if bright * post.voxel_volume < 0.5 * min_core_mm3:
        return None
    ball = _ball(radius_mm, post.spacing)
    w = _reach(part, ball)
    op = np.zeros_like(part)
    op[w] = ndi.binary_opening(part[w], structure=ball)
    sl, sn = components(op, lesion_cfg)
    sv = component_volumes(sl, post.voxel_volume)
    cores = [sl == k for k in range(1, sn + 1) if sv[k] >= min_core_mm3]
    if any(float(np.median(fl[box][c])) >= cfg.flair_lesion_ratio for c in cores):
        return cores
    return None


def _hysteresis(low: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The face-connected components of ``low`` that contain a seed voxel (as
    skimage.filters.apply_hysteresis_threshold, with a seed mask instead of one threshold)."""
    lab, n = ndi.label(low)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[seeds & low])] = True
    keep[0] = False
    return keep[lab]


def detect(post: Image, pre: Image | None, brain: np.ndarray,
           cfg: ClassicalConfig = ClassicalConfig(),
           lesion_cfg: LesionConfig = LesionConfig(), flair: Image | None = None) -> Detection:
    """Detect gadolinium-enhancing lesions on a post-contrast T1 scan.

    Parameters
    ----------
    post : Image
        Post-contrast T1 (any orientation, 1 mm isotropic or thick slices).
    pre : Image or None
        Pre-contrast T1 of the same session, already registered and resampled onto
        ``post``'s grid; ``None`` to measure enhancement against white matter.
    brain : ndarray of bool
        Brain mask on ``post``'s grid.
    cfg : ClassicalConfig
        Thresholds and suppression rules.
    lesion_cfg : LesionConfig
        The one lesion definition (connectivity, minimum volume).
    flair : Image or None
        FLAIR of the same session on ``post``'s grid: candidates without FLAIR
        hyperintensity are rejected ("no_flair") unless they enhance to
        ``cfg.flair_override_z`` and are not FLAIR-dark; FLAIR-bright ones seed from
        ``cfg.flair_seed_z``. None: the T1 rules alone.

    Returns
    -------
    Detection
        ``enhancement`` (robust z), ``probability`` in [0, 1], ``mask`` of accepted lesion
        voxels (components of at least ``lesion_cfg.min_volume_mm3``) and ``info`` with the
        reference used, candidate counts and rejection reasons.

    Raises
    ------
    GridError
        If ``pre`` or ``brain`` is not on ``post``'s grid.
    """
    t0 = time.perf_counter()
    z, info, cand, feats = candidates(post, pre, brain, cfg, lesion_cfg, flair)
    brain = np.asarray(brain, dtype=bool)
    rejected = {r: 0 for r in REASONS}
    rejected["small"] = info["n_small"]
    ok = np.zeros(len(feats) + 1, dtype=bool)
    defer = np.zeros(len(feats) + 1, dtype=bool)
    for k, f in enumerate(feats, start=1):
        f["label"] = k
        f["reason"] = _reason(f, cfg, with_pre=pre is not None)
        if f["reason"] is None:
            ok[k] = True
            continue
        rejected[f["reason"]] += 1
        fr = f.get("flair_ratio")
        floor = cfg.no_flair_defer_ratio if f["reason"] == "no_flair" else cfg.flair_veto_ratio
        defer[k] = (f["reason"] in DEFERRABLE and f["max_z"] >= cfg.seed_z
                    and fr is not None and fr >= floor)
    mask = ok[cand]
    rejected_mask = (cand > 0) & ~mask
    mask = label_lesions(mask, post.affine, lesion_cfg) > 0
    prob = 1.0 / (1.0 + np.exp(-(z - cfg.seed_z) / cfg.probability_scale_z))
    prob = np.where(brain, prob, 0.0)
    prob = np.where(rejected_mask & ~mask, np.minimum(prob, cfg.rejected_probability_cap), prob)
    prob = np.where(mask, np.maximum(prob, 0.5), prob).astype(np.float32)
    info.update(n_accepted=int(label_lesions(mask, post.affine,
                                                                  lesion_cfg).max()),
                rejected=rejected, candidates=feats,
                seconds=round(time.perf_counter() - t0, 2))
    log.info("classical detector: %d candidates, %d accepted, rejected %s (%.1f s)",
             len(feats), info["n_accepted"], rejected, info["seconds"])
    return Detection(enhancement=z.astype(np.float32), probability=prob, mask=mask, info=info,
                     deferred=defer[cand] & ~mask)
