"""Training and fine-tuning of the U-Net Gd+ detector (``lesioncount train``).

Two sources of training volumes (see :mod:`lesioncount.segmentation.unet_data`):

- the phantom (default): MNI-template subjects with veins, sinuses, choroid plexus and
  dura, and the two real patients of shared data, each with synthetic enhancing lesions
  injected by :func:`lesioncount.phantom.inject_lesions`; generated once and cached;
- a folder of a site's labelled cases (``--data DIR``) for fine-tuning (``--init``).

Training is patch-based and deterministic for a given seed and thread count: one numpy
generator draws every patch and augmentation, torch is seeded, data loading runs in the
main process. Loss (BCE + soft Dice) is logged every ``log_every`` steps and lesion-wise
F1 on held-out validation crops every ``val_every`` steps; validation and the saved
weights use an exponential moving average of the weights (``ema``), and the weights of
the best validation F1 are saved.
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
PATIENTS = ("patient07", "patient19")
# bump when the volumes change (v2: brain masks from lesioncount.brain; v3: with FLAIR)
VOLUME_VERSION = "v3"


@dataclass(frozen=True)
class TrainOptions:
    """Options of one training run (saved with the weights)."""

    seed: int = 0
    steps: int = 2000
    batch: int = 16
    # 48^3 at 1 mm: a 12 mm lesion with 18 mm of context each side, enough to see that a
    # vessel goes on beyond the patch centre; 32^3 (the first model) saw too little of it.
    patch: int = 48
    lr: float = 3e-3
    # 4 poolings: a 30+ mm receptive field at ~1.4 M parameters; the extra level costs
    # little at inference (1/8 of the voxels of the level above).
    features: tuple[int, ...] = (8, 16, 32, 64, 128)
    threads: int = 1         # 1: bit-reproducible on CPU, and 2 threads ran 3x slower on shared cores
    # Processes that draw patches (0 = the training process). Each patch has its own
    # generator seeded by (seed, step, index), so any count gives the same patches.
    workers: int = 0
    val_every: int = 250
    log_every: int = 50
    p_drop_pre: float = 0.4
    # FLAIR is an input (channels 4-5) but many sessions have none: dropped in 30 % of patches.
    p_drop_flair: float = 0.3
    # 3 mm-slice look (boxcar then linear upsampling along one axis): half the sessions of
    # a multi-centre trial are 2D acquisitions, where the first model lost most (F1 0.75).
    p_thick: float = 0.5
    # Input channels: 5 = post, pre, has-pre, FLAIR, has-FLAIR (3: without the FLAIR).
    channels: int = 5
    # Decay of the moving average of the weights that is validated and saved: the raw
    # weights' validation F1 swung by 0.3 between checks (models/README.md, first GPU run);
    # 0.999 averages over the last ~1000 steps. 0 = no averaging.
    ema: float = 0.999
    templates: int = 16       # MNI-template subjects; every third one with a whole head
    # Chronic (FLAIR-bright, non-enhancing) lesions painted into each template subject. The
    # shipped weights were trained without (0): the FLAIR model then marked the phantom's
    # chronic plaques and needs UNetConfig.min_enhancement_z. The next training should use
    # ~5 (the phantom study draws 2-8 per template subject); not yet trained (no GPU).
    template_chronic: int = 0
    patient_repeats: int = 4  # injections per real patient
    # Real patients left out of training and validation (to measure false positives on
    # a patient the model has never seen; see models/README.md).
    exclude: tuple[str, ...] = ()


def _volume_specs(seed: int, templates: int, patient_repeats: int, exclude=(),
                  template_chronic: int = 0) -> list:
    from .segmentation.unet_data import patient_volume, template_volume

    specs = []
    chr_tag = f"-chr{template_chronic}" if template_chronic else ""
    for i in range(templates):
        specs.append(("train", f"mni{i}{chr_tag}", template_volume, (seed + i,),
                      {"whole_head": i % 3 == 2, "n_chronic": template_chronic}))
    for r in range(patient_repeats):
        for k, name in enumerate(PATIENTS):
            if name not in exclude:
                specs.append(("train", f"{name}-{r}", patient_volume, (name, seed + 50 + 10 * r + k), {}))
    specs.append(("val", f"mni-val{chr_tag}", template_volume, (seed + 500,),
                  {"whole_head": True, "n_chronic": template_chronic}))
    for k, name in enumerate(PATIENTS):
        if name not in exclude:
            specs.append(("val", f"{name}-val", patient_volume, (name, seed + 510 + k), {}))
    return specs


def _make_volume(job) -> str:
    from .segmentation.unet_data import save_volume

    path, fn, args, kwargs = job
    t = time.perf_counter()
    tmp = path.with_suffix(".tmp.npz")
    save_volume(fn(*args, **kwargs), tmp)
    tmp.rename(path)
    return f"generated {path.name} in {time.perf_counter() - t:.0f} s"


def phantom_volumes(cache_dir: Path, seed: int = 0, *, templates: int = TrainOptions.templates,
                    patient_repeats: int = TrainOptions.patient_repeats, exclude=(),
                    workers: int = 0,
                    template_chronic: int = TrainOptions.template_chronic) -> tuple[list, list]:
    """Training and validation volumes from the phantom, generated once into ``cache_dir``.

    ``workers`` > 0 generates missing volumes in that many processes (each volume is
    seeded on its own, so the volumes do not depend on it).
    """
    from .segmentation.unet_data import load_volume

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    specs = _volume_specs(seed, templates, patient_repeats, exclude, template_chronic)
    path = {name: cache_dir / f"{split}-{name}-seed{seed}-{VOLUME_VERSION}.npz"
            for split, name, *_ in specs}
    todo = [(path[name], fn, args, kw) for split, name, fn, args, kw in specs if not path[name].exists()]
    if workers > 0 and len(todo) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(min(workers, len(todo))) as pool:
            for msg in pool.imap_unordered(_make_volume, todo):
                log.info(msg)
    else:
        for job in todo:
            log.info(_make_volume(job))
    train, val = [], []
    for split, name, *_ in specs:
        (train if split == "train" else val).append((name, load_volume(path[name])))
    return train, val


# ----------------------------------------------------------------------------- batches

_VOLS: list = []  # training volumes, set before the patch workers fork (shared, read-only)


def draw_batch(seed: int, step: int, batch: int, patch: int, p_drop_pre: float,
               vols: list | None = None, p_drop_flair: float = 0.3, p_thick: float = 0.5,
               channels: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The ``step``-th training batch: patch ``i`` comes from its own generator (seed, step, i).

    Returned as float16 inputs and uint8 targets (half and a quarter of the bytes a patch
    worker sends to the training process; inputs are clipped to [0, 4], where float16 is
    exact to 0.002).
    """
    from .segmentation.unet_data import sample_patch

    vols = _VOLS if vols is None else vols
    xs, ys = [], []
    for i in range(batch):
        rng = np.random.default_rng([seed, step, i])
        _, vol = vols[int(rng.integers(len(vols)))]
        x, y = sample_patch(vol, rng, patch, p_drop_pre=p_drop_pre, p_drop_flair=p_drop_flair,
                            p_thick=p_thick, channels=channels)
        xs.append(x.astype(np.float16))
        ys.append((y > 0.5).astype(np.uint8))
    return np.stack(xs), np.stack(ys)


