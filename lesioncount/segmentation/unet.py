"""The U-Net Gd+ detector: sliding-window inference of the shipped 3D U-Net.

:func:`detect` has the classical detector's interface (post, registered pre or None,
brain mask, configuration) and returns a :class:`~lesioncount.segmentation.Detection`
on the post grid. Inference runs on a 1 mm isotropic grid over the post scan's field of
view (the grid the model was trained on) and the probability is resampled back.

torch is imported inside the functions that need it, so ``import lesioncount`` stays light.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ..config import PipelineConfig, UNetConfig
from ..errors import ConfigError, GridError, InputError
from ..image import Image, resample
from ..lesions import label_lesions
from . import Detection
from .unet_data import normalise, normalise_flair, stack_channels, to_iso

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS = "unet_gd.pt"
_MODELS: dict = {}  # (path, mtime, device) -> (model, meta): load once per process


def models_dir() -> Path:
    """The repository's ``models/`` folder (next to the ``lesioncount`` package)."""
    return Path(__file__).resolve().parents[2] / "models"


def weights_path(cfg: UNetConfig = UNetConfig()) -> Path:
    p = Path(cfg.weights) if cfg.weights else models_dir() / DEFAULT_WEIGHTS
    if not p.is_file():
        raise InputError(p, "U-Net weights not found (train them with `lesioncount train`)")
    return p


