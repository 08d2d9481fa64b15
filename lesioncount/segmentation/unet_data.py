"""Inputs of the U-Net: intensity normalisation, training volumes, patch sampling, augmentation.

No torch here: everything is numpy/scipy, so data preparation can be tested and cached
without the model. A training *volume* is a dict of arrays on a 1 mm isotropic grid:
``post`` and ``pre`` (normalised, WM = 1; ``pre`` may be None), ``flair`` (FLAIR over its
normal-appearing white matter level, NAWM = 1; may be None), ``brain`` (bool), ``label``
(uint8, 1 = enhancing lesion) and ``hard`` (bool, look-alikes worth sampling: veins,
sinuses, choroid plexus, dura, chronic lesions, the brightest brain voxels).

The model's input channels (:func:`stack_channels`): post, pre (0 when absent), has-pre,
FLAIR (0 when absent), has-FLAIR. A model of 3 channels (the first shipped one) takes the
first three.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..image import Image, isotropic_grid, resample

log = logging.getLogger(__name__)

# Normalised intensities are clipped here: veins and sinuses reach ~3 x WM, nothing
# a lesion shows is above 2.2 x WM; clipping keeps the input range bounded.
CLIP = 4.0


def wm_level(values: np.ndarray, bins: int = 128) -> float:
    """Intensity of normal white matter: the brightest clear peak of the brain histogram.

    On T1 (pre or post contrast) white matter is the brightest large tissue class; vessels
    and lesions are too few voxels to form a peak.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 100:
        return float(np.median(v)) if v.size else 1.0
    lo, hi = np.percentile(v, [1.0, 99.0])
    if hi <= lo:
        return float(max(hi, 1e-6))
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    h = ndi.gaussian_filter1d(hist.astype(np.float64), 2.0)
    peaks = [i for i in range(1, bins - 1) if h[i] >= h[i - 1] and h[i] >= h[i + 1]]
    peaks = [i for i in peaks if h[i] > 0.3 * h.max()] or [int(np.argmax(h))]
    i = max(peaks)
    return float(0.5 * (edges[i] + edges[i + 1]))


