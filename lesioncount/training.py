"""Training and fine-tuning of the U-Net Gd+ detector (``lesioncount train``).

Two sources of training volumes (see :mod:`lesioncount.segmentation.unet_data`):

- the phantom (default): MNI-template subjects with veins, sinuses, choroid plexus and
  dura, and the two real patients of shared data, each with synthetic enhancing lesions
  injected by :func:`lesioncount.phantom.inject_lesions`; generated once and cached;
- a folder of a site's labelled cases (``--data DIR``) for fine-tuning (``--init``).

Training is patch-based and deterministic for a given seed and thread count: one numpy
generator draws every patch and augmentation, torch is seeded, data loading runs in the
main process. Loss (BCE + soft Dice) is logged every ``log_every`` steps and lesion-wise
F1 on held-out validation crops every ``val_every`` steps; the weights of the best
validation F1 are saved.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .lesions import label_lesions

log = logging.getLogger(__name__)

# Seeds of the phantom volumes: training uses base + 0..99, validation base + 500..599;
# the evaluation in models/README.md uses seeds >= 9000, which training never sees.
TRAIN_TEMPLATES = 6       # MNI subjects; every third one with a whole head
TRAIN_PATIENT_REPEATS = 2  # injections per real patient
PATIENTS = ("patient07", "patient19")


@dataclass(frozen=True)
class TrainOptions:
    """Options of one training run (saved with the weights)."""

    seed: int = 0
    steps: int = 500
    batch: int = 4
    patch: int = 32          # 32^3 at 1 mm: a 12 mm lesion with 10 mm context each side; 40^3 was 2x slower
    lr: float = 3e-3
    features: tuple[int, ...] = (8, 16, 32, 64)
    threads: int = 1         # 1: bit-reproducible, and 2 threads ran 3x slower on the shared 2 cores
    val_every: int = 125
    log_every: int = 25
    p_drop_pre: float = 0.4


def phantom_volumes(cache_dir: Path, seed: int = 0) -> tuple[list, list]:
    """Training and validation volumes from the phantom, generated once into ``cache_dir``."""
    from .segmentation.unet_data import load_volume, patient_volume, save_volume, template_volume

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    specs = []
    for i in range(TRAIN_TEMPLATES):
        specs.append(("train", f"mni{i}", lambda i=i: template_volume(seed + i, whole_head=i % 3 == 2)))
    for r in range(TRAIN_PATIENT_REPEATS):
        for k, name in enumerate(PATIENTS):
            s = seed + 50 + 10 * r + k
            specs.append(("train", f"{name}-{r}", lambda n=name, s=s: patient_volume(n, s)))
    specs.append(("val", "mni-val", lambda: template_volume(seed + 500, whole_head=True)))
    for k, name in enumerate(PATIENTS):
        specs.append(("val", f"{name}-val", lambda n=name, s=seed + 510 + k: patient_volume(n, s)))
    train, val = [], []
    for split, name, make in specs:
        path = cache_dir / f"{split}-{name}-seed{seed}.npz"
        if not path.exists():
            t = time.perf_counter()
            vol = make()
            save_volume(vol, path.with_suffix(".tmp.npz"))
            path.with_suffix(".tmp.npz").rename(path)
            log.info("generated %s in %.0f s", path.name, time.perf_counter() - t)
        (train if split == "train" else val).append((name, load_volume(path)))
    return train, val


def lesion_f1(pred: np.ndarray, truth: np.ndarray, affine=np.eye(4)) -> dict:
    """Lesion-wise counts on one grid: a lesion is found when a detection overlaps it."""
    pl = label_lesions(pred, affine)
    tl = label_lesions(truth, affine)
    n_pred, n_true = int(pl.max()), int(tl.max())
    tp_true = len(np.setdiff1d(np.unique(tl[pl > 0]), [0]))
    tp_pred = len(np.setdiff1d(np.unique(pl[tl > 0]), [0]))
    return {"n_true": n_true, "n_pred": n_pred, "tp": tp_true, "fp": n_pred - tp_pred}


def _f1(c: dict) -> tuple[float, float, float]:
    sens = c["tp"] / c["n_true"] if c["n_true"] else 1.0
    prec = (c["n_pred"] - c["fp"]) / c["n_pred"] if c["n_pred"] else 1.0
    f1 = 2 * sens * prec / (sens + prec) if sens + prec > 0 else 0.0
    return sens, prec, f1


def validation_crops(vols: list, size: int = 96, per_volume: int = 1, seed: int = 0) -> list:
    """Fixed crops of the validation volumes (around random lesions) with their truth."""
    rng = np.random.default_rng(seed)
    crops = []
    for name, v in vols:
        idx = np.argwhere(v["label"] > 0)
        for _ in range(per_volume):
            c = idx[rng.integers(len(idx))] if len(idx) else np.asarray(v["brain"].shape) // 2
            lo = np.clip(c - size // 2, 0, np.maximum(np.asarray(v["brain"].shape) - size, 0))
            sl = tuple(slice(int(a), int(a) + size) for a in lo)
            for with_pre in ((True, False) if v["pre"] is not None else (False,)):
                pre = v["pre"][sl].astype(np.float32) if with_pre else None
                x = np.zeros((3,) + v["brain"][sl].shape, np.float32)
                x[0] = v["post"][sl]
                if pre is not None:
                    x[1], x[2] = pre, 1.0
                crops.append((f"{name}{'' if with_pre else '-nopre'}", x, v["label"][sl] > 0,
                              v["brain"][sl]))
    return crops


def validate(model, crops: list, device: str = "cpu", threshold: float = 0.5) -> dict:
    from .segmentation.unet import predict

    tot = {"n_true": 0, "n_pred": 0, "tp": 0, "fp": 0}
    for _, x, truth, brain in crops:
        prob = predict(model, x, window=96, overlap=16, device=device) * brain
        c = lesion_f1(prob >= threshold, truth)
        for k in tot:
            tot[k] += c[k]
    sens, prec, f1 = _f1(tot)
    return dict(tot, sensitivity=sens, precision=prec, f1=f1)


def train(out: str | Path, *, data_dir: str | Path | None = None, cache_dir: str | Path = "/tmp/unet-data",
          init: str | Path | None = None, options: TrainOptions = TrainOptions(),
          device: str | None = None) -> dict:
    """Train (or fine-tune, with ``init``) the U-Net and save the best weights to ``out``.

    Parameters
    ----------
    out : path
        Weights file to write (e.g. ``models/unet_gd.pt``); a ``.json`` log goes beside it.
    data_dir : path, optional
        Folder of labelled cases (see :func:`lesioncount.segmentation.unet_data.folder_volumes`);
        the phantom volumes when None. With a folder, one case in five (at least one when
        there are two or more) is held out for validation.
    cache_dir : path
        Where phantom volumes are generated once and reused.
    init : path, optional
        Weights to start from (fine-tuning); their architecture is kept.
    options : TrainOptions
    device : str, optional
        "cpu" or "cuda"; CUDA when available by default.

    Returns
    -------
    dict
        The training log: options, per-step losses, validation scores, best step, seconds.
    """
    import torch

    from .segmentation.unet_data import folder_volumes, sample_patch
    from .segmentation.unet_model import UNet3D, load_weights, n_parameters, save_weights

    o = options
    torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    if data_dir is None:
        train_vols, val_vols = phantom_volumes(Path(cache_dir), o.seed)
        source = "phantom"
    else:
        cases = folder_volumes(Path(data_dir))
        n_val = max(1, len(cases) // 5) if len(cases) >= 2 else 0
        val_vols, train_vols = cases[:n_val], cases[n_val:]
        source = str(data_dir)
    log.info("%d training and %d validation volumes (%.0f s)", len(train_vols), len(val_vols),
             time.perf_counter() - t0)
    if init is not None:
        model, _ = load_weights(init, dev)
    else:
        model = UNet3D(features=o.features).to(dev)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=o.steps, pct_start=0.1)
    rng = np.random.default_rng(o.seed)
    crops = validation_crops(val_vols, seed=o.seed) if val_vols else []
    history = {"options": asdict(o), "source": source, "init": str(init) if init else None,
               "n_parameters": n_parameters(model), "loss": [], "val": []}
    best = (-1.0, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    best_state = None
    run_loss = []
    t_train = time.perf_counter()
    for step in range(1, o.steps + 1):
        xs, ys = [], []
        for _ in range(o.batch):
            name, vol = train_vols[int(rng.integers(len(train_vols)))]
            x, y = sample_patch(vol, rng, o.patch, p_drop_pre=o.p_drop_pre)
            xs.append(x)
            ys.append(y)
        xb = torch.from_numpy(np.stack(xs)).to(dev)
        yb = torch.from_numpy(np.stack(ys))[:, None].to(dev)
        logit = model(xb)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, yb)
        p = torch.sigmoid(logit)
        dice = 1 - (2 * (p * yb).sum() + 1) / (p.sum() + yb.sum() + 1)
        loss = bce + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        run_loss.append(loss.item())
        if step % o.log_every == 0:
            m = float(np.mean(run_loss))
            history["loss"].append((step, m))
            run_loss = []
            el = time.perf_counter() - t_train
            log.info("step %d/%d loss %.4f (%.2f s/step, %.0f s)", step, o.steps, m, el / step, el)
        if crops and (step % o.val_every == 0 or step == o.steps):
            model.eval()
            v = validate(model, crops, dev)
            model.train()
            v["step"] = step
            history["val"].append(v)
            log.info("step %d validation: F1 %.3f sensitivity %.3f precision %.3f (%d true, %d "
                     "detected, %d FP)", step, v["f1"], v["sensitivity"], v["precision"],
                     v["n_true"], v["n_pred"], v["fp"])
            if v["f1"] >= best[0]:
                best = (v["f1"], step)
                best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
        if out.with_suffix(".log.json").parent.exists() and step % (o.log_every * 8) == 0:
            out.with_suffix(".log.json").write_text(json.dumps(history, indent=1))
    if best_state is not None:
        model.load_state_dict(best_state)
    history["best_step"], history["best_val_f1"] = best[1], best[0]
    history["seconds"] = round(time.perf_counter() - t0, 1)
    meta = {"seed": o.seed, "steps": o.steps, "best_step": best[1], "best_val_f1": best[0],
            "source": source, "options": asdict(o), "seconds": history["seconds"]}
    save_weights(model.cpu(), out, meta)
    out.with_suffix(".log.json").write_text(json.dumps(history, indent=1))
    log.info("saved %s (best validation F1 %.3f at step %d) in %.0f s", out, best[0], best[1],
             history["seconds"])
    return history
