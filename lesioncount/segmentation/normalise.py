"""Intensity normalisation for the classical detector: enhancement maps in robust z-units.

Two references, one output unit (robust z: residual / 1.4826 MAD of normal tissue):

- :func:`enhancement_from_pre`: post-contrast predicted from the registered pre-contrast
  scan by a nonparametric intensity mapping (binned medians of the joint histogram inside
  the brain), times a smooth relative bias field; enhancement is the residual, scaled by the
  residual spread of its own pre-intensity bin (partial-volume edges and CSF are noisier
  than white matter, so they get a larger denominator).
- :func:`enhancement_from_wm`: post-contrast relative to normal-appearing white matter
  (bias-corrected WM level and the spread of its upper half, which grey matter and
  hypointense lesions do not contaminate).

All functions are pure: arrays in, arrays out; physical scales are given in mm and
converted with the voxel spacing.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

MAD_TO_SIGMA = 1.4826  # sigma of a normal distribution = 1.4826 x its median absolute deviation
# Intensity mappings (binned medians and spreads) are fitted on a regular subsample of at
# most this many brain voxels: 64 bins of ~4700 voxels give medians within ~1.5 % of a
# bin's spread of the full fit, at a fifth of the sorting time of a 1 mm brain (1.5 M).
FIT_SAMPLES = 300_000


COARSE_MM = 4.0  # block size of smooth_masked's coarse grid


def coarse_factor(spacing, coarse_mm: float = COARSE_MM) -> np.ndarray:
    """Voxels per coarse block along each axis (blocks start at index 0 of the grid).

    A crop whose start is a multiple of this along each axis, and which holds the whole
    mask, gets exactly the values of the whole grid from :func:`smooth_masked`.
    """
    return np.maximum(1, np.round(coarse_mm / np.asarray(spacing, dtype=float))).astype(int)


def smooth_masked(values: np.ndarray, weights: np.ndarray, sigma_mm: float,
                  spacing: np.ndarray, coarse_mm: float = COARSE_MM) -> np.ndarray:
    """Normalised convolution of ``values`` over ``weights`` at a large scale.

    Computed on a coarse grid (block means of ``coarse_mm``) and interpolated back, so a
    20 mm smoothing of a 1 mm brain takes well under a second. Where the weights vanish the
    result is the nearest supported value (the global weighted mean as last resort).
    """
    spacing = np.asarray(spacing, dtype=float)
    f = coarse_factor(spacing, coarse_mm)
    shape = np.asarray(values.shape)
    pad = (-shape) % f
    w = np.pad(weights.astype(np.float32), [(0, p) for p in pad])
    v = np.pad((values * weights).astype(np.float32), [(0, p) for p in pad])
    cs = tuple((np.asarray(w.shape) // f).tolist())

    def block(a):
        return a.reshape(cs[0], f[0], cs[1], f[1], cs[2], f[2]).sum(axis=(1, 3, 5))

    wb, vb = block(w), block(v)
    sig = sigma_mm / (spacing * f)
    ws = ndi.gaussian_filter(wb, sig, mode="constant")
    vs = ndi.gaussian_filter(vb, sig, mode="constant")
    tot = float(wb.sum())
    fallback = float(vb.sum() / tot) if tot > 0 else 1.0
    ok = ws > 1e-3 * max(float(ws.max()), 1e-12)
    coarse = np.where(ok, vs / np.where(ok, ws, 1.0), fallback).astype(np.float32)
    if not ok.all() and ok.any():
        # extend the field into unsupported regions from the nearest supported cell
        idx = ndi.distance_transform_edt(~ok, return_distances=False, return_indices=True)
        coarse = coarse[tuple(idx)]
    return _upsample_linear(coarse, shape, f)


def _interp_matrix(n: int, c: int, fk: int) -> np.ndarray:
    """Linear interpolation weights from ``c`` coarse cells of ``fk`` voxels to ``n`` voxels."""
    x = np.clip((np.arange(n) + 0.5) / fk - 0.5, 0, c - 1)  # fine centres in coarse units
    i0 = np.floor(x).astype(int)
    i1 = np.minimum(i0 + 1, c - 1)
    w = (x - i0).astype(np.float32)
    m = np.zeros((n, c), np.float32)
    np.add.at(m, (np.arange(n), i0), 1 - w)
    np.add.at(m, (np.arange(n), i1), w)
    return m


def _upsample_linear(coarse: np.ndarray, shape, f) -> np.ndarray:
    """Trilinear interpolation of block means back to the fine grid (edges held constant).

    Separable: one small matrix product per axis, ~15x faster than ``map_coordinates`` on
    a full 1 mm grid with the same result.
    """
    out = coarse
    for ax, (n, fk) in enumerate(zip(shape, f)):
        m = _interp_matrix(int(n), out.shape[ax], int(fk))
        out = np.moveaxis(np.tensordot(m, np.moveaxis(out, ax, 0), axes=(1, 0)), 0, ax)
    return np.ascontiguousarray(out, dtype=np.float32)


def wm_level(values: np.ndarray) -> tuple[float, float]:
    """White-matter level and spread of T1-weighted brain intensities.

    WM is the brightest large tissue class of a T1-weighted brain, so its level is the
    histogram mode above the brain median; its spread is taken from the upper half only
    (sigma = median of the positive deviations / 0.6745, the half-normal relation), which
    grey matter, CSF and hypointense lesions do not reach.
    """
    v = values[np.isfinite(values)]
    lo, hi = np.quantile(v, [0.4, 0.995])
    if not hi > lo:
        return float(np.median(v)), float(max(np.std(v), 1e-6))
    hist, edges = np.histogram(v[(v >= lo) & (v <= hi)], bins=128, range=(lo, hi))
    hist = ndi.gaussian_filter1d(hist.astype(float), 2.0)
    k = int(np.argmax(hist))
    mode = 0.5 * (edges[k] + edges[k + 1])
    up = v[v > mode] - mode
    sigma = float(np.median(up) / 0.6745) if up.size else float(np.std(v))
    return float(mode), max(sigma, 1e-6 * max(abs(mode), 1.0))


def wm_normalise(image: np.ndarray, brain: np.ndarray, spacing: np.ndarray,
                 bias_sigma_mm: float, band: float = 0.15,
                 iterations: int = 2) -> tuple[np.ndarray, float]:
    """Image divided by its smooth white-matter level (WM = 1), and the WM spread.

    The bias field is the normalised convolution of the image over voxels within
    ``band`` (relative) of the current WM level, at ``bias_sigma_mm``.
    """
    img = np.where(brain, image, 0).astype(np.float32)
    mode, _ = wm_level(img[brain])
    bias = np.full(img.shape, mode, dtype=np.float32)
    for _ in range(iterations):
        y = img / bias
        wm = brain & (np.abs(y - 1.0) < band)
        if wm.sum() < 100:
            break
        bias = smooth_masked(img, wm, bias_sigma_mm, spacing)
        bias = np.maximum(bias, 1e-6 * mode)
    y = np.where(brain, img / bias, 0).astype(np.float32)
    m, s = wm_level(y[brain])
    y = y / np.float32(m)
    return y, s / m


def flair_ratio(flair: np.ndarray, ref: np.ndarray, brain: np.ndarray, spacing: np.ndarray,
                sigma_mm: float, band: float = 0.08) -> np.ndarray:
    """FLAIR over its smooth level in normal-appearing white matter (NAWM = 1, 0 outside).

    NAWM: brain voxels where the reference T1 (normalised, WM = 1) is within ``band`` of 1.
    Two passes: the second drops FLAIR-bright voxels (lesions are often T1-isointense) from
    the NAWM before the level is refitted.
    """
    f = np.where(brain, np.nan_to_num(flair.astype(np.float32)), 0).astype(np.float32)
    nawm = brain & (np.abs(ref - 1.0) < band) & (f > 0)
    if nawm.sum() < 100:
        nawm = brain & (f > 0)
    for _ in range(2):
        level = np.maximum(smooth_masked(f, nawm, sigma_mm, spacing), 1e-6)
        r = f / level
        nawm = nawm & (np.abs(r - 1.0) < 0.25)
    return np.where(brain, r, 0).astype(np.float32)


def local_scale(z: np.ndarray, brain: np.ndarray, spacing: np.ndarray, sigma_mm: float,
                clip: float = 4.0) -> np.ndarray:
    """Local spread of the upper half of ``z`` (1 where ``z`` is standard normal).

    For a normal residual E[z | z > 0] = 0.798; the ratio of the local mean of the positive
    values (clipped at ``clip`` so lesions and vessels barely move it) to that constant is the
    local noise scale. Only the upper half is used: grey matter and CSF are dark on
    post-contrast relative to white matter, which must not inflate the scale.
    """
    pos = brain & (z > 0)
    num = smooth_masked(np.minimum(z, clip), pos, sigma_mm, spacing)
    # expected mean of a half-normal clipped at `clip`
    from scipy.stats import norm

    expect = float((norm.pdf(0) - norm.pdf(clip)) / 0.5 + clip * 2 * norm.sf(clip))
    return np.maximum(num / expect, 1.0).astype(np.float32)


def enhancement_from_wm(post: np.ndarray, brain: np.ndarray, spacing: np.ndarray,
                        bias_sigma_mm: float,
                        local_sigma_mm: float = 0.0) -> tuple[np.ndarray, dict]:
    """Enhancement of post-contrast over normal-appearing white matter.

    Returns ``(z, residual, info)``: robust z-units, and the residual in units of the
    white-matter level (0.3 = 30 % brighter than WM).
    """
    y, s = wm_normalise(post, brain, spacing, bias_sigma_mm)
    resid = np.where(brain, y - 1.0, 0).astype(np.float32)
    z = resid / np.float32(s)
    if local_sigma_mm > 0:
        z = np.where(brain, z / local_scale(z, brain, spacing, local_sigma_mm), 0)
    return (z.astype(np.float32), resid,
            {"reference": "white_matter", "wm_sigma_relative": float(s)})


def _binned_stats(x: np.ndarray, y: np.ndarray, nbins: int):
    """Quantile bins of ``x``; per bin: median x, median y, robust spread of y."""
    edges = np.unique(np.quantile(x, np.linspace(0, 1, nbins + 1)))
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    order = np.lexsort((y, idx))
    ys, ids = y[order], idx[order]
    xs = x[order]
    starts = np.searchsorted(ids, np.arange(len(edges) - 1), side="left")
    ends = np.searchsorted(ids, np.arange(len(edges) - 1), side="right")
    cx, cy, sd = [], [], []
    for a, b in zip(starts, ends):
        if b - a < 20:
            continue
        seg = ys[a:b]
        med = seg[(b - a) // 2]
        cx.append(float(np.median(xs[a:b])))
        cy.append(float(med))
        sd.append(float(MAD_TO_SIGMA * np.median(np.abs(seg - med))))
    return np.asarray(cx), np.asarray(cy), np.asarray(sd)


def _fit_step(n: int, max_samples: int = FIT_SAMPLES) -> int:
    """Stride of the deterministic subsample used to fit intensity mappings."""
    return max(1, -(-n // max_samples))


def _table_correction(x1, x2, r, n1, n2, min_count=None):
    """Median of ``r`` in quantile bins of (x1, x2), looked up per sample.

    Each cell's median is shrunk towards 0 by n / (n + min_count) and cells with fewer
    than ``min_count`` samples (default: 0.1 % of all, at least 300) give 0, so a lesion
    (a few hundred voxels with an unusual pre intensity and context) cannot become
    "normal" by filling a sparse cell on its own. The table is fitted on a regular
    subsample of at most ``FIT_SAMPLES`` (counts scaled back to all samples).
    """
    if min_count is None:
        min_count = max(300, int(1e-3 * x1.size))
    step = _fit_step(x1.size)
    f1, f2, fr = x1[::step], x2[::step], r[::step]
    e1 = np.unique(np.quantile(f1, np.linspace(0, 1, n1 + 1)))
    e2 = np.unique(np.quantile(f2, np.linspace(0, 1, n2 + 1)))

    def cells(a1, a2):
        i1 = np.clip(np.searchsorted(e1, a1, side="right") - 1, 0, len(e1) - 2)
        i2 = np.clip(np.searchsorted(e2, a2, side="right") - 1, 0, len(e2) - 2)
        return i1 * (len(e2) - 1) + i2

    cell = cells(f1, f2)
    ncell = (len(e1) - 1) * (len(e2) - 1)
    order = np.lexsort((fr, cell))
    rs, cs = fr[order], cell[order]
    starts = np.searchsorted(cs, np.arange(ncell), side="left")
    ends = np.searchsorted(cs, np.arange(ncell), side="right")
    table = np.zeros(ncell, dtype=np.float32)
    for c, (a, bb) in enumerate(zip(starts, ends)):
        n = (bb - a) * step
        if n >= min_count:
            table[c] = rs[(a + bb) // 2] * n / (n + min_count)
    return table[cells(x1, x2)]


def enhancement_from_pre(post: np.ndarray, pre: np.ndarray, brain: np.ndarray,
                         spacing: np.ndarray, bias_sigma_mm: float, nbins: int = 64,
                         iterations: int = 3, context_mm: float = 0.0,
                         local_sigma_mm: float = 0.0) -> tuple[np.ndarray, dict]:
    """Enhancement of post over its prediction from the registered pre-contrast scan.

    Model: ``post = f(pre) * b + e`` with ``f`` a nonparametric mapping (binned medians,
    so different sequences and grey/white contrasts are fine), ``b`` a smooth relative
    bias field (``bias_sigma_mm``) and ``e`` noise whose spread depends on the pre
    intensity. Returns ``(z, residual, info)``: ``e / sigma(pre)`` in robust z-units,
    and ``e`` in units of the post white-matter level.
    """
    b = brain & np.isfinite(post) & np.isfinite(pre)
    p_wm, _ = wm_level(post[b])
    q_wm, _ = wm_level(pre[b])
    po = (np.where(b, post, 0) / p_wm).astype(np.float32)
    pr = (np.where(b, pre, 0) / q_wm).astype(np.float32)
    bias = np.ones(po.shape, dtype=np.float32)
    x = pr[b]
    fit = slice(None, None, _fit_step(x.size))
    for it in range(iterations):
        y = po[b] / bias[b]
        cx, cy, _ = _binned_stats(x[fit], y[fit], nbins)
        pred = np.interp(x, cx, cy).astype(np.float32)
        ratio = po[b] / np.maximum(pred, 1e-3)
        # the relative bias is fitted on tissue (not CSF, whose ratio is noisy) that the
        # current model already explains (enhancement and vessels are outliers)
        lr = np.log(np.maximum(ratio * bias[b], 1e-3))
        med = np.median(lr)
        inl = (np.abs(lr - med) < 0.15) & (pred > 0.3)
        w = np.zeros(po.shape, dtype=bool)
        w[b] = inl
        lvol = np.zeros(po.shape, dtype=np.float32)
        lvol[b] = lr
        bias = np.exp(smooth_masked(lvol, w, bias_sigma_mm, spacing)).astype(np.float32)
    y = po[b] / bias[b]
    cx, cy, sd = _binned_stats(x[fit], y[fit], nbins)
    pred = np.interp(x, cx, cy)
    if context_mm > 0:
        # second stage: the residual's median per (pre, local mean of pre) bin; the local
        # context separates cortex, partial volume and deep grey matter that share a pre
        # intensity with other tissue but map differently onto post
        ctx = ndi.gaussian_filter(pr, context_mm / np.asarray(spacing, float))[b]
        pred = pred + _table_correction(x, ctx, y - pred, 24, 8)
    # spread per pre-intensity, smoothed over neighbouring bins, floored at WM's spread
    sd = ndi.median_filter(sd, size=5, mode="nearest")
    wm_bin = int(np.argmin(np.abs(cx - 1.0)))
    floor = 0.5 * sd[wm_bin]
    sd = np.maximum(sd, floor)
    sigma = np.interp(x, cx, sd)
    z = np.zeros(po.shape, dtype=np.float32)
    z[b] = (y - pred) / sigma
    resid = np.zeros(po.shape, dtype=np.float32)
    resid[b] = y - pred
    if local_sigma_mm > 0:
        z = np.where(b, z / local_scale(z, b, spacing, local_sigma_mm), 0).astype(np.float32)
    info = {"reference": "pre_contrast", "mapping_bins": int(len(cx)),
            "wm_sigma_relative": float(sd[wm_bin])}
    return z, resid, info