def _draw(args):
    return draw_batch(*args)


class _Batches:
    """Batches 1..steps in order, drawn ahead by ``workers`` forked processes (or inline)."""

    def __init__(self, vols: list, o: "TrainOptions"):
        global _VOLS
        self.o, self.vols = o, vols
        self.pool = None
        if o.workers > 0:
            import collections
            import multiprocessing as mp

            _VOLS = vols
            self.pool = mp.get_context("fork").Pool(o.workers)
            self.ahead = collections.deque()
            self.next_step = 1

    def _args(self, step: int) -> tuple:
        o = self.o
        return (o.seed, step, o.batch, o.patch, o.p_drop_pre, None, o.p_drop_flair, o.p_thick,
                o.channels)

    def get(self, step: int):
        if self.pool is None:
            args = list(self._args(step))
            args[5] = self.vols
            return draw_batch(*args)
        while self.next_step <= self.o.steps and len(self.ahead) < 3 * self.o.workers:
            self.ahead.append(self.pool.apply_async(_draw, (self._args(self.next_step),)))
            self.next_step += 1
        return self.ahead.popleft().get()

    def close(self):
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


# A detection counts (finds the true lesions it overlaps) only when at least this fraction
# of its voxels lies on true lesions. Without it an untrained model that marks the whole
# crop as one component "found" every lesion with one detection: validation F1 0.96 after
# 10 steps of a smoke run. A real detection of a true lesion overlaps it by far more.
MIN_DETECTION_ON_TRUTH = 0.1


