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
from lesioncount.segmentation.unet_data import (  # noqa: E402
    make_volume, normalise, normalise_flair, sample_patch, stack_channels, wm_level)
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


def _flair(lab, brain, seed=0):
    """FLAIR of _phantom (WM ~ 300), the lesion 1.5 x brighter (its oedema)."""
    rng = np.random.default_rng(seed + 100)
    f = 300 + 6 * rng.standard_normal(lab.shape).astype(np.float32)
    f[lab] *= 1.5
    return f * brain


def _tiny_weights(tmp_path, seed=0, channels=5) -> Path:
    torch.manual_seed(seed)
    m = UNet3D(in_channels=channels, features=(4, 8))
    p = tmp_path / f"tiny{channels}.pt"
    save_weights(m, p, {"seed": seed})
    return p


def test_forward_shape_and_size():
    m = UNet3D(features=(4, 8, 16)).eval()
    with torch.no_grad():
        y = m(torch.zeros(2, 5, 16, 24, 32))
    assert tuple(y.shape) == (2, 1, 16, 24, 32)
    assert n_parameters(UNet3D()) < 2_000_000  # the default architecture stays compact


def test_wm_level_and_normalise():
    post, _, brain, _ = _phantom()
    assert abs(wm_level(post[brain]) - 100) < 3
    n = normalise(post, brain)
    assert n[~brain].max() == 0 and abs(np.median(n[brain]) - 1) < 0.03


def test_normalise_flair_is_one_in_white_matter_and_high_in_the_lesion():
    post, pre, brain, lab = _phantom()
    f = normalise_flair(_flair(lab, brain), normalise(pre, brain), brain)
    assert f[~brain].max() == 0
    assert abs(np.median(f[brain & ~lab]) - 1) < 0.02
    assert abs(np.median(f[lab]) - 1.5) < 0.05


def test_stack_channels_layout():
    a = np.ones((4, 4, 4), np.float32)
    x = stack_channels(a, None, 2 * a)
    assert x.shape == (5, 4, 4, 4)
    assert x[1].max() == 0 and x[2].max() == 0 and x[3].min() == 2 and x[4].min() == 1
    assert stack_channels(a, 3 * a, 2 * a, channels=3).shape == (3, 4, 4, 4)  # a 3-channel model
    with pytest.raises(ValueError):
        stack_channels(a, None, None, channels=4)


def test_patch_sampling_is_deterministic_and_drops_pre_and_flair():
    post, pre, brain, lab = _phantom()
    vol = make_volume(post, pre, brain, lab, flair=_flair(lab, brain))
    a = [sample_patch(vol, np.random.default_rng(3), 16) for _ in range(2)]
    assert np.array_equal(a[0][0], a[1][0]) and np.array_equal(a[0][1], a[1][1])
    x, y = a[0]
    assert x.shape == (5, 16, 16, 16) and y.shape == (16, 16, 16)
    x, _ = sample_patch(vol, np.random.default_rng(0), 16, p_drop_pre=1.0)
    assert x[1].max() == 0 and x[2].max() == 0
    x, _ = sample_patch(vol, np.random.default_rng(0), 16, p_drop_pre=0.0)
    assert x[2].min() == 1 and x[1].max() > 0
    x, _ = sample_patch(vol, np.random.default_rng(0), 16, p_drop_flair=1.0)
    assert x[3].max() == 0 and x[4].max() == 0
    x, _ = sample_patch(vol, np.random.default_rng(0), 16, p_drop_flair=0.0)
    assert x[4].min() == 1 and x[3].max() > 0
    # a volume without FLAIR (e.g. a site case without one) gives the flag 0
    x, _ = sample_patch(make_volume(post, pre, brain, lab), np.random.default_rng(0), 16,
                        p_drop_flair=0.0)
    assert x[4].max() == 0


def test_validation_f1_does_not_reward_one_huge_blob():
    from lesioncount.training import lesion_f1

    truth = np.zeros((40, 40, 40), bool)
    truth[5:9, 5:9, 5:9] = truth[25:29, 25:29, 25:29] = True
    exact = lesion_f1(truth, truth)
    assert exact == {"n_true": 2, "n_pred": 2, "tp": 2, "fp": 0}
    blob = np.zeros_like(truth)
    blob[2:38, 2:38, 2:38] = True  # what an untrained model marks
    assert lesion_f1(blob, truth) == {"n_true": 2, "n_pred": 1, "tp": 0, "fp": 1}
    grown = np.zeros_like(truth)
    grown[4:10, 4:10, 4:10] = True  # a detection a little larger than its lesion still counts
    assert lesion_f1(grown, truth)["tp"] == 1


def test_sliding_window_matches_one_pass():
    torch.manual_seed(0)
    m = UNet3D(features=(4, 8)).eval()
    x = np.random.default_rng(0).standard_normal((5, 20, 20, 20)).astype(np.float32)
    whole = predict(m, x, window=24)
    tiled = predict(m, x, window=12, overlap=4)
    assert whole.shape == (20, 20, 20) and tiled.shape == (20, 20, 20)
    assert np.all((tiled >= 0) & (tiled <= 1))
    # deterministic
    assert np.array_equal(tiled, predict(m, x, window=12, overlap=4))


@pytest.mark.parametrize("with_pre,with_flair,channels", [(True, True, 5), (False, False, 5),
                                                        (False, True, 5), (True, True, 3)])
