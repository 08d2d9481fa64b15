"""Rigid (or affine) registration of two scans of one head, and the points that move with it.

:func:`register` aligns a *moving* image onto a *fixed* image with SimpleITK:
multi-resolution, Mattes mutual information (so pre- and post-contrast sequences and
1 mm vs 3 mm-slice grids can be paired), a centred initialisation, a fixed sampling
seed and a fixed thread count (so reruns give identical transforms).

Conventions
-----------
The transform of a :class:`Registration` maps points of the FIXED physical space to
the MOVING physical space (SimpleITK's LPS millimetres), exactly what
``sitk.Resample(moving, fixed, transform)`` and
:func:`lesioncount.image.resample` ``(moving, fixed, transform)`` expect.
Points handed to and returned by this module are world RAS millimetres (the
convention of :class:`~lesioncount.image.Image`); the RAS<->LPS flip is done only by
:func:`lesioncount.image.ras_to_lps` / :func:`~lesioncount.image.lps_to_ras`.

Quality
-------
``Registration.quality`` is the normalised cross-correlation (Pearson r) of the
gradient-magnitude images (Gaussian derivative, ``cfg.quality_sigma_mm``) of the fixed
image and of the moving image resampled onto the fixed grid, over the fixed brain mask
(or the fixed image's foreground when no mask is given). Edges sit at the same places
whatever the contrast (pre vs post, T1 vs T1 of another sequence), so the figure is
comparable between pairs: about 0.6-0.9 for aligned scans of one head, and it falls
towards 0 for a misalignment of a few millimetres or a registration to the wrong image.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from .config import RegistrationConfig
from .errors import ConfigError, InputError, RegistrationError
from .image import (Image, apply_affine, block_mean, crop, lps_to_ras, mask_box, ras_to_lps,
                    sitk_grid, to_sitk)

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Registration:
    """Result of :func:`register`.

    Attributes
    ----------
    transform : SimpleITK.Transform
        Maps FIXED physical points to MOVING physical points (LPS mm), the convention of
        ``sitk.Resample(moving, fixed, transform)``.
    quality : float
        Normalised correlation of gradient magnitudes over the fixed brain mask after
        alignment (see the module docstring); higher is better, 1 is a perfect match.
    failed : bool
        ``quality < cfg.min_quality``, or the optimiser ended with a non-finite metric.
    metric : float
        Final Mattes mutual information value (negative; lower is better).
    iterations : int
        Optimiser iterations over all resolution levels.
    seconds : float
        Wall time of the registration including the quality figure.
    stop_reason : str
        The optimiser's stop condition (of the last level).
    """

    transform: Any
    quality: float
    failed: bool
    metric: float
    iterations: int
    seconds: float
    stop_reason: str

    @property
    def matrix_ras(self) -> np.ndarray:
        """4x4 matrix mapping fixed world RAS points to moving world RAS points."""
        return _affine_ras(self.transform)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the session sidecar."""
        tx = self.transform
        return {
            "transform_type": tx.GetName(),
            "parameters": [float(p) for p in tx.GetParameters()],
            "fixed_parameters": [float(p) for p in tx.GetFixedParameters()],
            "matrix_fixed_to_moving_ras": _affine_ras(tx).tolist(),
            "quality": float(self.quality),
            "quality_measure": "ncc_gradient_magnitude_in_fixed_brain",
            "failed": bool(self.failed),
            "metric": float(self.metric),
            "metric_name": "mattes_mutual_information",
            "iterations": int(self.iterations),
            "seconds": float(self.seconds),
            "stop_reason": str(self.stop_reason),
        }


def identity() -> Registration:
    """The registration of a scan to itself (the baseline session): identity, quality 1."""
    import SimpleITK as sitk

    return Registration(transform=sitk.Euler3DTransform(), quality=1.0, failed=False,
                        metric=float("nan"), iterations=0, seconds=0.0, stop_reason="identity")


# ----------------------------------------------------------------------------- register


def _threads(cfg: RegistrationConfig) -> int:
    return int(cfg.threads) if cfg.threads > 0 else max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _itk_threads(n: int):
    """Run with ITK's global default thread count set to ``n`` (restored afterwards).

    The registration method's own thread count does not reach the filters of its image
    pyramid, which use the global default; both must be 1 for bit-identical reruns.
    """
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(n))
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


