"""Names and writers of lesioncount's output folder (a BIDS derivatives dataset).

The file contract (``shared/docs/output-contract.md``) is read by other programs:
add columns, never rename them. Every column list the contract names is here,
once, so writers and readers cannot drift apart.
"""
from __future__ import annotations

from pathlib import Path

from . import __version__
from .config import PipelineConfig
from .io import write_json, write_tsv

COUNTS_COLUMNS = ["subject", "session", "days", "gd_count", "new_gd_count", "cumulative_new_gd",
                  "persistent_gd_count", "status", "pre_used", "registration_quality",
                  "detector", "stable_excluded", "transient_kept"]
LESIONS_COLUMNS = ["subject", "session", "lesion", "track", "status", "volume_mm3", "x", "y", "z",
                   "max_enhancement", "mean_enhancement", "transient"]
SUBJECTS_COLUMNS = ["subject", "group", "sessions", "baseline_gd_count", "eligible",
                    "cumulative_new_gd", "complete", "failed_sessions"]
ERRORS_COLUMNS = ["subject", "session", "file", "level", "reason"]


class SessionPaths:
    """Where one session's outputs live: ``OUT/sub-<s>/ses-<v>/anat/``."""

    def __init__(self, out: str | Path, subject: str, session: str):
        self.out = Path(out)
        self.subject, self.session = subject, session
        self.dir = self.out / subject / session / "anat"
        self.prefix = f"{subject}_{session}"

    def _f(self, rest: str) -> Path:
        return self.dir / f"{self.prefix}_{rest}"

    @property
    def lesions(self) -> Path:  # the contract's label map on the input post-contrast grid
        return self._f("ce-gadolinium_desc-lesions_dseg.nii.gz")

    @property
    def sidecar(self) -> Path:  # hashes, registration quality, detector, timings, cache key
        return self._f("ce-gadolinium_desc-lesions_dseg.json")

    @property
    def detected(self) -> Path:  # accepted detector voxels before tracking (binary)
        return self._f("ce-gadolinium_desc-detected_mask.nii.gz")

    @property
    def deferred(self) -> Path:  # candidates rejected as look-alikes, judged again by tracking
        return self._f("ce-gadolinium_desc-deferred_mask.nii.gz")

    @property
    def enhancement(self) -> Path:  # enhancement in robust z-units, on the post grid
        return self._f("ce-gadolinium_desc-enhancement_map.nii.gz")

    @property
    def probability(self) -> Path:
        return self._f("ce-gadolinium_desc-probability_map.nii.gz")

    @property
    def brain(self) -> Path:
        return self._f("ce-gadolinium_desc-brain_mask.nii.gz")

    @property
    def pre_to_post(self) -> Path:
        """ITK transform mapping post-contrast points to pre-contrast points (resamples pre onto post)."""
        return self._f("from-T1w_to-ceT1w_mode-image_xfm.tfm")

    @property
    def flair_to_post(self) -> Path:
        """ITK transform mapping post-contrast points to FLAIR points (resamples FLAIR onto post)."""
        return self._f("from-FLAIR_to-ceT1w_mode-image_xfm.tfm")

    @property
    def to_baseline(self) -> Path:
        """ITK transform mapping baseline points to this session's points (resamples it onto baseline)."""
        return self._f("from-ceT1w_to-baseline_mode-image_xfm.tfm")


def dataset_description(cfg: PipelineConfig, source: str | Path) -> dict:
    return {
        "Name": "lesioncount Gd+ lesion counts",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "lesioncount",
            "Version": __version__,
            "Description": "Counts of new gadolinium-enhancing lesions (research software, "
                           "not a medical device)",
            "Parameters": cfg.to_dict(),
        }],
        "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
    }


def write_tables(out: str | Path, counts: list[dict], lesions: list[dict], subjects: list[dict],
                 errors: list[dict], *, suffix: str = "") -> None:
    """Write the study tables; ``suffix="_reviewed"`` gives the reader-adjusted versions."""
    out = Path(out)
    write_tsv(out / f"counts{suffix}.tsv", counts, COUNTS_COLUMNS)
    write_tsv(out / f"lesions{suffix}.tsv", lesions, LESIONS_COLUMNS)
    write_tsv(out / f"subjects{suffix}.tsv", subjects, SUBJECTS_COLUMNS)
    if not suffix:
        write_tsv(out / "errors.tsv", errors, ERRORS_COLUMNS)


def write_description(out: str | Path, cfg: PipelineConfig, source: str | Path) -> None:
    write_json(Path(out) / "dataset_description.json", dataset_description(cfg, source))