def pick_device(cfg: UNetConfig = UNetConfig()) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.device not in ("cpu", "cuda"):
        raise ConfigError(f"unet.device must be 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    return cfg.device


def load_model(cfg: UNetConfig = UNetConfig(), device: str | None = None):
    """The U-Net and its metadata from ``cfg.weights`` (or models/unet_gd.pt), cached."""
    from .unet_model import load_weights

    p = weights_path(cfg)
    dev = device or pick_device(cfg)
    key = (str(p), p.stat().st_mtime_ns, dev)
    if key not in _MODELS:
        try:
            _MODELS[key] = load_weights(p, dev)
        except (RuntimeError, KeyError, ValueError, OSError) as e:
            raise InputError(p, f"not a lesioncount U-Net weights file ({type(e).__name__})") from None
    return _MODELS[key]


def _weight_map(size: tuple[int, int, int]) -> np.ndarray:
    """Blending weights of one window: highest in the middle, small but positive at its edges."""
    ws = [np.exp(-0.5 * ((np.arange(s) - (s - 1) / 2) / (s / 4)) ** 2) for s in size]
    w = ws[0][:, None, None] * ws[1][None, :, None] * ws[2][None, None, :]
    return np.maximum(w, 1e-3).astype(np.float32)


def _starts(n: int, win: int, step: int) -> list[int]:
    if n <= win:
        return [0]
    s = list(range(0, n - win, step)) + [n - win]
    return sorted(set(s))


def predict(model, x: np.ndarray, *, window: int = 96, overlap: int = 16, batch: int = 1,
            flips: bool = False, device: str = "cpu") -> np.ndarray:
    """Per-voxel lesion probability of a (C, I, J, K) input by overlapping windows.

    Windows of ``window``^3 voxels (or the whole padded input when smaller) overlap by
    ``overlap`` voxels and are blended with Gaussian weights; with ``flips`` each window
    is also predicted flipped along each axis and the probabilities averaged (4x slower).
    """
    import torch

    div = getattr(model, "divisor", 8)
    shape = np.asarray(x.shape[1:])
    win = np.minimum(window, shape + (-shape) % div)
    win = win + (-win) % div
    padded = np.maximum(shape, win)
    pad = [(0, 0)] + [(0, int(p - s)) for p, s in zip(padded, shape)]
    xp = np.pad(x, pad)
    out = np.zeros(tuple(padded), np.float32)
    wsum = np.zeros(tuple(padded), np.float32)
    wmap = _weight_map(tuple(int(w) for w in win))
    step = np.maximum(win - overlap, 1)
    corners = [(i, j, k) for i in _starts(padded[0], win[0], step[0])
               for j in _starts(padded[1], win[1], step[1])
               for k in _starts(padded[2], win[2], step[2])]
    model.eval()
    with torch.no_grad():
        for b0 in range(0, len(corners), batch):
            cs = corners[b0:b0 + batch]
            xb = np.stack([xp[:, i:i + win[0], j:j + win[1], k:k + win[2]] for i, j, k in cs])
            t = torch.from_numpy(np.ascontiguousarray(xb)).to(device)
            prob = torch.sigmoid(model(t))
            if flips:
                for ax in (2, 3, 4):
                    prob = prob + torch.sigmoid(model(t.flip(ax))).flip(ax)
                prob = prob / 4.0
            prob = prob[:, 0].cpu().numpy()
            for (i, j, k), p in zip(cs, prob):
                sl = (slice(i, i + win[0]), slice(j, j + win[1]), slice(k, k + win[2]))
                out[sl] += p * wmap
                wsum[sl] += wmap
    out = out / np.maximum(wsum, 1e-6)
    return out[: shape[0], : shape[1], : shape[2]]


def model_input(post: np.ndarray, pre: np.ndarray | None, brain: np.ndarray,
                flair: np.ndarray | None = None, channels: int = 5) -> np.ndarray:
    """The (``channels``, I, J, K) float32 input of raw intensities on one 1 mm grid:
    normalised post, normalised pre (or 0), has-pre, FLAIR over its white-matter level
    (or 0), has-FLAIR (see :func:`lesioncount.segmentation.unet_data.stack_channels`)."""
    p = normalise(post, brain)
    q = normalise(pre, brain) if pre is not None else None
    f = None
    if flair is not None and channels > 3:
        f = normalise_flair(flair, q if q is not None else p, brain)
    return stack_channels(p, q, f, channels)


def _check(post: Image, pre: Image | None, brain: np.ndarray, flair: Image | None = None) -> None:
    if np.asarray(brain).shape != post.shape:
        raise GridError(None, f"brain mask shape {np.asarray(brain).shape} does not match the "
                              f"post-contrast grid {post.shape}")
    for img, what in ((pre, "pre-contrast image"), (flair, "FLAIR")):
        if img is not None and (img.shape != post.shape or np.abs(img.affine - post.affine).max() > 1e-2):
            raise GridError(None, f"{what} is not on the post-contrast grid: resample it first")
    if not np.asarray(brain).any():
        raise InputError(None, "brain mask is empty")


def detect(post: Image, pre: Image | None, brain: np.ndarray,
           cfg: PipelineConfig = PipelineConfig(), flair: Image | None = None) -> Detection:
    """Detect Gd+ lesions with the U-Net.

    Parameters
    ----------
    post : Image
        Post-contrast T1 (any orientation, 1 mm or thick slices).
    pre : Image or None
        Pre-contrast T1 registered and resampled onto ``post``'s grid, or None.
    brain : ndarray of bool
        Brain mask on ``post``'s grid.
    cfg : PipelineConfig
        ``cfg.unet`` (weights, threshold, window, flips, device) and ``cfg.lesion``
        (the lesion definition used to label the mask).
    flair : Image or None
        FLAIR registered and resampled onto ``post``'s grid, or None; used by weights of 5
        input channels (ignored by a 3-channel model).

    Returns
    -------
    Detection
        On ``post``'s grid: ``enhancement`` (post intensity in robust z-units above
        white matter), ``probability`` (U-Net output), ``mask`` (probability >=
        ``cfg.unet.threshold`` inside the brain, components smaller than a lesion removed,
        lesions that do not enhance (``cfg.unet.min_enhancement_z``) removed),
        ``info`` (weights file, device, seconds, number of lesions).
    """
    import torch

    t0 = time.perf_counter()
    _check(post, pre, brain, flair)
    ucfg = cfg.unet
    brain = np.asarray(brain, bool)
    if ucfg.threads > 0 and torch.get_num_threads() != ucfg.threads:
        torch.set_num_threads(ucfg.threads)
    device = pick_device(ucfg)
    model, meta = load_model(ucfg, device)
    use_pre = pre if (pre is not None and ucfg.use_pre) else None
    channels = int(getattr(model, "in_channels", 3))
    use_flair = flair if (flair is not None and ucfg.use_flair and channels > 3) else None
    grid, arr = to_iso(post, {"pre": use_pre, "flair": use_flair, "brain": brain}, ucfg.spacing_mm)
    ib = arr["brain"]
    prob_iso = np.zeros(grid.shape, np.float32)
    if ib.any():
        idx = np.argwhere(ib)
        lo = np.maximum(idx.min(0) - 4, 0)
        hi = np.minimum(idx.max(0) + 5, np.asarray(grid.shape))
        sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        x = model_input(arr["post"][sl], None if arr["pre"] is None else arr["pre"][sl], ib[sl],
                        None if arr["flair"] is None else arr["flair"][sl], channels)
        prob_iso[sl] = predict(model, x, window=ucfg.window, overlap=ucfg.overlap,
                               batch=ucfg.batch if device == "cuda" else 1, flips=ucfg.flips,
                               device=device)
        prob_iso[~ib] = 0.0
    if prob_iso.shape == post.shape and np.allclose(grid.affine, post.affine, atol=1e-3):
        prob = prob_iso
    else:
        prob = resample(Image(prob_iso, grid.affine), post).array.astype(np.float32)
    prob = np.clip(prob, 0.0, 1.0) * brain
    labels = label_lesions((prob >= ucfg.threshold) & brain, post.affine, cfg.lesion)
    enh = _enhancement(post.array, brain)
    labels, n_gated = enhancement_gate(labels, enh, ucfg.min_enhancement_z)
    info = {"detector": "unet", "weights": str(weights_path(ucfg).name),
            "weights_meta": {k: meta.get(k) for k in ("seed", "steps", "best_val_f1") if k in meta},
            "device": device, "used_pre": use_pre is not None,
            "used_flair": use_flair is not None, "flips": ucfg.flips,
            "threshold": ucfg.threshold, "n_lesions": int(labels.max()),
            "n_not_enhancing": n_gated,
            "seconds": round(time.perf_counter() - t0, 2)}
    log.info("unet: %d lesions in %.1f s (%s)", info["n_lesions"], info["seconds"], device)
    return Detection(enhancement=enh, probability=prob.astype(np.float32), mask=labels > 0, info=info)


def enhancement_gate(labels: np.ndarray, enhancement: np.ndarray,
                     min_z: float) -> tuple[np.ndarray, int]:
    """Lesions whose 90th-percentile enhancement (z above white matter on the post scan)
    reaches ``min_z``, renumbered 1..n, and how many were dropped (none when ``min_z`` <= 0).

    A Gd+ lesion is brighter than white matter after contrast; a lesion the model marks
    without being so is a non-enhancing one (a chronic plaque bright on FLAIR).
    """
    n = int(labels.max())
    if min_z <= 0 or n == 0:
        return labels, 0
    from scipy import ndimage as ndi

    from ..lesions import relabel_sequential

    idx = np.arange(1, n + 1)
    p90 = ndi.labeled_comprehension(enhancement, labels, idx, lambda v: np.percentile(v, 90),
                                    np.float64, -np.inf)
    drop = idx[p90 < min_z]
    if drop.size == 0:
        return labels, 0
    kept = np.where(np.isin(labels, drop), 0, labels)
    return relabel_sequential(kept).astype(labels.dtype), int(drop.size)


def _enhancement(post: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Post intensity in robust z-units above white matter (0 outside the brain)."""
    p = normalise(post, brain)
    v = p[brain]
    wm = v[(v > 0.85) & (v < 1.15)]
    sd = 1.4826 * float(np.median(np.abs(wm - 1.0))) if wm.size > 100 else 0.05
    z = (p - 1.0) / max(sd, 1e-3)
    z[~brain] = 0.0
    return z.astype(np.float32)