def _mask_sitk(mask: np.ndarray | None, image: Image, name: str):
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != image.shape:
        raise InputError(None, f"{name} has shape {m.shape}, its image has shape {image.shape}")
    if not m.any():
        raise InputError(None, f"{name} is empty")
    return to_sitk(image.like(m.astype(np.uint8)), dtype=np.uint8)


def _new_transform(kind: str):
    import SimpleITK as sitk

    if kind == "rigid":
        return sitk.Euler3DTransform()
    if kind == "affine":
        return sitk.AffineTransform(3)
    raise ConfigError(f"registration.transform must be 'rigid' or 'affine', got {kind!r}")


def _initial_transform(fixed: Image, moving: Image, ranges, init_masks,
                       cfg: RegistrationConfig):
    """Centred initialisation: the fixed centre (of mass) is mapped onto the moving one.

    With both ``init_masks``, their centres of mass are used (whole head vs brain only
    then starts at the brain centres); otherwise the intensity moments of the whole
    (robustly scaled) images, or the grid centres.
    """
    import SimpleITK as sitk

    tx = _new_transform(cfg.transform)
    if cfg.initialization == "geometry":
        mode = sitk.CenteredTransformInitializerFilter.GEOMETRY
        f, m = sitk_grid(fixed), sitk_grid(moving)
        return sitk.CenteredTransformInitializer(f, m, tx, mode)
    mode = sitk.CenteredTransformInitializerFilter.MOMENTS
    if init_masks[0] is not None and init_masks[1] is not None:
        f = sitk.Cast(_mask_sitk(init_masks[0], fixed, "fixed_mask"), sitk.sitkFloat32)
        m = sitk.Cast(_mask_sitk(init_masks[1], moving, "moving_mask"), sitk.sitkFloat32)
    else:  # one centre from a mask and one from a whole image would not correspond
        f = sitk.Clamp(_robust_scale(fixed, ranges[0]), lowerBound=0.0)
        m = sitk.Clamp(_robust_scale(moving, ranges[1]), lowerBound=0.0)
    return sitk.CenteredTransformInitializer(f, m, tx, mode)


def _intensity_range(img: Image, mask: np.ndarray | None) -> tuple[float, float]:
    """The 0.5 and 99.5 percentiles of the image inside ``mask`` (of its positive voxels
    without one): a few very bright voxels (vessels, fat) must not squeeze the MI histogram."""
    a = np.asarray(img.array)
    vals = a[mask.astype(bool)] if mask is not None else a[a > 0]
    if vals.size == 0:
        vals = a.ravel()
    lo, hi = np.percentile(vals.astype(np.float32, copy=False), [0.5, 99.5])
    if not np.isfinite(hi - lo) or hi <= lo:
        raise InputError(None, "image has no intensity range to register on")
    return float(lo), float(hi)


def _robust_scale(img: Image, lo_hi: tuple[float, float]):
    """``img`` as SimpleITK float32, ``lo_hi`` mapped to 0-1 and clipped to [-0.1, 1.1]."""
    return to_sitk(_scaled(img, lo_hi))


def _scaled(img: Image, lo_hi: tuple[float, float]) -> Image:
    """``img`` in float32 with ``lo_hi`` mapped to 0-1, clipped to [-0.1, 1.1]."""
    lo, hi = lo_hi
    a = np.asarray(img.array, dtype=np.float32)
    return img.like(np.clip((a - lo) / (hi - lo), -0.1, 1.1).astype(np.float32))


