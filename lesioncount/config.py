"""Every tunable number of lesioncount, in one typed place, each default with its reason.

The configuration is dumped with the version beside every output
(``dataset_description.json``), so any count can be traced to the parameters
that made it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


@dataclass(frozen=True)
class LesionConfig:
    """The one definition of a lesion, used by every detector, tracking and evaluation."""

    # 26-connectivity (full 3D neighbourhood): a lesion is a 3D object, counted once,
    # not per slice (trial.md); diagonal contacts of one lesion on anisotropic grids stay one.
    connectivity: int = 3
    # 3 mm-diameter sphere = 14.1 mm^3; the trial protocol counts lesions from ~3 mm up and
    # excludes 1-voxel foci (Barkhof 1997). 10 mm^3 leaves room for partial volume on
    # 3 mm slices while rejecting 1-7 voxel noise foci at 1 mm.
    min_volume_mm3: float = 10.0


@dataclass(frozen=True)
class BrainConfig:
    """Brain extraction (lesioncount.brain)."""

    # Components of enhancement closer than this to the brain surface are treated as
    # dura, sinuses and cortical veins; cortical MS lesions there are rarely visible on
    # T1 post-contrast anyway (trial.md: these structures cause most false positives).
    surface_margin_mm: float = 3.0


@dataclass(frozen=True)
class RegistrationConfig:
    """Rigid (or affine) multi-resolution mutual-information registration (SimpleITK)."""

    transform: str = "rigid"  # "rigid" or "affine"; rigid: same head, same scanner, no growth
    # Mattes mutual information handles different sequences (pre vs post, 1 vs 3 mm).
    histogram_bins: int = 32
    # 3 levels, coarse to fine: captures motion of a few cm / 10-20 degrees without local minima.
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0, 0.0)
    # 10% of voxels, random: enough for a stable MI estimate, keeps a pair under ~10 s on 2 cores.
    sampling_percentage: float = 0.10
    iterations: int = 200
    learning_rate: float = 1.0
    seed: int = 7  # sampling is random: fix it so reruns give identical transforms
    # A registration whose post-alignment quality (normalised cross-correlation of the
    # gradient-magnitude images inside the fixed brain mask, see registration.py) falls below
    # this is flagged as failed and its session is not counted.
    min_quality: float = 0.25


@dataclass(frozen=True)
class ClassicalConfig:
    """Classical threshold-and-suppress Gd+ detector (lesioncount.segmentation.classical)."""

    # Seed threshold in robust z-units of enhancement above normal tissue; 4 keeps
    # the expected noise seeds below ~1 per brain at 1 mm (Gaussian tail 3e-5 x 1.5e6 voxels).
    seed_z: float = 4.0
    # Hysteresis extent threshold: grows a seed into the visible extent of the lesion.
    extent_z: float = 2.5
    # Components more elongated than this (ratio of the largest to the middle principal
    # axis) are vessels; nodular and ring lesions are roughly round (ratio < 2).
    max_elongation: float = 3.0


@dataclass(frozen=True)
class TrackingConfig:
    """Matching lesions across visits in baseline space (lesioncount.tracking)."""

    # "previous": new = overlaps no Gd+ lesion of the previous session (the contract's default);
    # "any_earlier": new = overlaps no Gd+ lesion of any earlier session.
    convention: str = "previous"
    # Isotropic spacing of the common tracking grid in baseline space: 1 mm keeps small
    # lesions from 3 mm-slice sessions intact.
    grid_spacing_mm: float = 1.0
    # Overlap is tested after dilating the earlier lesions by this much: rigid registration
    # error is < 0.5 mm and enhancement borders shift by about a voxel between visits.
    match_tolerance_mm: float = 1.0
    # A part of a component lying outside every earlier lesion (after the tolerance) is a
    # separate new lesion when it is this big and survives a 1-voxel opening; a lesion that
    # merely grew leaves only a thin rim, which does not.
    min_new_part_mm3: float = 14.0


@dataclass(frozen=True)
class PipelineConfig:
    detector: str = "classical"  # "classical" or "unet"
    use_pre: bool = True  # use the pre-contrast T1 when a session has one
    lesion: LesionConfig = field(default_factory=LesionConfig)
    brain: BrainConfig = field(default_factory=BrainConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Eligibility: "more than 2 Gd+ lesions at inclusion" excludes (trial.md).
    max_baseline_gd: int = 2

    def __post_init__(self):
        if self.detector not in ("classical", "unet"):
            raise ConfigError(f"detector must be 'classical' or 'unet', got {self.detector!r}")
        if self.tracking.convention not in ("previous", "any_earlier"):
            raise ConfigError(f"tracking.convention must be 'previous' or 'any_earlier', "
                              f"got {self.tracking.convention!r}")
        if self.registration.transform not in ("rigid", "affine"):
            raise ConfigError(f"registration.transform must be 'rigid' or 'affine', "
                              f"got {self.registration.transform!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PipelineConfig":
        kw = dict(d)
        subs = {"lesion": LesionConfig, "brain": BrainConfig, "registration": RegistrationConfig,
                "classical": ClassicalConfig, "tracking": TrackingConfig}
        for name, klass in subs.items():
            if name in kw and isinstance(kw[name], dict):
                sub = dict(kw[name])
                for f in dataclasses.fields(klass):
                    if f.name in sub and isinstance(sub[f.name], list):
                        sub[f.name] = tuple(sub[f.name])
                try:
                    kw[name] = klass(**sub)
                except TypeError as e:
                    raise ConfigError(f"{name}: {e}") from None
        try:
            return cls(**kw)
        except TypeError as e:
            raise ConfigError(str(e)) from None

    def replace(self, **changes) -> "PipelineConfig":
        return dataclasses.replace(self, **changes)
