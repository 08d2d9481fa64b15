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
from ..lesions import components, label_lesions, structure
from . import Detection
from .normalise import enhancement_from_pre, enhancement_from_wm, wm_normalise

log = logging.getLogger(__name__)

# Reasons a candidate component was rejected (keys of ``Detection.info["rejected"]``).
REASONS = ("small", "large", "elongated", "thin", "sheet", "surface", "csf")


def _check_inputs(post: Image, pre: Image | None, brain: np.ndarray) -> None:
    brain = np.asarray(brain)
    if brain.shape != post.shape:
        raise GridError(None, f"brain mask shape {brain.shape} does not match the "
                              f"post-contrast grid {post.shape}")
    if pre is not None:
        if pre.shape != post.shape:
            raise GridError(None, f"pre-contrast shape {pre.shape} does not match the "
                                  f"post-contrast grid {post.shape}: resample it first")
        d = float(np.abs(pre.affine - post.affine).max())
        if d > 1e-2:
            raise GridError(None, f"pre-contrast affine differs from the post-contrast grid "
                                  f"by {d:.3g} mm: resample it first")
    if not brain.any():
        raise InputError(None, "brain mask is empty")


def enhancement(post: Image, pre: Image | None, brain: np.ndarray,
                cfg: ClassicalConfig = ClassicalConfig()) -> tuple[np.ndarray, dict]:
    """Enhancement map in robust z-units (0 outside the brain) and notes on its reference."""
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
        z, info = enhancement_from_pre(p, q, brain, sp, cfg.bias_sigma_mm, cfg.mapping_bins,
                                       context_mm=cfg.context_mm,
                                       local_sigma_mm=cfg.local_noise_mm)
    else:
        z, info = enhancement_from_wm(p, brain, sp, cfg.bias_sigma_mm, cfg.local_noise_mm)
    z = np.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(z, -cfg.z_clip, cfg.z_clip, out=z)
    return z.astype(np.float32), info


def _fill_holes(comp: np.ndarray) -> np.ndarray:
    """3D hole filling, then 2D per slice along each axis (open rings, C-shapes)."""
    out = ndi.binary_fill_holes(comp)
    for ax in range(3):
        sl = [slice(None)] * 3
        for i in range(comp.shape[ax]):
            sl[ax] = i
            s = tuple(sl)
            if out[s].any():
                out[s] = ndi.binary_fill_holes(out[s])
    return out


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


def detect(post: Image, pre: Image | None, brain: np.ndarray,
           cfg: ClassicalConfig = ClassicalConfig(),
           lesion_cfg: LesionConfig = LesionConfig()) -> Detection:
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
    brain = np.asarray(brain, dtype=bool)
    z, info = enhancement(post, pre, brain, cfg)
    sp = post.spacing
    axes = post.affine[:3, :3] / sp
    vox = post.voxel_volume

    # Reference for the CSF test: the pre scan (no enhancement) when present, else post,
    # both normalised so that white matter is 1.
    refimg = pre.array if pre is not None else post.array
    ref, _ = wm_normalise(np.nan_to_num(refimg.astype(np.float32)), brain, sp, cfg.bias_sigma_mm)

    from skimage.filters import apply_hysteresis_threshold

    cand = apply_hysteresis_threshold(np.where(brain, z, 0), cfg.extent_z, cfg.seed_z)
    labels, n = components(cand, lesion_cfg)
    depth = ndi.distance_transform_edt(brain, sampling=sp).astype(np.float32)

    mask = np.zeros(post.shape, dtype=bool)
    rejected_mask = np.zeros(post.shape, dtype=bool)
    rejected = {r: 0 for r in REASONS}
    candidates = []
    pad = np.ceil(cfg.shell_mm / sp).astype(int) + 1
    shell_struct = structure(lesion_cfg)
    for lab, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        lo = [max(0, s.start - p) for s, p in zip(sl, pad)]
        hi = [min(n_, s.stop + p) for s, p, n_ in zip(sl, pad, post.shape)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        comp = labels[box] == lab
        if cfg.extent_fraction > 0:
            # the lesion's edge is where its enhancement falls to a fraction of its own
            # peak (half maximum), not where it merges into the noise
            zb = z[box]
            peak = float(np.percentile(zb[comp], 95))
            thr = max(cfg.extent_z, cfg.extent_fraction * peak)
            if thr > cfg.extent_z:
                comp = apply_hysteresis_threshold(np.where(comp, zb, 0), thr,
                                                  max(cfg.seed_z, thr))
        if comp.sum() * vox < lesion_cfg.min_volume_mm3:
            rejected["small"] += 1
            rejected_mask[box] |= comp
            continue
        comp = _fill_holes(comp) & brain[box] | comp
        volume = float(comp.sum() * vox)
        ijk = np.argwhere(comp) + np.asarray(lo)
        xyz = ijk @ post.affine[:3, :3].T
        s1, s2, s3 = _shape(xyz, sp, axes)
        elong = s1 / s2
        flat = s2 / s3
        # thickness: largest inscribed radius vs the radius of a ball of the same volume
        inner = ndi.distance_transform_edt(np.pad(comp, 1), sampling=sp).max()
        r_eq = (3.0 * volume / (4.0 * np.pi)) ** (1.0 / 3.0)
        thick = float(inner / r_eq)
        surf = float(np.mean(depth[box][comp] < cfg.surface_margin_mm))
        # shell of surrounding tissue: dilation by shell_mm (in mm, anisotropy-aware)
        dist_out = ndi.distance_transform_edt(~comp, sampling=sp)
        shell = (dist_out > 0) & (dist_out <= cfg.shell_mm) & brain[box]
        dark = float(np.mean(ref[box][shell] < cfg.csf_level)) if shell.any() else 1.0
        feats = dict(label=lab, volume_mm3=volume, elongation=float(elong),
                     flatness=float(flat), thickness=thick, surface_fraction=surf,
                     csf_fraction=dark, max_z=float(z[box][comp].max()),
                     centroid_ijk=[float(v) for v in ijk.mean(axis=0)])
        reason = None
        if volume > cfg.max_volume_mm3:
            reason = "large"
        elif surf > cfg.max_surface_fraction:
            reason = "surface"
        elif elong > cfg.max_elongation:
            reason = "elongated"
        elif thick < cfg.min_thickness_ratio:
            reason = "thin"
        elif flat > cfg.max_flatness:
            reason = "sheet"
        elif dark > cfg.max_csf_fraction:
            reason = "csf"
        feats["reason"] = reason
        candidates.append(feats)
        if reason is None:
            mask[box] |= comp
        else:
            rejected[reason] += 1
            rejected_mask[box] |= comp

    mask = label_lesions(mask, post.affine, lesion_cfg) > 0
    prob = 1.0 / (1.0 + np.exp(-(z - cfg.seed_z) / cfg.probability_scale_z))
    prob = np.where(brain, prob, 0.0)
    prob = np.where(rejected_mask & ~mask, np.minimum(prob, cfg.rejected_probability_cap), prob)
    prob = np.where(mask, np.maximum(prob, 0.5), prob).astype(np.float32)
    info = dict(info)
    info.update(n_candidates=int(n), n_accepted=int(label_lesions(mask, post.affine,
                                                                  lesion_cfg).max()),
                rejected=rejected, candidates=candidates,
                seconds=round(time.perf_counter() - t0, 2))
    log.info("classical detector: %d candidates, %d accepted, rejected %s (%.1f s)",
             n, info["n_accepted"], rejected, info["seconds"])
    return Detection(enhancement=z.astype(np.float32), probability=prob, mask=mask, info=info)
