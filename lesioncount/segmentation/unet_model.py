"""The compact 3D U-Net (PyTorch) behind the ``unet`` detector.

Imported only by :mod:`lesioncount.segmentation.unet` and :mod:`lesioncount.training`,
never by ``import lesioncount``: torch is loaded only when the U-Net is used.

Input channels (:data:`IN_CHANNELS`, built by
:func:`lesioncount.segmentation.unet_data.stack_channels`): normalised post-contrast T1,
normalised registered pre-contrast T1 (zeros when there is none), a constant 0/1 channel
saying whether the pre is present, the registered FLAIR over its white-matter level (zeros
when there is none) and its 0/1 flag. Weights of 3 channels (no FLAIR) still load.
Output: one logit per voxel for "enhancing lesion".
"""
from __future__ import annotations

import torch
from torch import nn

IN_CHANNELS = 5


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.LeakyReLU(0.01, inplace=True),
    )


class UNet3D(nn.Module):
    """A plain 3D U-Net: ``len(features) - 1`` poolings, two 3x3x3 convolutions per level.

    Parameters
    ----------
    in_channels : int
        Input channels (post, pre, has-pre, FLAIR, has-FLAIR; 3 without the FLAIR).
    features : tuple of int
        Channels per level, finest first; the last is the bottleneck. Spatial input sizes
        must be divisible by ``2 ** (len(features) - 1)``.
    """

    def __init__(self, in_channels: int = IN_CHANNELS, features: tuple[int, ...] = (8, 16, 32, 64)):
        super().__init__()
        self.features = tuple(int(f) for f in features)
        self.in_channels = int(in_channels)
        self.down = nn.ModuleList()
        c = in_channels
        for f in self.features[:-1]:
            self.down.append(_block(c, f))
            c = f
        self.bottom = _block(c, self.features[-1])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        c = self.features[-1]
        for f in reversed(self.features[:-1]):
            self.up.append(nn.ConvTranspose3d(c, f, 2, stride=2))
            self.dec.append(_block(2 * f, f))
            c = f
        self.head = nn.Conv3d(c, 1, 1)

    @property
    def divisor(self) -> int:
        return 2 ** (len(self.features) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for blk in self.down:
            x = blk(x)
            skips.append(x)
            x = nn.functional.max_pool3d(x, 2)
        x = self.bottom(x)
        for up, dec, s in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), s], dim=1))
        return self.head(x)


def n_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def save_weights(model: UNet3D, path, meta: dict) -> None:
    """Save the weights with what is needed to rebuild the model (``features``) and provenance."""
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "features": list(model.features), "in_channels": model.in_channels,
                "meta": dict(meta)}, path)


def load_weights(path, device: str = "cpu") -> tuple[UNet3D, dict]:
    """Rebuild a :class:`UNet3D` from :func:`save_weights`'s file (no network, weights only)."""
    ck = torch.load(path, map_location=device, weights_only=True)
    model = UNet3D(int(ck["in_channels"]), tuple(ck["features"]))
    model.load_state_dict(ck["state_dict"])
    model.to(device).eval()
    return model, dict(ck.get("meta", {}))
