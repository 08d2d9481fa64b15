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

import functools
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
# FLAIR (WM = 1): grey matter brighter than white (~1.1-1.2 in the shared patients), CSF
# nulled. Veins and sinuses are flow voids or isointense, the choroid plexus about
# isointense, the dura dark: the normal enhancing structures have no FLAIR hyperintensity,
# which is what a reader uses to tell them from active lesions. The ependymal lining of
# the lateral ventricles is mildly bright (a thin FLAIR-bright rim, a classic mimic of
# periventricular lesions on FLAIR).
FLAIR = dict(wm=1.0, gm=1.18, csf=0.12)
MIMIC_FLAIR = {VEIN: 0.7, SINUS: 0.3, CHOROID: 0.9, DURA: 0.6}
EPENDYMA_FLAIR = 1.3


def nilearn_data_dir() -> Path:
    """Where the MNI152 2009 files are: nilearn's data folder, or ``$LESIONCOUNT_TEMPLATE_DIR``
    (a copy of those three files, e.g. on a machine without nilearn)."""
    env = os.environ.get("LESIONCOUNT_TEMPLATE_DIR")
    if env:
        return Path(env)
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
    flair: np.ndarray        # float32, WM = 1 (template) or the patient's own FLAIR
    brain: np.ndarray        # bool
    wm: np.ndarray           # bool, where lesions may go
    mimics: np.ndarray | None  # uint8 labels (VEIN...), None for real backgrounds
    chronic: np.ndarray      # bool, real non-enhancing lesions (patients) else empty
    regions: dict            # name -> bool mask of lesion-site candidates
    wm_level_post: float     # the intensity that lesion factors multiply on post
    wm_level_pre: float
    wm_level_flair: float
    head_mask: np.ndarray    # bool: where the image is not air (for skull-stripped looks)
    background: str
    whole_head: bool

    @property
    def shape(self):
        return self.pre.shape


def lesion_regions(brain: np.ndarray, wm: np.ndarray, csf: np.ndarray, affine: np.ndarray,
                   spacing, depth: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Candidate sites by kind: periventricular, deep, juxtacortical, infratentorial white matter.

    ``depth`` (mm from the brain surface, inside) is computed when not given.
    """
    if depth is None:
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


# --------------------------------------------------------------------------- template


def _crop_pad(arrays: list[np.ndarray], affine: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Cut arrays to voxel box [lo, hi) (may extend outside: zero padded), new affine."""
    shape = arrays[0].shape
    out = []
    for a in arrays:
        b = np.zeros(tuple(int(h - l) for l, h in zip(lo, hi)), a.dtype)
        src = tuple(slice(max(l, 0), min(h, s)) for l, h, s in zip(lo, hi, shape))
        dst = tuple(slice(max(l, 0) - l, max(l, 0) - l + (s.stop - s.start)) for l, s in zip(lo, src))
        b[dst] = a[src]
        out.append(b)
    aff = affine.copy()
    aff[:3, 3] = apply_affine(affine, np.asarray(lo, float))
    return out, aff


def _world_coords(shape, affine):
    """World x, y, z of every voxel (float32 arrays)."""
    ijk = np.indices(shape, dtype=np.float32)
    return [sum(np.float32(affine[r, c]) * ijk[c] for c in range(3)) + np.float32(affine[r, 3])
            for r in range(3)]


class _Splat:
    """Soft tubes and blobs on a grid: the min over points of (distance - radius), then a
    partial-volume fraction clip(0.5 - that, 0, 1) (1 voxel wide edge at 1 mm)."""

    def __init__(self, shape, affine):
        self.shape = shape
        self.affine = affine
        self.inv = np.linalg.inv(affine)
        self.sp = float(np.mean(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))))
        self.field = np.full(int(np.prod(shape)), np.float32(99.0), np.float32)

    def add(self, points: np.ndarray, radii: np.ndarray):
        points = np.asarray(points, float).reshape(-1, 3)
        radii = np.broadcast_to(np.asarray(radii, float), (len(points),))
        if not len(points):
            return
        reach = int(np.ceil((radii.max() + 1.5) / self.sp))
        off = np.stack(np.meshgrid(*[np.arange(-reach, reach + 1)] * 3, indexing="ij"), -1).reshape(-1, 3)
        for start in range(0, len(points), 256):
            p = points[start:start + 256]
            r = radii[start:start + 256]
            c = np.round(apply_affine(self.inv, p)).astype(int)
            vox = c[:, None, :] + off[None]
            ok = np.all((vox >= 0) & (vox < np.asarray(self.shape)), axis=-1)
            w = apply_affine(self.affine, vox.reshape(-1, 3).astype(float)).reshape(vox.shape)
            d = np.linalg.norm(w - p[:, None, :], axis=-1) - r[:, None]
            flat = np.ravel_multi_index(tuple(np.where(ok[..., None], vox, 0).transpose(2, 0, 1)), self.shape)
            np.minimum.at(self.field, flat[ok], d[ok].astype(np.float32))

    def fraction(self) -> np.ndarray:
        return np.clip(0.5 - self.field / self.sp, 0.0, 1.0).reshape(self.shape).astype(np.float32)