def lesion_f1(pred: np.ndarray, truth: np.ndarray, affine=np.eye(4)) -> dict:
    """Lesion-wise counts on one grid: a lesion is found when a detection overlaps it and
    at least MIN_DETECTION_ON_TRUTH of that detection lies on true lesions; any other
    detection is a false positive."""
    pl = label_lesions(pred, affine)
    tl = label_lesions(truth, affine)
    n_pred, n_true = int(pl.max()), int(tl.max())
    size = np.bincount(pl.ravel(), minlength=n_pred + 1)
    on_truth = np.bincount(pl[tl > 0], minlength=n_pred + 1)
    good = np.flatnonzero(on_truth[1:] >= MIN_DETECTION_ON_TRUTH * size[1:]) + 1
    tp_true = len(np.setdiff1d(np.unique(tl[np.isin(pl, good)]), [0]))
    return {"n_true": n_true, "n_pred": n_pred, "tp": tp_true, "fp": n_pred - len(good)}


def _f1(c: dict) -> tuple[float, float, float]:
    sens = c["tp"] / c["n_true"] if c["n_true"] else 1.0
    prec = (c["n_pred"] - c["fp"]) / c["n_pred"] if c["n_pred"] else 1.0
    f1 = 2 * sens * prec / (sens + prec) if sens + prec > 0 else 0.0
    return sens, prec, f1