def test_detect_returns_detection_on_post_grid(tmp_path, with_pre, with_flair, channels):
    post, pre, brain, lab = _phantom()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])  # thick slices: inference grid differs from post's
    aff[:3, 3] = [-20, -20, -40]
    p = Image(post, aff)
    q = Image(pre, aff) if with_pre else None
    f = Image(_flair(lab, brain), aff) if with_flair else None
    w = _tiny_weights(tmp_path, channels=channels)
    cfg = PipelineConfig(detector="unet", unet=UNetConfig(weights=str(w), window=32, threads=1))
    det = detect(p, q, brain, cfg, flair=f)
    assert isinstance(det, Detection)
    for a in (det.enhancement, det.probability, det.mask):
        assert a.shape == post.shape
    assert det.mask.dtype == bool and not det.mask[~brain].any()
    assert det.info["used_pre"] is with_pre
    # a 3-channel model (the first shipped one) has no FLAIR input and ignores it
    assert det.info["used_flair"] is (with_flair and channels == 5)
    assert np.all((det.probability >= 0) & (det.probability <= 1))
    if with_flair and channels == 5:
        # the FLAIR reaches the model: the output changes without it
        det0 = detect(p, q, brain, cfg)
        assert not np.array_equal(det0.probability, det.probability)


def test_detect_rejects_pre_or_flair_off_grid(tmp_path):
    from lesioncount.errors import GridError

    post, pre, brain, _ = _phantom()
    cfg = PipelineConfig(unet=UNetConfig(weights=str(_tiny_weights(tmp_path))))
    with pytest.raises(GridError, match="pre-contrast"):
        detect(Image(post, np.eye(4)), Image(pre[:-2], np.eye(4)), brain, cfg)
    with pytest.raises(GridError, match="FLAIR"):
        detect(Image(post, np.eye(4)), None, brain, cfg, flair=Image(pre[:-2], np.eye(4)))


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
            save_image(Image(_flair(lab, brain), aff), d / "flair.nii.gz")
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
    # the saved weights are the moving average: without it they differ
    train(tmp_path / "raw.pt", data_dir=data, options=TrainOptions(**{**opts.__dict__, "ema": 0.0}),
          device="cpu")
    raw = load_weights(tmp_path / "raw.pt")[0].state_dict()
    assert not all(torch.equal(raw[k], outs[0][k]) for k in raw)
    # fine-tuning keeps the starting architecture, its input channels included
    w3 = tmp_path / "three"
    w3.mkdir()
    for init, channels in ((tmp_path / "w0.pt", 5), (_tiny_weights(w3, channels=3), 3)):
        train(tmp_path / "ft.pt", data_dir=data, init=init,
              options=TrainOptions(steps=1, batch=1, patch=16, val_every=1, log_every=1))
        m = load_weights(tmp_path / "ft.pt")[0]
        assert m.features == (4, 8) and m.in_channels == channels


def test_batches_do_not_depend_on_the_number_of_patch_workers(tmp_path):
    """Patch i of step s has its own generator: forked workers draw the same batches."""
    from lesioncount.training import TrainOptions, _Batches

    post, pre, brain, lab = _phantom()
    vols = [("a", make_volume(post, pre, brain, lab, flair=_flair(lab, brain))),
            ("b", make_volume(post, None, brain, lab))]
    got = []
    for workers in (0, 2):
        b = _Batches(vols, TrainOptions(steps=4, batch=3, patch=16, workers=workers))
        try:
            got.append([b.get(step) for step in range(1, 5)])
        finally:
            b.close()
    for (x0, y0), (x1, y1) in zip(*got):
        assert x0.shape == (3, 5, 16, 16, 16) and x0.dtype == np.float16 and y0.dtype == np.uint8
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


def test_enhancement_gate_drops_lesions_that_do_not_enhance():
    from lesioncount.segmentation.unet import enhancement_gate

    labels = np.zeros((20, 20, 20), np.int32)
    labels[2:5, 2:5, 2:5] = 1      # enhancing: z ~ 8
    labels[10:13, 10:13, 10:13] = 2  # a chronic plaque the model marked: z ~ 1
    labels[15:18, 2:5, 2:5] = 3    # enhancing
    z = np.zeros(labels.shape, np.float32)
    z[labels == 1] = 8.0
    z[labels == 2] = 1.0
    z[labels == 3] = 6.0
    z[10, 10, 10] = 9.0            # one bright voxel does not make the plaque enhance (p90)
    out, n = enhancement_gate(labels, z, 3.0)
    assert n == 1 and out.max() == 2
    assert np.array_equal(out > 0, (labels == 1) | (labels == 3))
    same, n0 = enhancement_gate(labels, z, 0.0)  # 0: no gate
    assert n0 == 0 and np.array_equal(same, labels)


def test_template_chronic_lesions_are_an_option_that_keeps_the_shipped_volumes():
    """--template-chronic N paints chronic look-alikes into the template subjects under
    their own cache names; 0 (the shipped weights' data) keeps the v3 names and draws."""
    from lesioncount.training import TrainOptions, _volume_specs

    assert TrainOptions().template_chronic == 0
    plain = _volume_specs(0, 3, 1)
    assert [s[1] for s in plain if s[1].startswith("mni")] == ["mni0", "mni1", "mni2", "mni-val"]
    assert all(s[4].get("n_chronic", 0) == 0 for s in plain)
    chr5 = _volume_specs(0, 3, 1, template_chronic=5)
    names = [s[1] for s in chr5 if s[1].startswith("mni")]
    assert names == ["mni0-chr5", "mni1-chr5", "mni2-chr5", "mni-val-chr5"]
    assert all(s[4]["n_chronic"] == 5 for s in chr5 if s[1].startswith("mni"))
    # the patients' volumes have their own real chronic lesions and do not change
    assert [s[1:4] for s in chr5 if s[1].startswith("patient")] == \
        [s[1:4] for s in plain if s[1].startswith("patient")]