def _walk_surface(rng, start, sd_sample, grad_sample, length_mm, target=(-0.5, 1.5), step=0.7):
    """A tortuous curve that stays near the brain surface (signed distance in ``target``)."""
    p = np.asarray(start, float)
    d = rng.standard_normal(3)
    pts = []
    for _ in range(int(length_mm / step)):
        n = grad_sample(p)
        d = d - (d @ n) * n + 0.35 * rng.standard_normal(3)
        d = d - (d @ n) * n
        d /= max(np.linalg.norm(d), 1e-6)
        p = p + step * d
        s = sd_sample(p)
        tgt = float(np.clip(s, *target))
        p = p - (s - tgt) * n
        pts.append(p.copy())
    return np.array(pts)


def _ray_surface(brain_smooth_sample, origin, direction, max_mm=140.0, step=0.5):
    """Distance along a ray to the last point inside the brain."""
    ts = np.arange(0.0, max_mm, step)
    pts = np.asarray(origin, float) + ts[:, None] * np.asarray(direction, float)
    inside = brain_smooth_sample(pts) > 0.5
    if not inside.any():
        return None
    return float(ts[np.flatnonzero(inside).max()])


def _smooth_noise(rng: np.random.Generator, shape, scale_vox: float) -> np.ndarray:
    """Smooth random field (unit max-abs) of correlation length ~``scale_vox``, made coarse and
    interpolated up (cheap on whole-head grids)."""
    f = max(1, int(scale_vox // 2))
    coarse_shape = tuple(int(np.ceil(s / f)) + 1 for s in shape)
    c = ndi.gaussian_filter(rng.standard_normal(coarse_shape).astype(np.float32), scale_vox / f)
    up = ndi.zoom(c, f, order=1)[: shape[0], : shape[1], : shape[2]] if f > 1 else c[: shape[0], : shape[1], : shape[2]]
    return up / max(float(np.abs(up).max()), 1e-6)


@functools.lru_cache(maxsize=2)
def _template_base(whole_head: bool, step_mm: int) -> dict:
    """The subject-independent part of a template subject (cached: it takes seconds)."""
    t1, gm, wm = load_template(step_mm)
    brain = t1.array > 0
    idx = np.argwhere(brain)
    sp = float(t1.spacing[0])
    margin = int(np.ceil((24.0 if whole_head else 8.0) / sp))
    lo = idx.min(axis=0) - margin
    hi = idx.max(axis=0) + margin + 1
    (gm, wm, brain_f), aff = _crop_pad([gm, wm, brain.astype(np.float32)], t1.affine, lo, hi)
    brain = brain_f > 0.5
    shape = brain.shape
    spacing = (sp, sp, sp)
    csf = (np.clip(1.0 - gm - wm, 0.0, 1.0) * brain).astype(np.float32)
    x, y, z = _world_coords(shape, aff)
    # signed distance to the brain surface (+ outside), from a smoothed brain envelope
    smooth = ndi.gaussian_filter(brain.astype(np.float32), 1.0)
    inside = smooth > 0.5
    sd = (ndi.distance_transform_edt(~inside, sampling=spacing)
          - ndi.distance_transform_edt(inside, sampling=spacing)).astype(np.float32)
    gz = np.stack(np.gradient(ndi.gaussian_filter(sd, 2.0)), 0).astype(np.float32)
    inv = np.linalg.inv(aff)

    def sample(vol, pts):
        v = apply_affine(inv, np.atleast_2d(pts))
        return ndi.map_coordinates(vol, v.T, order=1, mode="nearest")

    sinus = _Splat(shape, aff)
    # superior sagittal sinus: over the midline convexity down to the torcular
    cen = np.array([0.0, -20.0, 0.0])
    bs = lambda pts: sample(smooth, pts)  # noqa: E731
    sss = []
    for th in np.deg2rad(np.arange(20.0, 196.0, 1.0)):
        dirn = np.array([0.0, np.cos(th), np.sin(th)])
        t = _ray_surface(bs, cen, dirn)
        if t is not None:
            sss.append((cen + (t + 4.0) * dirn, 2.0 + 1.5 * np.sin(min(th, np.pi - 0.3))))
    deep_veins = []
    if sss:
        sinus.add(np.array([p for p, _ in sss]), np.array([r for _, r in sss]))
        torc = sss[-1][0]
        # transverse sinuses: from the torcular around the back of the brain, both sides
        for side in (-1.0, 1.0):
            pts = []
            for ph in np.deg2rad(np.arange(0.0, 95.0, 1.5)):
                dirn = np.array([side * np.sin(ph), -np.cos(ph), 0.0])
                o = np.array([0.0, -40.0, torc[2] - 12.0 * ph])
                t = _ray_surface(bs, o, dirn)
                if t is not None:
                    pts.append(o + (t + 3.0) * dirn)
            sinus.add(np.array(pts), 2.8)
        # straight sinus: vein of Galen to the torcular
        galen = np.array([0.0, -50.0, 4.0])
        sinus.add(galen + np.linspace(0, 1, 60)[:, None] * (torc - galen), 1.8)
        # internal cerebral veins along the roof of the third ventricle, into Galen
        for side in (-1.0, 1.0):
            a = np.array([side * 2.5, -2.0, 15.0])
            b = np.array([side * 1.5, -38.0, 10.0])
            deep_veins.append(np.vstack([a + np.linspace(0, 1, 40)[:, None] * (b - a),
                                         b + np.linspace(0, 1, 15)[:, None] * (galen - b)]))
    # falx: a thin midline sheet in the interhemispheric fissure (mildly enhancing, like dura)
    falx = ((np.abs(x) < 0.75 * sp) & (csf > 0.4) & (sd > -40.0) & (y > -95) & (y < 55)).astype(np.float32)
    if whole_head:
        # the same brain on a grid with a wider margin: pad the brain-only masks
        small = _template_base(False, step_mm)
        off = np.round(apply_affine(np.linalg.inv(aff), small["aff"][:3, 3])).astype(int)
        sl = tuple(slice(o, o + n) for o, n in zip(off, small["brain"].shape))
        vent = np.zeros(shape, bool)
        vent[sl] = small["vent"]
        regions = {}
        for k, v in small["regions"].items():
            regions[k] = np.zeros(shape, bool)
            regions[k][sl] = v
    else:
        vent = (csf > 0.6) & (-sd > 12.0)
        regions = lesion_regions(brain, wm > 0.5, csf > 0.6, aff, spacing, depth=np.maximum(-sd, 0))
    # signed distance to the lateral ventricles' walls, on a crop around them: subependymal
    # veins (thalamostriate, septal, atrial) run along these walls
    lat = vent & (np.abs(x) > 2.5 * sp)
    vbox = None
    if lat.any():
        vi = np.argwhere(lat)
        pad = int(np.ceil(8.0 / sp))
        lo_v = np.maximum(vi.min(axis=0) - pad, 0)
        hi_v = np.minimum(vi.max(axis=0) + pad + 1, np.asarray(shape))
        crop = tuple(slice(a, b) for a, b in zip(lo_v, hi_v))
        lv = lat[crop]
        vsd = (ndi.distance_transform_edt(~lv, sampling=spacing)
               - ndi.distance_transform_edt(lv, sampling=spacing)).astype(np.float32)
        vgz = np.stack(np.gradient(ndi.gaussian_filter(vsd, 1.0)), 0).astype(np.float32)
        vaff = aff.copy()
        vaff[:3, 3] = apply_affine(aff, lo_v.astype(float))
        vbox = dict(aff=vaff, sd=vsd, gz=vgz, surf=np.argwhere(np.abs(vsd) <= sp))
    return dict(aff=aff, gm=gm, wm=wm, csf=csf, brain=brain, sd=sd, gz=gz, z=z,
                sinus=sinus.fraction(), falx=falx, vent=vent, regions=regions,
                deep_veins=deep_veins, spacing=spacing, vbox=vbox)


def _field_samplers(aff, sd, gz):
    """Signed distance and its unit gradient at a world point (grids are RAS-aligned with
    positive steps, so index gradients are world gradients)."""
    inv = np.linalg.inv(aff)

    def sd_at(p):
        v = apply_affine(inv, np.atleast_2d(p)).T
        return float(ndi.map_coordinates(sd, v, order=1, mode="nearest")[0])

    def grad_at(p):
        v = apply_affine(inv, np.atleast_2d(p)).T
        g = np.array([ndi.map_coordinates(gz[k], v, order=1, mode="nearest")[0] for k in range(3)])
        return g / max(np.linalg.norm(g), 1e-6)

    return sd_at, grad_at


def template_anatomy(rng: np.random.Generator, *, whole_head: bool = False, step_mm: int = 1,
                     n_veins: int = 80) -> Anatomy:
    """A subject built from the MNI152 2009 template, with normal enhancing structures.

    The template's own grid is cropped to the brain plus a margin (24 mm for a whole
    head). The subject-independent part is cached; the random parts (tissue texture,
    cortical vein paths, choroid plexus shape, dura patches, skull thickness) come from ``rng``.
    """
    base = _template_base(bool(whole_head), int(step_mm))
    aff, gm, wm, csf, brain, sd = (base[k] for k in ("aff", "gm", "wm", "csf", "brain", "sd"))
    z, gz = base["z"], base["gz"]
    shape = brain.shape
    sp = float(base["spacing"][0])

    # subtle tissue texture (1.5 %), so that no two subjects are pixel-identical
    tex = 0.015 * _smooth_noise(rng, shape, 3.0)
    pre = (PRE["wm"] * wm + PRE["gm"] * gm + PRE["csf"] * csf) * (1 + tex)
    post = (POST["wm"] * wm + POST["gm"] * gm + POST["csf"] * csf) * (1 + tex)
    flair = (FLAIR["wm"] * wm + FLAIR["gm"] * gm + FLAIR["csf"] * csf) * (1 + tex)

    sd_at, grad_at = _field_samplers(aff, sd, gz)
    veins = _Splat(shape, aff)
    # cortical veins: tortuous 1-2.5 mm tubes on the surface and down into the sulci
    surf = np.argwhere((np.abs(sd) <= sp) & (z > -40))
    for _ in range(n_veins):
        s = apply_affine(aff, surf[rng.integers(len(surf))].astype(float))
        pts = _walk_surface(rng, s, sd_at, grad_at, rng.uniform(20, 80), target=(-3.0, 1.0))
        r = rng.uniform(0.5, 1.25) * np.linspace(1.0, rng.uniform(0.7, 1.3), len(pts))
        veins.add(pts, r)
    # subependymal veins along the lateral ventricles' walls (a classic periventricular mimic)
    vb = base["vbox"]
    if vb is not None and len(vb["surf"]):
        vsd_at, vgrad_at = _field_samplers(vb["aff"], vb["sd"], vb["gz"])
        for _ in range(int(rng.integers(6, 12))):
            s = apply_affine(vb["aff"], vb["surf"][rng.integers(len(vb["surf"]))].astype(float))
            pts = _walk_surface(rng, s, vsd_at, vgrad_at, rng.uniform(10, 30), target=(0.3, 1.5))
            veins.add(pts, rng.uniform(0.5, 1.0))
    for ln in base["deep_veins"]:
        veins.add(ln + rng.normal(0, 0.3, ln.shape), rng.uniform(0.9, 1.3))
    # choroid plexus: irregular blobs in the atria of the lateral ventricles
    vent = base["vent"]
    chor = _Splat(shape, aff)
    vent_idx = np.argwhere(vent)
    vent_w = apply_affine(aff, vent_idx.astype(float))
    for side in (-1.0, 1.0):
        xw, yw, zw = vent_w.T
        sel = (side * xw > 12) & (side * xw < 38) & (yw > -58) & (yw < -22) & (zw > -2) & (zw < 28)
        pts = vent_w[sel]
        if len(pts) < 10:
            continue
        c = pts.mean(axis=0)
        near = pts[np.linalg.norm(pts - c, axis=1) < 8.0]
        pick = near[rng.integers(len(near), size=8)] if len(near) else pts[:1]
        chor.add(pick, rng.uniform(1.8, 3.2, len(pick)))
    chor_f = chor.fraction() * ndi.binary_dilation(vent, iterations=1)

    # dura: a 1 mm layer 1.5-2.5 mm outside the brain (patchy when skull-stripped)
    dura = np.clip(1.0 - np.abs(sd - 2.0) / 0.75, 0.0, 1.0)
    if not whole_head:
        dura = dura * (_smooth_noise(rng, shape, 4.0 / sp) > 0.15)
    dura = np.maximum(dura, 0.4 * base["falx"])  # the falx: faint, thinner than a voxel

    # ependyma: a 1 mm FLAIR-bright rim just outside the lateral ventricles
    epi = (ndi.binary_dilation(vent, iterations=1) & ~vent & brain).astype(np.float32)
    flair = flair * (1 - epi) + epi * EPENDYMA_FLAIR
    head_mask = sd < 3.0
    if whole_head:
        head_mask, pre, post, flair = _whole_head(rng, sd, brain, pre, post, z, flair)
    # later ones win: veins over sinuses over choroid over dura (and falx)
    fracs = {DURA: dura, CHOROID: chor_f, SINUS: base["sinus"], VEIN: veins.fraction()}
    mimics = np.zeros(shape, np.uint8)
    for k, f in fracs.items():
        post = post * (1 - f) + f * MIMIC_POST[k]
        pre = pre * (1 - f) + f * MIMIC_PRE[k]
        flair = flair * (1 - f) + f * MIMIC_FLAIR[k]
        mimics[f >= 0.5] = k
    mimics[(base["falx"] >= 0.5) & ((mimics == DURA) | (mimics == 0))] = SINUS  # label 2 is "sinus and falx"
    wm_mask = (wm > 0.6) & (mimics == 0)
    regions = {k: v & wm_mask for k, v in base["regions"].items()}
    return Anatomy(affine=aff, pre=pre.astype(np.float32), post=post.astype(np.float32),
                   flair=flair.astype(np.float32),
                   brain=brain, wm=wm_mask, mimics=mimics, chronic=np.zeros(shape, bool),
                   regions=regions, wm_level_post=1.0, wm_level_pre=1.0, wm_level_flair=1.0,
                   head_mask=head_mask,
                   background="mni", whole_head=bool(whole_head))


# MNI z (mm) of the foramen magnum, below which the whole head's neck begins.
NECK_Z_MM = -62.0


def _whole_head(rng, sd, brain, pre, post, z, flair):
    """Layers outside the brain: CSF, (dura is added as a mimic), skull, marrow, scalp fat, skin."""
    shape = sd.shape
    wob = _smooth_noise(rng, shape, 6.0)  # +-1 mm thickness variation
    d = sd + wob
    # (outer edge of the layer in mm from the brain surface, pre, post, FLAIR value)
    layers = [(2.5, 0.22, 0.30, 0.12),   # subarachnoid CSF (nulled on FLAIR)
              (3.5, 0.5, 0.5, 0.6),      # dura (made bright on post by the mimic layer)
              (6.0, 0.06, 0.06, 0.05),   # inner table
              (9.0, 0.95, 1.05, 0.8),    # diploe: fatty marrow, bright on T1, enhances a little
              (11.0, 0.06, 0.06, 0.05),  # outer table
              (15.0, 1.35, 1.30, 1.1),   # scalp fat (bright on FLAIR too)
              (17.0, 0.55, 0.60, 0.7)]   # skin and muscle
    out_pre = np.array(pre, copy=True)
    out_post = np.array(post, copy=True)
    out_flair = np.array(flair, copy=True)
    prev = 0.0
    outside = ~brain
    for edge, vpre, vpost, vflair in layers:
        m = outside & (d > prev) & (d <= edge)
        out_pre[m] = vpre
        out_post[m] = vpost
        out_flair[m] = vflair
        prev = edge
    head = d <= prev
    # below the foramen magnum the neck continues as soft tissue, not as a closed skull;
    # above it the occipital bone encloses the posterior fossa (the cerebellum reaches
    # z ~ -60 in MNI space; a neck starting higher put soft tissue 2.5 mm from it)
    neck = outside & (z < NECK_Z_MM) & (d <= prev)
    out_pre[neck] = np.where(d[neck] > 2.5, 0.6, out_pre[neck])
    out_post[neck] = np.where(d[neck] > 2.5, 0.65, out_post[neck])
    out_flair[neck] = np.where(d[neck] > 2.5, 0.7, out_flair[neck])
    return head, out_pre, out_post, out_flair


# --------------------------------------------------------------------------- patients


def patient_anatomy(name: str, rng: np.random.Generator | None = None, root=None,
                    step_mm: int = 1) -> Anatomy:
    """A subject whose anatomy is one of the real patients (T1POST as post, T1 as pre,
    their FLAIR as FLAIR).

    Its veins, sinuses, choroid plexus and real (non-enhancing) lesions are the real
    ones; the mimics are not known (``mimics`` is None). Intensities are left in the
    patient's units; ``wm_level_*`` give the white-matter levels lesions scale with.
    Nothing here is random (``rng`` is accepted for symmetry); the result is cached,
    so callers must not modify its arrays.
    """
    return _patient_cached(name, None if root is None else str(root), int(step_mm))


@functools.lru_cache(maxsize=2)
def _patient_cached(name: str, root, step_mm: int) -> Anatomy:
    p = load_patient(name, root)
    post, pre = p["T1POST"], p["T1"]
    flair = p.get("FLAIR")
    if flair is None or flair.shape != post.shape:
        raise InputError(shared_data_dir() / name, "FLAIR missing or not on the T1POST grid")
    real_img = p.get("lesions")
    if step_mm > 1:
        post, pre, flair = (_subsample(x, step_mm) for x in (post, pre, flair))
        real_img = _subsample(real_img, step_mm) if real_img is not None else None
    if post.shape != pre.shape or not np.allclose(post.affine, pre.affine, atol=1e-3):
        raise InputError(shared_data_dir() / name, "T1 and T1POST are not on one grid")
    spacing = tuple(post.spacing)
    brain = ndi.binary_fill_holes(ndi.binary_opening(post.array > 0.02 * np.percentile(post.array, 99),
                                                     iterations=1))
    real = real_img.array > 0.5 if real_img is not None else np.zeros(post.shape, bool)
    wm = white_matter_mask(pre.array, brain, spacing, exclude=real)
    csf_level = np.percentile(pre.array[brain], 5)
    csf = brain & (pre.array < 2.0 * max(csf_level, 1e-3)) & ~real
    regions = lesion_regions(brain, wm, csf, post.affine, spacing)
    far = ndi.distance_transform_edt(~real, sampling=spacing) > 3.0
    regions = {k: v & far for k, v in regions.items()}
    return Anatomy(affine=post.affine, pre=pre.array.astype(np.float32),
                   post=post.array.astype(np.float32), flair=flair.array.astype(np.float32),
                   brain=brain, wm=wm & far, mimics=None,
                   chronic=real, regions=regions,
                   wm_level_post=float(np.median(post.array[wm])),
                   wm_level_pre=float(np.median(pre.array[wm])),
                   wm_level_flair=float(np.median(flair.array[wm])),
                   head_mask=ndi.binary_dilation(post.array > 0, iterations=1),
                   background=name, whole_head=False)


def _subsample(img: Image, step: int) -> Image:
    aff = img.affine.copy()
    aff[:3, :3] = aff[:3, :3] * step
    return Image(img.array[::step, ::step, ::step], aff)