def _level_image(img: Image, shrink: int, sigma_mm: float) -> Image:
    """One level of the registration pyramid: ``img`` block-averaged to about ``shrink``
    times its finest voxel side (a thick-slice axis is shrunk less or not at all), then
    smoothed so that box and Gaussian together make a blur of ``sigma_mm``.

    Each new voxel is the mean of the block it covers and sits at its centre
    (:func:`lesioncount.image.block_mean`).
    """
    sp = img.spacing
    f = np.maximum(1, np.round(shrink * sp.min() / sp)).astype(int)
    f = np.minimum(f, np.maximum(1, np.asarray(img.shape) // 2))
    a = np.asarray(img.array, dtype=np.float32)
    a = block_mean(a, tuple(int(k) for k in f)).astype(np.float32, copy=False)
    affine = img.affine.copy()
    affine[:3, 3] = apply_affine(img.affine, (f - 1) / 2.0)
    affine[:3, :3] = img.affine[:3, :3] * f
    # variance of the mean of k samples spaced s apart: (k^2 - 1) s^2 / 12
    rest = sigma_mm ** 2 - (f ** 2 - 1) * sp ** 2 / 12.0
    sig = np.sqrt(np.maximum(rest, 0.0)) / (f * sp)
    if (sig > 0.1).any():
        a = ndi.gaussian_filter(a, sig, mode="nearest").astype(np.float32)
    return Image(a, affine)


def _method(cfg: RegistrationConfig, threads: int, n_level: float):
    """SimpleITK's registration method for one pyramid level of ``n_level`` mask voxels."""
    import SimpleITK as sitk

    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(threads)
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(cfg.histogram_bins))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    # Image gradients at the samples only (central differences) rather than a gradient
    # filter over the whole image: the same optimum, much less time at 1 mm.
    reg.MetricUseFixedImageGradientFilterOff()
    reg.MetricUseMovingImageGradientFilterOff()
    # A fixed number of samples per level (not a fraction of the grid): the cost per
    # iteration does not grow with the field of view or the resolution.
    frac = cfg.samples_per_level / max(n_level, 1.0) if cfg.samples_per_level > 0 else 0.0
    reg.SetMetricSamplingPercentage(float(min(1.0, max(cfg.sampling_percentage, frac))),
                                    int(cfg.seed))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=float(cfg.learning_rate),
        minStep=float(cfg.min_step_mm),
        numberOfIterations=int(cfg.iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    return reg


def register(
    fixed: Image,
    moving: Image,
    cfg: RegistrationConfig = RegistrationConfig(),
    *,
    fixed_mask: np.ndarray | None = None,
    moving_mask: np.ndarray | None = None,
) -> Registration:
    """Register ``moving`` onto ``fixed`` (rigid by default; affine with ``cfg.transform``).

    Parameters
    ----------
    fixed, moving : Image
        The two scans; any grids, orientations and contrasts (Mattes mutual information).
    cfg : RegistrationConfig
        Transform type, pyramid, sampling, seed, thread count, quality threshold.
    fixed_mask, moving_mask : ndarray of bool, optional
        Brain masks on each image's grid. ``fixed_mask`` restricts the metric to the brain
        (so a whole-head scan registers to a brain-only one) and is where the quality is
        measured; when both are given, their centres of mass start the alignment.

    Returns
    -------
    Registration
        ``transform`` maps fixed points to moving points; ``failed`` is set when the
        quality figure is below ``cfg.min_quality`` or the optimiser diverged.

    Notes
    -----
    When the first attempt looks failed and ``cfg.retry`` is set, the registration is
    run again from other starts (brain-mask centres, computed with
    :func:`lesioncount.brain.brain_mask` where a mask is missing; field-of-view centres)
    and the attempt with the best quality is returned; ``seconds`` covers all attempts.

    Examples
    --------
    >>> reg = register(baseline_post, followup_post)            # doctest: +SKIP
    >>> aligned = resample(followup_post, baseline_post, reg.transform)  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    levels = len(cfg.shrink_factors)
    if levels == 0 or len(cfg.smoothing_sigmas_mm) != levels:
        raise ConfigError("registration.shrink_factors and smoothing_sigmas_mm need one "
                          "entry per level")
    if cfg.initialization not in ("moments", "geometry"):
        raise ConfigError(f"registration.initialization must be 'moments' or 'geometry', "
                          f"got {cfg.initialization!r}")
    _mask_sitk(fixed_mask, fixed, "fixed_mask")  # validate early
    _mask_sitk(moving_mask, moving, "moving_mask")
    both = fixed_mask is not None and moving_mask is not None
    best = _register_once(fixed, moving, cfg, fixed_mask, moving_mask,
                          init_masks=(fixed_mask, moving_mask) if both else (None, None))
    if best.failed and cfg.retry:
        from .brain import brain_mask

        fm = fixed_mask if fixed_mask is not None else brain_mask(fixed)
        mm = moving_mask if moving_mask is not None else brain_mask(moving)
        starts = [(cfg, (fm, mm)),
                  (dataclasses.replace(cfg, initialization="geometry"), (None, None))]
        for c, init_masks in starts:
            log.info("registration retry from %s start", c.initialization
                     if init_masks[0] is None else "brain-mask centre")
            r = _register_once(fixed, moving, c, fixed_mask, moving_mask, init_masks=init_masks)
            if np.isfinite(r.quality) and (not np.isfinite(best.quality) or r.quality > best.quality):
                best = r
            if not best.failed:
                break
    seconds = time.perf_counter() - t0
    if best.failed:
        log.warning("registration looks failed: quality %.3f (min %.3f), metric %.4f, %s",
                    best.quality, cfg.min_quality, best.metric, best.stop_reason)
    return dataclasses.replace(best, seconds=float(seconds))


def _register_once(fixed: Image, moving: Image, cfg: RegistrationConfig,
                   fixed_mask, moving_mask, *, init_masks) -> Registration:
    import SimpleITK as sitk

    threads = _threads(cfg)
    ranges = (_intensity_range(fixed, fixed_mask), _intensity_range(moving, moving_mask))
    init = _initial_transform(fixed, moving, ranges, init_masks, cfg)
    # The pyramid is built over the boxes the metric can reach, not the whole heads.
    fbox, mbox = _metric_boxes(fixed, moving, fixed_mask, moving_mask, init, cfg)
    fixed_c, moving_c = crop(fixed, fbox), crop(moving, mbox)
    fmask_c = fixed_mask[fbox] if fixed_mask is not None else None
    mmask_c = moving_mask[mbox] if moving_mask is not None else None
    fixed_m = _mask_sitk(fmask_c, fixed_c, "fixed_mask")
    moving_m = _mask_sitk(mmask_c, moving_c, "moving_mask")
    fixed_s = _scaled(fixed_c, ranges[0])  # a crop is scaled as its whole scan
    moving_s = _scaled(moving_c, ranges[1])
    fixed_md = _dilate_sitk(fixed_m, cfg.mask_dilation_mm) if fixed_m is not None else None
    moving_md = _dilate_sitk(moving_m, cfg.mask_dilation_mm) if moving_m is not None else None
    n_vox = _count_voxels(fmask_c, fixed_c)

    # One ITK run per level, on images this module shrinks and smooths (see _level_image):
    # ITK's own pyramid smooths both full-resolution images at every level and only
    # samples them more sparsely (0.7-0.8 s of a 3-4 s pre -> post pair on a 1 mm whole
    # head, one thread); each level starts from the previous level's transform, as ITK's
    # levels do, and its optimiser starts afresh, as theirs does.
    counter = {"n": 0}
    tx = init
    t0 = time.perf_counter()
    with _itk_threads(threads):
        for shrink, sigma in zip(cfg.shrink_factors, cfg.smoothing_sigmas_mm):
            f_l = _level_image(fixed_s, int(shrink), float(sigma))
            m_l = _level_image(moving_s, int(shrink), float(sigma))
            reg = _method(cfg, threads, n_vox * f_l.array.size / fixed_s.array.size)
            if fixed_md is not None:
                reg.SetMetricFixedMask(fixed_md)
            if moving_md is not None:
                reg.SetMetricMovingMask(moving_md)
            reg.SetInitialTransform(tx, inPlace=False)
            reg.AddCommand(sitk.sitkIterationEvent,
                           lambda: counter.__setitem__("n", counter["n"] + 1))
            try:
                out = reg.Execute(to_sitk(f_l), to_sitk(m_l))
            except RuntimeError as e:  # e.g. too few samples overlap: no overlap
                raise RegistrationError(f"registration did not run: "
                                        f"{str(e).strip().splitlines()[-1]}") from None
            tx = _as_linear(out)
    metric = float(reg.GetMetricValue())
    stop = reg.GetOptimizerStopConditionDescription()
    with _itk_threads(threads):
        # (on the boxes: the quality grid covers the fixed mask, which the fixed box holds
        # and an aligned moving box holds with its margin)
        quality = alignment_quality(fixed_c, moving_c, tx, fixed_mask=fmask_c, cfg=cfg)
    diverged = not (np.isfinite(metric) and np.all(np.isfinite(tx.GetParameters())))
    failed = bool(diverged or not np.isfinite(quality) or quality < cfg.min_quality)
    return Registration(transform=tx, quality=float(quality), failed=failed, metric=metric,
                        iterations=int(counter["n"]), seconds=time.perf_counter() - t0,
                        stop_reason=stop)


def _metric_boxes(fixed: Image, moving: Image, fixed_mask, moving_mask, init,
                  cfg: RegistrationConfig):
    """Boxes of the fixed and moving grids that the metric can reach (whole grids when off).

    Fixed: its mask's box grown by the mask dilation and ``cfg.crop_margin_mm``. Moving:
    likewise from its own mask, or, without one, the fixed box mapped by the initial
    transform and grown by ``cfg.crop_search_mm`` more.
    """
    whole_f = tuple(slice(0, n) for n in fixed.shape)
    whole_m = tuple(slice(0, n) for n in moving.shape)
    if cfg.crop_margin_mm <= 0 or fixed_mask is None:
        return whole_f, whole_m
    grow = cfg.mask_dilation_mm + cfg.crop_margin_mm
    fbox = mask_box(fixed_mask, fixed.spacing, grow)
    if moving_mask is not None:
        return fbox, mask_box(moving_mask, moving.spacing, grow)
    corners = np.array(list(itertools.product(*[(s.start, s.stop - 1) for s in fbox])), float)
    mapped = transform_points_ras(init, fixed.world(corners))
    ijk = apply_affine(np.linalg.inv(moving.affine), mapped)
    pad = cfg.crop_search_mm / moving.spacing
    lo = np.floor(ijk.min(axis=0) - pad).astype(int)
    hi = np.ceil(ijk.max(axis=0) + pad).astype(int) + 1
    mbox = tuple(slice(int(np.clip(a, 0, n)), int(np.clip(b, 0, n)))
                 for a, b, n in zip(lo, hi, moving.shape))
    if any(s.stop - s.start < 2 for s in mbox):  # the start maps off the grid: keep it all
        mbox = whole_m
    return fbox, mbox


def _count_voxels(mask: np.ndarray | None, image: Image) -> float:
    return float(np.count_nonzero(mask)) if mask is not None else float(np.prod(image.shape))


def _dilate_sitk(mask_s, radius_mm: float):
    """Dilate a uint8 mask by ``radius_mm`` (so the metric sees the brain's edge)."""
    import SimpleITK as sitk

    if radius_mm <= 0:
        return mask_s
    radius = [max(0, int(round(radius_mm / s))) for s in mask_s.GetSpacing()]
    return sitk.BinaryDilate(mask_s, radius, sitk.sitkBall, 0, 1)


def _as_linear(tx):
    """The optimised transform as its concrete SimpleITK type (Euler3D or Affine)."""
    import SimpleITK as sitk

    t = tx.Downcast()
    if isinstance(t, sitk.CompositeTransform):
        if t.GetNumberOfTransforms() == 1:
            t = t.GetNthTransform(0).Downcast()
        else:
            t = t.FlattenTransform()
    return t


# ------------------------------------------------------------------------------ quality


def _gradient_magnitude(img_s, sigma_mm: float) -> np.ndarray:
    import SimpleITK as sitk

    g = sitk.GradientMagnitudeRecursiveGaussian(sitk.Cast(img_s, sitk.sitkFloat32), float(sigma_mm))
    return np.transpose(sitk.GetArrayFromImage(g))


def _quality_grid(fixed: Image, mask: np.ndarray, spacing_mm: float) -> Image:
    """An isotropic grid (fixed orientation) over the mask's bounding box + 2 spacings."""
    sp = fixed.spacing
    step = max(float(spacing_mm), float(sp.min()))
    idx = np.nonzero(mask)
    if idx[0].size == 0:
        lo, hi = np.zeros(3), np.asarray(fixed.shape, float) - 1
    else:
        lo = np.array([i.min() for i in idx], float)
        hi = np.array([i.max() for i in idx], float)
    direction = fixed.affine[:3, :3] / sp
    pad = 2 * step
    ext = (hi - lo) * sp + 2 * pad
    shape = tuple(int(n) for n in np.maximum(1, np.ceil(ext / step) + 1))
    aff = np.eye(4)
    aff[:3, :3] = direction * step
    aff[:3, 3] = fixed.world(lo) - direction @ np.full(3, pad)
    return Image(np.zeros(shape, np.uint8), aff)


def alignment_quality(
    fixed: Image,
    moving: Image,
    transform=None,
    *,
    fixed_mask: np.ndarray | None = None,
    cfg: RegistrationConfig = RegistrationConfig(),
) -> float:
    """Normalised correlation of gradient magnitudes after alignment (see module docstring).

    Parameters
    ----------
    fixed, moving : Image
    transform : SimpleITK.Transform, optional
        Fixed -> moving (identity when omitted).
    fixed_mask : ndarray of bool, optional
        Where to measure; defaults to the fixed image's foreground (above 10% of its
        99th percentile), i.e. the brain of a skull-stripped scan.

    Returns
    -------
    float
        Pearson correlation in [-1, 1]; NaN when there is nothing to measure.
    """
    from .image import resample

    if fixed_mask is None:
        a = np.asarray(fixed.array, dtype=np.float32)
        m0 = a > 0.1 * np.percentile(a, 99)
    else:
        m0 = np.asarray(fixed_mask, dtype=bool)
    # Measured on a grid of about the gradient scale (sigma) over the mask's bounding box:
    # the figure does not need finer sampling, and 1 mm whole heads would cost seconds.
    grid = _quality_grid(fixed, m0, cfg.quality_sigma_mm)
    fixed_q = resample(fixed, grid, None, interpolation="linear")
    m = resample(fixed.like(m0.astype(np.float32)), grid, None).array > 0.5
    warped = resample(moving, grid, transform, interpolation="linear")
    gf = _gradient_magnitude(to_sitk(fixed_q), cfg.quality_sigma_mm)
    gm = _gradient_magnitude(to_sitk(warped), cfg.quality_sigma_mm)
    # Only where the moving image was sampled (outside its field of view the resampled
    # image is flat and would pull the figure down for partial-coverage scans).
    import SimpleITK as sitk

    tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    inside = np.transpose(sitk.GetArrayFromImage(sitk.Resample(
        sitk_grid(moving, 1), sitk_grid(grid), tx, sitk.sitkNearestNeighbor, 0,
        sitk.sitkUInt8))) > 0
    m = m & inside
    if m.sum() < 100:
        return float("nan")
    x = gf[m].astype(np.float64)
    y = gm[m].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    den = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / den) if den > 0 else float("nan")


# ------------------------------------------------------------------- transforms and points


def save_transform(transform, path: str | os.PathLike) -> None:
    """Write a transform as an ITK ``.tfm`` text file (fixed -> moving, LPS)."""
    import SimpleITK as sitk

    sitk.WriteTransform(transform, str(path))


def load_transform(path: str | os.PathLike):
    """Read a transform written by :func:`save_transform` (its concrete type restored)."""
    import SimpleITK as sitk

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "transform file not found")
    try:
        tx = sitk.ReadTransform(str(p))
    except RuntimeError as e:
        raise InputError(p, f"not a readable ITK transform ({str(e).splitlines()[-1]})") from None
    return _as_linear(tx)


def _affine_ras(transform) -> np.ndarray:
    """4x4 RAS->RAS matrix of a linear transform (fixed RAS point -> moving RAS point)."""
    if not transform.IsLinear():
        raise RegistrationError(f"{transform.GetName()} is not linear: it has no matrix")
    basis = np.vstack([np.zeros(3), np.eye(3)])  # RAS points 0, e_x, e_y, e_z
    mapped = np.array([lps_to_ras(np.asarray(transform.TransformPoint(
        tuple(float(v) for v in ras_to_lps(p))))) for p in basis])
    m = np.eye(4)
    m[:3, 3] = mapped[0]
    m[:3, :3] = (mapped[1:] - mapped[0]).T
    return m


def transform_from_matrix_ras(matrix) -> Any:
    """A SimpleITK affine transform from a 4x4 (or 3x4) RAS->RAS matrix (fixed -> moving).

    The inverse of :attr:`Registration.matrix_ras`; reads e.g. the phantom's
    ``truth_motion.tsv`` matrices.
    """
    import SimpleITK as sitk

    m = np.eye(4)
    mat = np.asarray(matrix, dtype=np.float64)
    if mat.shape not in ((3, 4), (4, 4)):
        raise InputError(None, f"a RAS matrix must be 3x4 or 4x4, got shape {mat.shape}")
    m[:3, :] = mat[:3, :]
    # the LPS matrix from where it sends the LPS origin and unit points
    basis = np.vstack([np.zeros(3), np.eye(3)])
    mapped = ras_to_lps(lps_to_ras(basis) @ m[:3, :3].T + m[:3, 3])
    tx = sitk.AffineTransform(3)
    tx.SetMatrix(tuple(float(v) for v in (mapped[1:] - mapped[0]).T.ravel()))
    tx.SetTranslation(tuple(float(v) for v in mapped[0]))
    return tx


def transform_points_ras(transform, points_ras: np.ndarray) -> np.ndarray:
    """Map world RAS points of the FIXED space to the MOVING space.

    Parameters
    ----------
    transform : SimpleITK.Transform
        Fixed -> moving (as returned in :attr:`Registration.transform`).
    points_ras : array_like, shape (3,) or (n, 3)

    Returns
    -------
    ndarray, same shape as ``points_ras``
    """
    pts = np.asarray(points_ras, dtype=np.float64)
    flat = pts.reshape(-1, 3)
    if transform.IsLinear():
        m = _affine_ras(transform)
        out = flat @ m[:3, :3].T + m[:3, 3]
    else:
        lps = ras_to_lps(flat)
        out = lps_to_ras(np.array([transform.TransformPoint(tuple(float(v) for v in p))
                                   for p in lps]).reshape(-1, 3))
    return out.reshape(pts.shape)


def points_to_fixed(transform, points_ras: np.ndarray) -> np.ndarray:
    """Map world RAS points of the MOVING space back to the FIXED space (inverse transform).

    Used to bring a lesion centroid found on a follow-up (moving) scan into baseline
    (fixed) coordinates. Rigid and affine transforms only.
    """
    if not transform.IsLinear():
        raise RegistrationError(f"{transform.GetName()} has no closed-form inverse here")
    pts = np.asarray(points_ras, dtype=np.float64)
    m = np.linalg.inv(_affine_ras(transform))
    flat = pts.reshape(-1, 3)
    return (flat @ m[:3, :3].T + m[:3, 3]).reshape(pts.shape)


def displacement_error(true_transform, estimated_transform, reference: Image,
                       mask: np.ndarray | None = None) -> float:
    """Mean distance (mm) between where two transforms send the voxel centres of a grid.

    Parameters
    ----------
    true_transform, estimated_transform : SimpleITK.Transform
        Both fixed -> moving.
    reference : Image
        The fixed grid whose voxel centres are mapped.
    mask : ndarray of bool, optional
        Only these voxels (e.g. the brain); all voxels when omitted.
    """
    import SimpleITK as sitk

    ref = to_sitk(reference.like(np.zeros(reference.shape, np.uint8)), dtype=np.uint8)

    def field(tx):
        f = sitk.TransformToDisplacementField(tx, sitk.sitkVectorFloat64, ref.GetSize(),
                                              ref.GetOrigin(), ref.GetSpacing(),
                                              ref.GetDirection())
        return sitk.GetArrayFromImage(f)  # [k, j, i, 3], LPS; a flip keeps lengths

    d = np.linalg.norm(field(true_transform) - field(estimated_transform), axis=-1)
    d = np.transpose(d)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != reference.shape:
            raise InputError(None, f"mask shape {m.shape} differs from grid {reference.shape}")
        if not m.any():
            raise InputError(None, "mask is empty")
        d = d[m]
    return float(d.mean())


def rigid_transform(rotation_deg=(0.0, 0.0, 0.0), translation_mm=(0.0, 0.0, 0.0),
                    center_ras=(0.0, 0.0, 0.0)):
    """A fixed -> moving Euler3D transform from angles (degrees, about LPS x, y, z) and a
    translation (RAS mm), rotating about ``center_ras``. For building known motions."""
    import SimpleITK as sitk

    tx = sitk.Euler3DTransform()
    tx.SetCenter(tuple(float(v) for v in ras_to_lps(np.asarray(center_ras, float))))
    tx.SetRotation(*[float(np.deg2rad(a)) for a in rotation_deg])
    tx.SetTranslation(tuple(float(v) for v in ras_to_lps(np.asarray(translation_mm, float))))
    return tx
