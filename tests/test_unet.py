"""U-Net detector: model, patches, training determinism, detect() contract, shipped weights.

Tiny models on tiny volumes so the file runs in well under a minute on one core.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lesioncount.config import PipelineConfig, UNetConfig  # noqa: E402
from lesioncount.image import Image  # noqa: E402
from lesioncount.segmentation import Detection  # noqa: E402
from lesioncount.segmentation.unet import detect, models_dir, predict  # noqa: E402
from lesioncount.segmentation.unet_data import make_volume, normalise, sample_patch, wm_level  # noqa: E402
from lesioncount.segmentation.unet_model import UNet3D, load_weights, n_parameters, save_weights  # noqa: E402

torch.set_num_threads(1)
SHIPPED = models_dir() / "unet_gd.pt"


def _phantom(shape=(40, 40, 40), seed=0, lesion=True):
    """Post, pre (WM ~ 100 / 80), brain mask, lesion truth: a 6 mm bright cube in the middle."""
    rng = np.random.default_rng(seed)
    post = 100 + 3 * rng.standard_normal(shape).astype(np.float32)
    pre = 80 + 3 * rng.standard_normal(shape).astype(np.float32)
    brain = np.zeros(shape, bool)
    brain[4:-4, 4:-4, 4:-4] = True
    lab = np.zeros(shape, bool)
    if lesion:
        lab[17:23, 17:23, 17:23] = True
        post[lab] = 170
    return post * brain, pre * brain, brain, lab


def _tiny_weights(tmp_path, seed=0) -> Path:
    torch.manual_seed(seed)
    m = UNet3D(features=(4, 8))
    p = tmp_path / "tiny.pt"
    save_weights(m, p, {"seed": seed})
    return p


def test_forward_shape_and_size():
    m = UNet3D(features=(4, 8, 16)).eval()
    with torch.no_grad():
        y = m(torch.zeros(2, 3, 16, 24, 32))
    assert tuple(y.shape) == (2, 1, 16, 24, 32)
    assert n_parameters(UNet3D()) < 2_000_000  # the default architecture stays compact


def test_wm_level_and_normalise():
    post, _, brain, _ = _phantom()
    assert abs(wm_level(post[brain]) - 100) < 3
    n = normalise(post, brain)
    assert n[~brain].max() == 0 and abs(np.median(n[brain]) - 1) < 0.03


def test_patch_sampling_is_deterministic_and_drops_pre():
    post, pre, brain, lab = _phantom()
    vol = make_volume(post, pre, brain, lab)
    a = [sample_patch(vol, np.random.default_rng(3), 16) for _ in range(2)]
    assert np.array_equal(a[0][0], a[1][0]) and np.array_equal(a[0][1], a[1][1])
    x, y = a[0]
    assert x.shape == (3, 16, 16, 16) and y.shape == (16, 16, 16)
    x, _ = sample_patch(vol, np.random.default_rng(0), 16, p_drop_pre=1.0)
    assert x[1].max() == 0 and x[2].max() == 0
    x, _ = sample_patch(vol, np.random.default_rng(0), 16, p_drop_pre=0.0)
    assert x[2].min() == 1 and x[1].max() > 0


def test_sliding_window_matches_one_pass():
    torch.manual_seed(0)
    m = UNet3D(features=(4, 8)).eval()
    x = np.random.default_rng(0).standard_normal((3, 20, 20, 20)).astype(np.float32)
    whole = predict(m, x, window=24)
    tiled = predict(m, x, window=12, overlap=4)
    assert whole.shape == (20, 20, 20) and tiled.shape == (20, 20, 20)
    assert np.all((tiled >= 0) & (tiled <= 1))
    # deterministic
    assert np.array_equal(tiled, predict(m, x, window=12, overlap=4))


@pytest.mark.parametrize("with_pre", [True, False])
def test_detect_returns_detection_on_post_grid(tmp_path, with_pre):
    post, pre, brain, _ = _phantom()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])  # thick slices: inference grid differs from post's
    aff[:3, 3] = [-20, -20, -40]
    p = Image(post, aff)
    q = Image(pre, aff) if with_pre else None
    cfg = PipelineConfig(detector="unet", unet=UNetConfig(weights=str(_tiny_weights(tmp_path)),
                                                          window=32, threads=1))
    det = detect(p, q, brain, cfg)
    assert isinstance(det, Detection)
    for a in (det.enhancement, det.probability, det.mask):
        assert a.shape == post.shape
    assert det.mask.dtype == bool and not det.mask[~brain].any()
    assert det.info["used_pre"] is with_pre
    assert np.all((det.probability >= 0) & (det.probability <= 1))


def test_detect_rejects_pre_off_grid(tmp_path):
    from lesioncount.errors import GridError

    post, pre, brain, _ = _phantom()
    cfg = PipelineConfig(unet=UNetConfig(weights=str(_tiny_weights(tmp_path))))
    with pytest.raises(GridError):
        detect(Image(post, np.eye(4)), Image(pre[:-2], np.eye(4)), brain, cfg)


def test_missing_weights_is_a_typed_error(tmp_path):
    from lesioncount.errors import InputError

    post, pre, brain, _ = _phantom()
    cfg = PipelineConfig(unet=UNetConfig(weights=str(tmp_path / "nope.pt")))
    with pytest.raises(InputError, match="nope.pt"):
        detect(Image(post, np.eye(4)), None, brain, cfg)


def test_training_is_deterministic_and_fine_tunes_from_folder(tmp_path):
    from lesioncount.io import save_image
    from lesioncount.training import TrainOptions, train

    data = tmp_path / "site"
    for k in range(2):
        post, pre, brain, lab = _phantom(seed=k)
        d = data / f"case{k}"
        d.mkdir(parents=True)
        aff = np.eye(4)
        save_image(Image(post, aff), d / "post.nii.gz")
        if k == 0:
            save_image(Image(pre, aff), d / "pre.nii.gz")
        save_image(Image(lab.astype(np.uint8), aff), d / "label.nii.gz")
        save_image(Image(brain.astype(np.uint8), aff), d / "brain.nii.gz")
    opts = TrainOptions(steps=3, batch=1, patch=16, features=(4, 8), val_every=3, log_every=1)
    outs = []
    for run in range(2):
        out = tmp_path / f"w{run}.pt"
        hist = train(out, data_dir=data, options=opts, device="cpu")
        assert len(hist["loss"]) == 3 and len(hist["val"]) == 1
        outs.append(load_weights(out)[0].state_dict())
    for k in outs[0]:
        assert torch.equal(outs[0][k], outs[1][k]), k
    # fine-tuning keeps the starting architecture
    hist = train(tmp_path / "ft.pt", data_dir=data, init=tmp_path / "w0.pt",
                 options=TrainOptions(steps=1, batch=1, patch=16, val_every=1, log_every=1))
    assert load_weights(tmp_path / "ft.pt")[0].features == (4, 8)


def test_batches_do_not_depend_on_the_number_of_patch_workers(tmp_path):
    """Patch i of step s has its own generator: forked workers draw the same batches."""
    from lesioncount.training import TrainOptions, _Batches

    post, pre, brain, lab = _phantom()
    vols = [("a", make_volume(post, pre, brain, lab)), ("b", make_volume(post, None, brain, lab))]
    got = []
    for workers in (0, 2):
        b = _Batches(vols, TrainOptions(steps=4, batch=3, patch=16, workers=workers))
        try:
            got.append([b.get(step) for step in range(1, 5)])
        finally:
            b.close()
    for (x0, y0), (x1, y1) in zip(*got):
        assert x0.shape == (3, 3, 16, 16, 16)
        assert np.array_equal(x0, x1) and np.array_equal(y0, y1)
    assert not np.array_equal(got[0][0][0], got[0][1][0])  # steps differ


def test_importing_the_pipeline_does_not_import_torch():
    code = "import sys, lesioncount, lesioncount.pipeline, lesioncount.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_round_trip_keeps_unet():
    cfg = PipelineConfig(detector="unet", unet=UNetConfig(threshold=0.7, flips=True))
    back = PipelineConfig.from_dict(cfg.to_dict())
    assert back.unet == cfg.unet


@pytest.mark.skipif(not SHIPPED.exists(), reason="models/unet_gd.pt not trained yet")
def test_shipped_weights_load_offline(monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("network access while loading weights")

    monkeypatch.setattr(socket, "socket", no_network)
    assert SHIPPED.stat().st_size < 20 * 1024 * 1024
    model, meta = load_weights(SHIPPED)
    assert n_parameters(model) < 2_000_000 and "seed" in meta
    post, pre, brain, lab = _phantom(shape=(48, 48, 48))
    det = detect(Image(post, np.eye(4)), Image(pre, np.eye(4)), brain,
                 PipelineConfig(detector="unet", unet=UNetConfig(threads=1)))
    assert det.mask.shape == post.shape
    # a bright 6 mm cube in flat tissue is found
    assert det.mask[lab].mean() > 0.5


def test_session_key_changes_with_the_unet_weights(tmp_path):
    from lesioncount.dataset import Session
    from lesioncount.pipeline import session_key

    post = tmp_path / "post.nii.gz"
    post.write_bytes(b"not read beyond hashing")
    s = Session(subject="sub-01", session="ses-01", post=post)
    keys = []
    for seed in (0, 1):
        w = tmp_path / f"w{seed}"
        w.mkdir()
        p = _tiny_weights(w, seed)
        keys.append(session_key(s, s, PipelineConfig(detector="unet", unet=UNetConfig(weights=str(p))))[0])
    assert keys[0] != keys[1]
    assert session_key(s, s, PipelineConfig())[0] == session_key(s, s, PipelineConfig())[0]
