"""Backgrounds for the phantom: the MNI152 2009 template as a tissue model, and the real patients.

The template (nilearn's copy of ICBM152 2009a, skull-stripped) gives grey and white
matter probability maps; cerebrospinal fluid is what is left inside the brain. From
them :func:`tissue_model` synthesises a pre-contrast T1 (strong grey/white contrast)
and a post-contrast T1 (weaker grey/white contrast, as a different sequence), adds
the normal structures that enhance after gadolinium (veins, sinuses and falx, choroid
plexus, dura: the false positives of trial.md) to the post image only, and
optionally wraps the brain in a whole head (CSF, dura, skull tables, marrow, scalp
fat, skin).

All intensities are relative: normal white matter is 1.0 on both sequences.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..image import Image, apply_affine

TEMPLATE_FILES = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
PATIENTS = ("patient07", "patient19")

# Mimic labels of the truth's desc-mimics_dseg.
VEIN, SINUS, CHOROID, DURA = 1, 2, 3, 4
MIMIC_NAMES = {VEIN: "vein", SINUS: "sinus_falx", CHOROID: "choroid_plexus", DURA: "dura"}

# Relative tissue intensities (WM = 1). Pre: a 3D gradient-echo T1 with GM/WM ~0.65 and
# dark CSF. Post: a spin-echo-like T1 with weaker GM/WM contrast (~0.85), as in the
# shared patients' T1POST (measured ~0.8-0.9 on patient07/19).
PRE = dict(wm=1.0, gm=0.65, csf=0.22)
POST = dict(wm=1.0, gm=0.85, csf=0.30)
# Normal enhancing structures on post, relative to WM: veins and sinuses are the
# brightest things in a post-contrast T1 (2-3.5 x WM in the shared patients), choroid
# plexus ~2 x, dura ~1.4 x. On pre they are CSF-dark (flow voids) or tissue-like.
MIMIC_POST = {VEIN: 2.6, SINUS: 2.8, CHOROID: 2.0, DURA: 1.5}
MIMIC_PRE = {VEIN: 0.35, SINUS: 0.3, CHOROID: 0.55, DURA: 0.5}


def nilearn_data_dir() -> Path:
    import nilearn

    return Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"


def shared_data_dir() -> Path:
    """Where the two real patients are expected (``../shared/data/open_ms_data`` of the repo)."""
    env = os.environ.get("LESIONCOUNT_OPEN_MS_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "open_ms_data"


def load_template(step_mm: int = 1) -> tuple[Image, np.ndarray, np.ndarray]:
    """The MNI152 2009 T1 template and its grey/white matter maps (probabilities in [0, 1]).

    ``step_mm`` > 1 subsamples the grid (every n-th voxel) for quick tests.

    Raises
    ------
    InputError
        When nilearn's template files are missing.
    """
    from ..io import load_image

    d = nilearn_data_dir()
    paths = {k: d / f for k, f in TEMPLATE_FILES.items()}
    for p in paths.values():
        if not p.exists():
            raise InputError(p, "MNI152 2009 template file missing from the nilearn install")
    t1 = load_image(paths["t1"])
    gm = load_image(paths["gm"]).array / 255.0
    wm = load_image(paths["wm"]).array / 255.0
    if step_mm > 1:
        s = (slice(None, None, step_mm),) * 3
        aff = t1.affine.copy()
        aff[:3, :3] = aff[:3, :3] * step_mm
        t1 = Image(t1.array[s], aff)
        gm, wm = gm[s], wm[s]
    return t1, gm.astype(np.float32), wm.astype(np.float32)


def load_patient(name: str, root: str | os.PathLike | None = None) -> dict[str, Image]:
    """The real patient's images: ``T1POST``, ``T1``, ``FLAIR``, ``T2`` and ``lesions`` (0/1).

    Raises
    ------
    InputError
        When the patient's folder or its T1POST/T1 is missing.
    """
    from ..io import load_image

    base = Path(root) if root is not None else shared_data_dir()
    folder = base / name
    if not folder.is_dir():
        raise InputError(folder, f"patient {name!r} not found (expected one of {PATIENTS})")
    out = {}
    for key in ("T1POST", "T1", "FLAIR", "T2", "lesions"):
        p = folder / f"{key}.nii.gz"
        if p.exists():
            out[key] = load_image(p)
        elif key in ("T1POST", "T1"):
            raise InputError(p, f"required image {key} missing for {name}")
    return out


def white_matter_mask(t1: np.ndarray, brain: np.ndarray, spacing=(1.0, 1.0, 1.0),
                      exclude: np.ndarray | None = None) -> np.ndarray:
    """White matter from a pre-contrast T1: voxels near the intensity mode of the deep brain.

    The deep brain (more than 10 mm from its surface) is mostly white matter, so its
    intensity mode is the white-matter level; voxels within +-12 % of it, eroded by one
    voxel, are kept. Works on the template and on the real patients.
    """
    brain = np.asarray(brain, bool)
    depth = ndi.distance_transform_edt(brain, sampling=spacing)
    deep = t1[depth > 10.0]
    if deep.size < 100:
        deep = t1[brain]
    level = _mode(deep)
    wm = brain & (t1 > 0.88 * level) & (t1 < 1.12 * level)
    wm = ndi.binary_opening(wm, iterations=1)
    if exclude is not None:
        wm &= ~ndi.binary_dilation(np.asarray(exclude, bool), iterations=1)
    return wm


def _mode(values: np.ndarray) -> float:
    v = values[np.isfinite(values)]
    lo, hi = np.percentile(v, [1, 99.5])
    hist, edges = np.histogram(v, bins=128, range=(lo, hi))
    hist = ndi.gaussian_filter1d(hist.astype(float), 2)
    # the upper mode: T1 white matter is the brightest large tissue class
    peaks = [i for i in range(1, len(hist) - 1) if hist[i] >= hist[i - 1] and hist[i] >= hist[i + 1]]
    peaks = [i for i in peaks if hist[i] > 0.3 * hist.max()] or [int(np.argmax(hist))]
    i = max(peaks)
    return float(0.5 * (edges[i] + edges[i + 1]))


@dataclass(frozen=True, eq=False)
class Anatomy:
    """One subject's anatomy on a 1 mm model grid (world = MNI-like mm)."""

    affine: np.ndarray
    pre: np.ndarray          # float32, WM = 1
    post: np.ndarray         # float32, WM = 1, with the normal enhancing structures
    brain: np.ndarray        # bool
    wm: np.ndarray           # bool, where lesions may go
    mimics: np.ndarray | None  # uint8 labels (VEIN...), None for real backgrounds
    chronic: np.ndarray      # bool, real non-enhancing lesions (patients) else empty
    regions: dict            # name -> bool mask of lesion-site candidates
    wm_level_post: float     # the intensity that lesion factors multiply on post
    wm_level_pre: float
    head_mask: np.ndarray    # bool: where the image is not air (for skull-stripped looks)
    background: str
    whole_head: bool

    @property
    def shape(self):
        return self.pre.shape