def validation_crops(vols: list, size: int = 96, per_volume: int = 2, seed: int = 0,
                     channels: int = 5) -> list:
    """Fixed crops of the validation volumes with their truth: ``per_volume`` around random
    lesions and one around a random brain voxel (false positives away from lesions), each
    with every scan, without the FLAIR and without the pre-contrast scan (as present)."""
    from .segmentation.unet_data import stack_channels

    rng = np.random.default_rng(seed)
    crops = []
    for name, v in vols:
        idx = np.argwhere(v["label"] > 0)
        anywhere = np.argwhere(v["brain"])
        for n in range(per_volume + 1):
            pool = idx if (n < per_volume and len(idx)) else anywhere
            c = pool[rng.integers(len(pool))]
            lo = np.clip(c - size // 2, 0, np.maximum(np.asarray(v["brain"].shape) - size, 0))
            sl = tuple(slice(int(a), int(a) + size) for a in lo)
            has_pre = v["pre"] is not None
            has_flair = channels > 3 and v.get("flair") is not None
            # every scan, without the FLAIR, without the pre (fewer when a scan is absent)
            combos = dict.fromkeys([(has_pre, has_flair), (has_pre, False), (False, has_flair)])
            for with_pre, with_flair in combos:
                tag = f"{name}{n}{'' if with_pre else '-nopre'}{'' if with_flair else '-noflair'}"
                pre = v["pre"][sl].astype(np.float32) if with_pre else None
                flair = v["flair"][sl].astype(np.float32) if with_flair else None
                x = stack_channels(v["post"][sl].astype(np.float32), pre, flair, channels)
                crops.append((tag, x, v["label"][sl] > 0, v["brain"][sl]))
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
    from .segmentation.unet_data import folder_volumes

    o = options
    t0 = time.perf_counter()
    if init is not None:
        # fine-tuning keeps the initial model's architecture, its input channels included
        import dataclasses

        import torch

        ck = torch.load(init, map_location="cpu", weights_only=True)
        o = dataclasses.replace(o, channels=int(ck["in_channels"]),
                                features=tuple(int(f) for f in ck["features"]))
    if data_dir is None:
        train_vols, val_vols = phantom_volumes(Path(cache_dir), o.seed, templates=o.templates,
                                               patient_repeats=o.patient_repeats, exclude=o.exclude,
                                               workers=o.workers, template_chronic=o.template_chronic)
        source = "phantom"
    else:
        cases = folder_volumes(Path(data_dir))
        n_val = max(1, len(cases) // 5) if len(cases) >= 2 else 0
        val_vols, train_vols = cases[:n_val], cases[n_val:]
        source = str(data_dir)
    log.info("%d training and %d validation volumes (%.0f s)", len(train_vols), len(val_vols),
             time.perf_counter() - t0)
    # the patch workers fork before CUDA is touched (a forked CUDA context is unusable)
    batches = _Batches(train_vols, o)
    try:
        return _fit(out, o, batches, val_vols, source, init, device, t0)
    finally:
        batches.close()


def _fit(out, o: TrainOptions, batches: _Batches, val_vols: list, source: str, init, device, t0) -> dict:
    import copy

    import torch

    from .segmentation.unet_model import UNet3D, load_weights, n_parameters, save_weights

    torch.set_num_threads(o.threads)
    torch.manual_seed(o.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if init is not None:
        model, _ = load_weights(init, dev)
    else:
        model = UNet3D(in_channels=o.channels, features=o.features).to(dev)
    model.train()
    # the averaged weights (validated and saved); the model itself when ema = 0
    avg = copy.deepcopy(model).eval() if o.ema > 0 else model
    avg_t = [t for t in avg.state_dict().values() if t.dtype.is_floating_point]
    model_t = [t for t in model.state_dict().values() if t.dtype.is_floating_point]
    avg_i = [t for t in avg.state_dict().values() if not t.dtype.is_floating_point]
    model_i = [t for t in model.state_dict().values() if not t.dtype.is_floating_point]
    opt = torch.optim.Adam(model.parameters(), lr=o.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=o.lr, total_steps=o.steps, pct_start=0.1)
    crops = validation_crops(val_vols, seed=o.seed, channels=o.channels) if val_vols else []
    history = {"options": asdict(o), "source": source, "init": str(init) if init else None,
               "device": dev if dev == "cpu" else torch.cuda.get_device_name(),
               "torch": torch.__version__, "n_parameters": n_parameters(model), "loss": [], "val": []}
    best = (-1.0, 0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log.json")
    best_state = None
    run_loss = []
    t_train = time.perf_counter()

    def meta() -> dict:
        return {"seed": o.seed, "steps": o.steps, "best_step": best[1], "best_val_f1": best[0],
                "source": source, "options": asdict(o), "device": history["device"],
                "seconds": round(time.perf_counter() - t0, 1)}

    for step in range(1, o.steps + 1):
        xb, yb = batches.get(step)
        xb = torch.from_numpy(xb).to(dev).float()
        yb = torch.from_numpy(yb)[:, None].to(dev).float()
        # bf16 autocast on a GPU (~2x faster, same accuracy for this net); exact fp32 on CPU
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev == "cuda"):
            logit = model(xb)
        logit = logit.float()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, yb)
        p = torch.sigmoid(logit)
        dice = 1 - (2 * (p * yb).sum() + 1) / (p.sum() + yb.sum() + 1)
        loss = bce + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if avg is not model:
            with torch.no_grad():
                # the usual warm-up of the decay, so early checks are not the random init
                d = min(o.ema, (1.0 + step) / (10.0 + step))
                torch._foreach_lerp_(avg_t, model_t, 1.0 - d)
                for a, b in zip(avg_i, model_i):
                    a.copy_(b)
        run_loss.append(loss.item())
        if step % o.log_every == 0:
            m = float(np.mean(run_loss))
            history["loss"].append((step, m))
            run_loss = []
            el = time.perf_counter() - t_train
            log.info("step %d/%d loss %.4f (%.3f s/step, %.0f s)", step, o.steps, m, el / step, el)
        if crops and (step % o.val_every == 0 or step == o.steps):
            avg.eval()
            v = validate(avg, crops, dev)
            model.train()
            v["step"] = step
            v["seconds"] = round(time.perf_counter() - t0, 1)
            history["val"].append(v)
            log.info("step %d validation: F1 %.3f sensitivity %.3f precision %.3f (%d true, %d "
                     "detected, %d FP)", step, v["f1"], v["sensitivity"], v["precision"],
                     v["n_true"], v["n_pred"], v["fp"])
            if v["f1"] >= best[0]:
                best = (v["f1"], step)
                best_state = {k: t.detach().clone() for k, t in avg.state_dict().items()}
                # saved as it goes, so an interrupted run leaves its best weights so far
                save_weights(_cpu_copy(avg, best_state), out, dict(meta(), complete=False))
            log_path.write_text(json.dumps(history, indent=1))
    if best_state is not None:
        avg.load_state_dict(best_state)
    history["best_step"], history["best_val_f1"] = best[1], best[0]
    history["seconds"] = round(time.perf_counter() - t0, 1)
    save_weights(avg.cpu(), out, dict(meta(), complete=True))
    log_path.write_text(json.dumps(history, indent=1))
    log.info("saved %s (best validation F1 %.3f at step %d) in %.0f s", out, best[0], best[1],
             history["seconds"])
    return history


def _cpu_copy(model, state: dict):
    import copy

    m = copy.deepcopy(model).cpu()
    m.load_state_dict({k: v.cpu() for k, v in state.items()})
    return m