def normalise(array: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """``array`` divided by its white-matter level, clipped to [0, CLIP], 0 outside ``brain``."""
    a = np.nan_to_num(np.asarray(array, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    brain = np.asarray(brain, dtype=bool)
    level = wm_level(a[brain]) if brain.any() else 1.0
    out = np.clip(a / max(level, 1e-6), 0.0, CLIP)
    out[~brain] = 0.0
    return out.astype(np.float32)


# FLAIR level: the smooth NAWM level of lesioncount.segmentation.normalise.flair_ratio, at
# the classical detector's bias scale (RF inhomogeneity varies over several cm).
FLAIR_SIGMA_MM = 20.0
FLAIR_NAWM_BAND = 0.08


def normalise_flair(flair: np.ndarray, ref: np.ndarray, brain: np.ndarray,
                    spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    """FLAIR over its smooth normal-appearing white-matter level (NAWM = 1), clipped to
    [0, CLIP], 0 outside ``brain``; ``ref`` is a normalised T1 (WM = 1) on the same grid
    that says where white matter is (on FLAIR grey matter is brighter than white, so the
    T1 histogram peak of :func:`normalise` would not find it there)."""
    from .normalise import flair_ratio

    f = np.nan_to_num(np.asarray(flair, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    brain = np.asarray(brain, dtype=bool)
    if not brain.any():
        return np.zeros(f.shape, np.float32)
    r = flair_ratio(f, np.asarray(ref, np.float32), brain, np.asarray(spacing, float),
                    FLAIR_SIGMA_MM, FLAIR_NAWM_BAND)
    return np.clip(r, 0.0, CLIP).astype(np.float32)


N_CHANNELS = 5


def stack_channels(post: np.ndarray, pre: np.ndarray | None, flair: np.ndarray | None,
                   channels: int = N_CHANNELS) -> np.ndarray:
    """The model input (``channels``, I, J, K) float32: post, pre, has-pre, FLAIR, has-FLAIR.

    Absent scans are zeros with their flag 0. ``channels`` = 3 leaves the FLAIR out (the
    layout of models trained before it was an input).
    """
    if channels not in (3, N_CHANNELS):
        raise ValueError(f"a U-Net input has 3 or {N_CHANNELS} channels, not {channels}")
    x = np.zeros((channels,) + tuple(post.shape), np.float32)
    x[0] = post
    if pre is not None:
        x[1] = pre
        x[2] = 1.0
    if channels > 3 and flair is not None:
        x[3] = flair
        x[4] = 1.0
    return x


def to_iso(post: Image, others: dict[str, Image | np.ndarray | None], spacing_mm: float = 1.0):
    """Resample post onto a ``spacing_mm`` isotropic grid of its field of view; others too.

    ``others`` maps names to Images on any grid in the same world (linear interpolation)
    or to boolean/integer arrays on ``post``'s grid (nearest neighbour). Returns the grid
    and a dict of arrays on it (``post`` included).
    """
    grid = isotropic_grid(post, spacing_mm)
    if np.allclose(post.spacing, spacing_mm, atol=1e-3):
        grid = Image(np.zeros(post.shape, np.uint8), post.affine)
    out = {"post": resample(post, grid).array.astype(np.float32)}
    for name, val in others.items():
        if val is None:
            out[name] = None
        elif isinstance(val, Image):
            out[name] = resample(val, grid).array.astype(np.float32)
        else:
            arr = np.asarray(val)
            res = resample(post.like(arr.astype(np.int32)), grid, interpolation="nearest").array
            out[name] = res.astype(arr.dtype) if arr.dtype != bool else res > 0
    return grid, out


def make_volume(post: np.ndarray, pre: np.ndarray | None, brain: np.ndarray, label: np.ndarray,
                hard: np.ndarray | None = None, flair: np.ndarray | None = None) -> dict:
    """A training volume from raw intensities on one 1 mm grid (normalised here)."""
    brain = np.asarray(brain, bool)
    label = (np.asarray(label) > 0) & brain  # the model sees nothing outside the brain
    p = normalise(post, brain)
    q = normalise(pre, brain) if pre is not None else None
    f = normalise_flair(flair, q if q is not None else p, brain) if flair is not None else None
    bright = brain & (p > np.percentile(p[brain], 99.5)) if brain.any() else np.zeros_like(brain)
    h = bright if hard is None else (np.asarray(hard, bool) | bright)
    return {"post": p.astype(np.float16), "pre": None if q is None else q.astype(np.float16),
            "flair": None if f is None else f.astype(np.float16),
            "brain": brain, "label": (np.asarray(label) > 0).astype(np.uint8), "hard": h & brain}


def save_volume(vol: dict, path: Path) -> None:
    arrays = {k: v for k, v in vol.items() if v is not None}
    np.savez(path, **arrays)


def load_volume(path: Path) -> dict:
    with np.load(path) as z:
        vol = {k: z[k] for k in z.files}
    vol.setdefault("pre", None)
    vol.setdefault("flair", None)
    return vol


# --------------------------------------------------------------------------- phantom volumes


def template_volume(seed: int, *, whole_head: bool, n_lesions: int = 24,
                    n_chronic: int = 0) -> dict:
    """MNI-template subject (veins, sinuses, choroid plexus, dura) with injected Gd+ lesions.

    The brain mask is the one inference will use (:func:`lesioncount.brain.brain_mask` of
    the post scan), not the phantom's own: on whole heads it may hold a little dura or
    scalp, which the model must learn to ignore. ``n_chronic`` chronic lesions (FLAIR-bright,
    not enhancing: :func:`lesioncount.phantom.lesions.paint_chronic_lesions`) are painted
    first and sampled as look-alikes; 0 (the volumes of the shipped weights) draws nothing,
    so those volumes are unchanged.
    """
    from ..brain import brain_mask
    from ..phantom.anatomy import template_anatomy
    from ..phantom.lesions import inject_lesions, paint_chronic_lesions

    rng = np.random.default_rng(seed)
    a = template_anatomy(rng, whole_head=whole_head)
    chronic = None
    if n_chronic > 0:
        arrays = [np.array(x, np.float32) for x in (a.post, a.pre, a.flair)]
        chronic = paint_chronic_lesions(*arrays, a.wm, a.affine, n_chronic, rng,
                                        levels=(a.wm_level_post, a.wm_level_pre, a.wm_level_flair))
    else:
        arrays = [a.post, a.pre, a.flair]
    post, pre, flair = (Image(x, a.affine) for x in arrays)
    post2, pre2, labels, _, flair2 = inject_lesions(post, pre, a.wm, n_lesions, rng, avoid=chronic,
                                                    wm_level=a.wm_level_post, flair=flair)
    hard = (a.mimics > 0) if a.mimics is not None else None
    if chronic is not None:
        grown = ndi.binary_dilation(chronic, iterations=1)
        hard = grown if hard is None else (hard | grown)
    return make_volume(post2.array, pre2.array, brain_mask(post2), labels > 0, hard, flair2.array)


def patient_volume(name: str, seed: int, *, n_lesions: int = 16) -> dict:
    """One of the real patients with injected Gd+ lesions (its real lesions are non-enhancing)."""
    from ..phantom.anatomy import patient_anatomy
    from ..phantom.lesions import inject_lesions

    rng = np.random.default_rng(seed)
    a = patient_anatomy(name, rng)
    post, pre, flair = (Image(x, a.affine) for x in (a.post, a.pre, a.flair))
    post2, pre2, labels, _, flair2 = inject_lesions(post, pre, a.wm, n_lesions, rng, avoid=a.chronic,
                                                    wm_level=a.wm_level_post, flair=flair)
    hard = ndi.binary_dilation(a.chronic, iterations=1)
    return make_volume(post2.array, pre2.array, a.brain, labels > 0, hard, flair2.array)


def folder_volumes(root: Path) -> list[tuple[str, dict]]:
    """Training volumes from a folder of labelled cases (fine-tuning on a site's scans).

    Layout: ``root/<case>/post.nii[.gz]`` (required), ``pre.nii[.gz]`` and ``flair.nii[.gz]``
    (optional, same world space as post: registered already), ``label.nii[.gz]`` (required, on post's
    grid, nonzero = enhancing lesion), ``brain.nii[.gz]`` (optional, on post's grid;
    computed with :func:`lesioncount.brain.brain_mask` when absent).
    """
    from ..brain import brain_mask
    from ..errors import InputError
    from ..io import load_image

    def find(d: Path, stem: str) -> Path | None:
        for ext in (".nii.gz", ".nii"):
            if (d / f"{stem}{ext}").exists():
                return d / f"{stem}{ext}"
        return None

    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "training folder does not exist")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        fpost, flab = find(d, "post"), find(d, "label")
        if fpost is None or flab is None:
            log.warning("%s: no post.nii[.gz] or label.nii[.gz]; skipped", d)
            continue
        post = load_image(fpost)
        lab = load_image(flab)
        if lab.shape != post.shape:
            raise InputError(flab, f"label shape {lab.shape} is not the post grid {post.shape}")
        fpre, fflair, fbrain = find(d, "pre"), find(d, "flair"), find(d, "brain")
        pre = load_image(fpre) if fpre else None
        flair = load_image(fflair) if fflair else None
        brain = (load_image(fbrain).array > 0) if fbrain else brain_mask(post)
        grid, arr = to_iso(post, {"pre": pre, "flair": flair, "brain": brain, "label": lab.array > 0})
        out.append((d.name, make_volume(arr["post"], arr["pre"], arr["brain"], arr["label"],
                                        flair=arr["flair"])))
    if not out:
        raise InputError(root, "no case folders with post and label images")
    return out


# --------------------------------------------------------------------------- patches


def _centre(rng: np.random.Generator, vol: dict, p_lesion: float, p_hard: float) -> np.ndarray:
    u = rng.uniform()
    for key, pick in (("label", u < p_lesion), ("hard", u < p_lesion + p_hard)):
        if pick:
            idx = vol.get(f"_{key}_idx")
            if idx is None:
                idx = np.flatnonzero(vol[key].ravel() > 0)
                vol[f"_{key}_idx"] = idx
            if idx.size:
                return np.array(np.unravel_index(idx[rng.integers(idx.size)], vol["brain"].shape))
    idx = vol.get("_brain_idx")
    if idx is None:
        idx = np.flatnonzero(vol["brain"].ravel())
        vol["_brain_idx"] = idx
    return np.array(np.unravel_index(idx[rng.integers(idx.size)], vol["brain"].shape))


def _crop(a: np.ndarray, lo: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size,) * 3, dtype=np.float32)
    src = tuple(slice(max(l, 0), min(l + size, s)) for l, s in zip(lo, a.shape))
    dst = tuple(slice(s.start - l, s.stop - l) for s, l in zip(src, lo))
    out[dst] = a[src]
    return out


def _thick_slices(x: np.ndarray, axis: int, rng: np.random.Generator, factor: int = 3) -> np.ndarray:
    """What a 1 x 1 x ``factor`` mm acquisition looks like once resampled back to 1 mm."""
    b = ndi.uniform_filter1d(x, factor, axis=axis, mode="nearest")
    off = int(rng.integers(factor))
    idx = np.arange(off, x.shape[axis], factor)
    sub = np.take(b, idx, axis=axis)
    pos = np.arange(x.shape[axis])
    coord = (pos - off) / factor
    lo = np.clip(np.floor(coord).astype(int), 0, len(idx) - 1)
    hi = np.clip(lo + 1, 0, len(idx) - 1)
    w = np.clip(coord - np.floor(coord), 0, 1)
    shp = [1, 1, 1]
    shp[axis] = -1
    w = w.reshape(shp)
    return (np.take(sub, lo, axis=axis) * (1 - w) + np.take(sub, hi, axis=axis) * w).astype(np.float32)


def sample_patch(vol: dict, rng: np.random.Generator, size: int, *, augment: bool = True,
                 p_lesion: float = 0.5, p_hard: float = 0.3, p_drop_pre: float = 0.4,
                 p_drop_flair: float = 0.3, p_thick: float = 0.5, max_rot_deg: float = 12.0,
                 pre_jitter: int = 1, channels: int = N_CHANNELS) -> tuple[np.ndarray, np.ndarray]:
    """One augmented patch: input (``channels``, size, size, size) float32 (see
    :func:`stack_channels`) and target (size,)*3 float32.

    Centres: a lesion voxel (``p_lesion``), a look-alike (``p_hard``) or any brain voxel,
    jittered so the lesion is not always in the middle. Augmentation: small rotations,
    flips, 3 mm slices along a random axis (``p_thick``), global gain, a smooth bias
    field, gamma, Gaussian noise; the pre and FLAIR channels each dropped at random (then
    zeros with their flag 0) or, in half the patches that keep them, shifted by up to
    ``pre_jitter`` voxels per axis (same-session registration is not perfect at inference).
    """
    c = _centre(rng, vol, p_lesion, p_hard)
    c = c + rng.integers(-size // 3, size // 3 + 1, 3)
    pre_present = vol["pre"] is not None and not (augment and rng.uniform() < p_drop_pre)
    flair_present = (channels > 3 and vol.get("flair") is not None
                     and not (augment and rng.uniform() < p_drop_flair))
    rot = augment and rng.uniform() < 0.4
    big = int(np.ceil(size * 1.3)) if rot else size
    lo = c - big // 2
    # _crop casts only the crop to float32 (casting whole volumes cost ~20 ms a patch)
    post = _crop(vol["post"], lo, big)

    def side(key: str, present: bool):
        if not present:
            return None
        lo_s = lo
        if augment and pre_jitter and rng.uniform() < 0.5:
            lo_s = lo + rng.integers(-pre_jitter, pre_jitter + 1, 3)
        return _crop(vol[key], lo_s, big)

    pre = side("pre", pre_present)
    flair = side("flair", flair_present)
    lab = _crop(vol["label"], lo, big)
    brain = _crop(vol["brain"], lo, big)
    if rot:
        ang = np.deg2rad(rng.uniform(-max_rot_deg, max_rot_deg, 3))
        r = np.eye(3)
        for ax, a in enumerate(ang):
            i, j = [k for k in range(3) if k != ax]
            m = np.eye(3)
            m[i, i] = m[j, j] = np.cos(a)
            m[i, j], m[j, i] = -np.sin(a), np.sin(a)
            r = r @ m
        ctr = (big - 1) / 2.0
        off = ctr - r @ np.full(3, (size - 1) / 2.0)

        def warp(a, order):
            if a is None:
                return None
            return ndi.affine_transform(a, r, offset=off, output_shape=(size,) * 3, order=order,
                                        mode="constant", cval=0.0)
        post, pre, flair = warp(post, 1), warp(pre, 1), warp(flair, 1)
        lab = warp(lab, 0)
        brain = warp(brain, 0)
    if augment:
        for ax in range(3):
            if rng.uniform() < 0.5:
                post, lab, brain = np.flip(post, ax), np.flip(lab, ax), np.flip(brain, ax)
                pre = np.flip(pre, ax) if pre is not None else None
                flair = np.flip(flair, ax) if flair is not None else None
        if rng.uniform() < p_thick:
            ax = int(rng.integers(3))
            post = _thick_slices(post, ax, rng)
            if pre is not None and rng.uniform() < 0.5:
                pre = _thick_slices(pre, ax, rng)
        if flair is not None and rng.uniform() < 0.5:
            # FLAIR is often a 2D acquisition of its own: thick slices along any axis
            flair = _thick_slices(flair, int(rng.integers(3)), rng)
        post = _intensity(post, brain, rng)
        if pre is not None:
            pre = _intensity(pre, brain, rng)
        if flair is not None:
            flair = _intensity(flair, brain, rng)
    x = stack_channels(post, pre, flair, channels)
    return x, np.ascontiguousarray(lab, dtype=np.float32)


def _intensity(x: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gain, smooth bias (linear + quadratic over the patch, up to ~+-15 %), gamma, noise."""
    n = x.shape[0]
    g = np.linspace(-1, 1, n, dtype=np.float32)
    gi, gj, gk = np.meshgrid(g, g, g, indexing="ij")
    a = rng.normal(0, 0.05, 3)
    q = rng.normal(0, 0.03, 3)
    bias = np.exp(a[0] * gi + a[1] * gj + a[2] * gk + q[0] * gi ** 2 + q[1] * gj ** 2 + q[2] * gk ** 2)
    y = x * bias * rng.uniform(0.9, 1.1)
    y = np.maximum(y, 0.0) ** rng.uniform(0.85, 1.15)
    y = y + rng.normal(0, rng.uniform(0.0, 0.07), x.shape).astype(np.float32) * (brain > 0)
    return np.clip(y, 0.0, CLIP).astype(np.float32) * (brain > 0)