def lesion_regions(brain: np.ndarray, wm: np.ndarray, csf: np.ndarray, affine: np.ndarray,
                   spacing) -> dict[str, np.ndarray]:
    """Candidate sites by kind: periventricular, deep, juxtacortical, infratentorial white matter."""
    depth = ndi.distance_transform_edt(brain, sampling=spacing)
    vent = csf & (depth > 12.0)
    vent = ndi.binary_opening(vent, iterations=1)
    dvent = ndi.distance_transform_edt(~vent, sampling=spacing) if vent.any() else np.full(brain.shape, 99.0)
    cortex_like = brain & ~wm & ~vent
    dctx = ndi.distance_transform_edt(~cortex_like, sampling=spacing)
    ijk = np.indices(brain.shape, dtype=np.float32)
    z = affine[2, 0] * ijk[0] + affine[2, 1] * ijk[1] + affine[2, 2] * ijk[2] + affine[2, 3]
    y = affine[1, 0] * ijk[0] + affine[1, 1] * ijk[1] + affine[1, 2] * ijk[2] + affine[1, 3]
    # Below the tentorium in MNI space: posterior fossa (z < -18 mm and y < -35 mm) or brainstem.
    infra = (z < -18.0) & (y < -35.0) | (z < -25.0)
    supra = ~infra
    return {
        "periventricular": wm & supra & (dvent > 1.0) & (dvent < 8.0),
        "deep": wm & supra & (dvent >= 8.0) & (dctx > 4.0),
        "juxtacortical": wm & supra & (dctx > 1.0) & (dctx <= 3.0),
        "infratentorial": wm & infra,
    }
