"""A longitudinal BIDS study with known truth: :func:`make_study`.

Per subject: an anatomy (the MNI template as a tissue model with normal enhancing
structures, optionally a whole head; or a real patient), an arm (placebo / il2) with its
rate of new enhancing lesions (Poisson with a gamma frailty per subject, i.e. negative
binomial counts), baseline enhancing lesions (0-4: some subjects are ineligible),
chronic non-enhancing lesions from the start. An enhancing lesion appears between two
visits and enhances for a few weeks (lognormal duration, median 24 days), so at monthly
visits most are seen once and some on two consecutive scans; it then leaves a chronic
T1-hypointense or isointense lesion.

Every lesion is FLAIR-hyperintense (active ones over an oedema a little larger than their
enhancing part, a few with a faint correlate; chronic ones too), and a FLAIR of each visit
is written when ``with_flair``. Its random numbers come from a stream of their own, so a
study's T1 scans are the same with or without it.

Per visit: a new head pose (and a small one between pre and post), a scanner grid
(1 mm 3D or 1x1x3 mm axial with a boxcar slice profile; orientation, data type and
file suffix vary), a smooth bias field, a gain and Rician noise.

The truth, in ``derivatives/truth``, is on the grid of each written post-contrast file.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from ..image import Image, apply_affine
from ..io import save_image, write_json, write_text, write_tsv
from .acquisition import (DTYPES, ORIENTATIONS_2D, ORIENTATIONS_3D, acquire, bias_field,
                          random_affine, random_rigid, rician, rigid_parameters, scanner_grid,
                          slice_axis, to_storage)
from .anatomy import PATIENTS, Anatomy, patient_anatomy, template_anatomy
from .lesions import (FLAIR_CHRONIC, NODULAR, RING, LesionShape, chronic_look, paint, random_flair,
                      random_shape, render)

log = logging.getLogger(__name__)

# Mean new enhancing lesions per 28 days, before the per-subject frailty. Placebo arms of
# RRMS trials average ~1.2 Gd+ lesions per scan; on background therapy fewer (trial.md).
ARM_RATES = {"placebo": 1.0, "il2": 0.3}
# Gamma frailty shape: variance of the rate = mean^2 / shape; 1.5 gives the strong
# overdispersion of Gd+ counts (Sormani et al. 2001).
FRAILTY_SHAPE = 1.5
# Baseline Gd+ lesions 0..4: the trial excludes > 2, so ~20 % of subjects are ineligible.
BASELINE_PROBS = (0.3, 0.3, 0.2, 0.12, 0.08)
# Enhancement lasts a few weeks (median ~3-4, some up to 2 months): lognormal with median
# 24 days, clipped to 7-70 days; at monthly visits ~80 % of new lesions are seen once and
# ~20 % on two consecutive scans (measured by simulating this model).
DURATION_MEDIAN_DAYS = 24.0
DURATION_SIGMA = 0.6
# Where lesions appear (MS: mostly periventricular and deep WM).
SITE_WEIGHTS = {"periventricular": 0.4, "deep": 0.3, "juxtacortical": 0.18, "infratentorial": 0.12}
DIAMETER_MM = (3.0, 15.0)
CONTRAST = (0.2, 1.0)
MAX_MOTION_DEG, MAX_MOTION_MM = 10.0, 10.0       # between visits
MAX_PREPOST_DEG, MAX_PREPOST_MM = 2.0, 2.0       # between pre and post of one visit
SNR_RANGE = (20.0, 40.0)                         # on white matter
# The real patients already carry their own noise: add less.
SNR_RANGE_REAL = (40.0, 70.0)
MOTION_MARGIN_MM = 14.0
# bounding radius / mean radius - 1, generous (aspect up to 1.3, boundary jitter up to 0.22)
MAX_JITTER_EST = 0.45
START_DATE = datetime(2021, 3, 1, 9, 0, 0)


@dataclass
class _Lesion:
    track: int
    shape: LesionShape
    site: str
    first: int = 0                 # first visit it enhances at (enhancing lesions)
    flair_shape: LesionShape | None = None   # its FLAIR lesion while it enhances
    enhancing: list = field(default_factory=list)   # visit indices
    chronic_shape: LesionShape | None = None
    chronic_from: int = 10 ** 6    # first visit it is a chronic lesion

    def shape_at(self, v: int) -> LesionShape:
        n = v - self.first  # later scans: a little smaller and fainter
        return self.shape.scaled(1.0 - 0.1 * n, contrast=self.shape.contrast * (0.7 ** n))

    def flair_at(self, v: int) -> LesionShape | None:
        """The FLAIR lesion at visit ``v``: the oedema while it enhances, then the chronic lesion."""
        if v >= self.chronic_from:
            return self.chronic_shape
        if v >= self.first and self.flair_shape is not None:
            return self.flair_shape
        return None


def make_study(out_dir, *, n_subjects: int = 8, n_sessions: int = 7, seed: int = 0,
               backgrounds=("mni",), whole_head_fraction: float = 0.5,
               thick_slice_fraction: float = 0.5, with_pre: bool = True,
               with_flair: bool = True, arm_rates: dict | None = None, interval_days: int = 28,
               shape_jitter: bool = True, step_mm: int = 1, overwrite: bool = False) -> Path:
    """Write a longitudinal BIDS study with known truth; deterministic for a seed.

    Parameters
    ----------
    out_dir : path
        The BIDS folder to create. The truth goes to ``out_dir/derivatives/truth``.
    n_subjects, n_sessions : int
        Subjects ``sub-01``..; visits ``ses-M00``, ``ses-M01``, ... (visit index).
    seed : int
        The same seed and arguments give byte-identical images and tables.
    backgrounds : tuple of {"mni", "patients"}
        Subjects cycle through them; "patients" alternates the two shared real
        patients (patient07, patient19), which must be present.
    whole_head_fraction : float
        Fraction of template subjects with a whole head (skull, marrow, scalp) instead
        of a skull-stripped brain. Real patients are always skull-stripped.
    thick_slice_fraction : float
        Fraction of subjects scanned with 1x1x3 mm axial slices (the rest: 1 mm 3D).
    with_pre : bool
        Write a pre-contrast T1 per visit.
    with_flair : bool
        Write a FLAIR per visit (same scanner grid, its own small motion).
    arm_rates : dict
        Mean new enhancing lesions per 28 days per arm (``{"placebo": 1.0, "il2": 0.3}``).
    interval_days : int
        Days between visits (each follow-up visit is jittered by up to +-3 days).
    shape_jitter : bool
        Irregular lesion shapes (jittered ellipsoids); False gives spheres.
    step_mm : int
        Take every n-th voxel of the backgrounds and multiply every voxel size by n
        (2 gives small volumes for fast tests; 1 is the real 1 mm / 3 mm grids).
    overwrite : bool
        Replace ``out_dir`` if it exists (otherwise an existing non-empty folder is an error).

    Returns
    -------
    Path
        ``out_dir``.
    """
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(out, "folder exists and is not empty (pass overwrite=True to replace it)")
        shutil.rmtree(out)
    rates = dict(ARM_RATES if arm_rates is None else arm_rates)
    if set(rates) != {"placebo", "il2"}:
        raise ValueError(f"arm_rates needs keys 'placebo' and 'il2', got {sorted(rates)}")
    if n_subjects < 1 or n_sessions < 1:
        raise ValueError("n_subjects and n_sessions must be at least 1")
    bgs = _subject_backgrounds(backgrounds, n_subjects)
    srng = np.random.default_rng([seed, 999_999])
    groups = srng.permutation(np.array(["placebo", "il2"] * n_subjects)[:n_subjects]).tolist()
    thick = _exact_fraction(srng, n_subjects, thick_slice_fraction)
    mni_idx = [i for i, b in enumerate(bgs) if b == "mni"]
    wh_sel = _exact_fraction(srng, len(mni_idx), whole_head_fraction)
    whole = [False] * n_subjects
    for i, w in zip(mni_idx, wh_sel):
        whole[i] = bool(w)

    truth = out / "derivatives" / "truth"
    rows_les, rows_cnt, rows_sub, rows_mot, parts = [], [], [], [], []
    for i in range(n_subjects):
        sub = f"sub-{i + 1:02d}"
        rng = np.random.default_rng([seed, i])
        frng = np.random.default_rng([seed, i, 0xF1A])  # FLAIR's own stream
        res = _make_subject(out, truth, sub, rng, frng, background=bgs[i], whole_head=whole[i],
                            thick=bool(thick[i]), group=groups[i], rate=rates[groups[i]],
                            n_sessions=n_sessions, with_pre=with_pre, with_flair=with_flair,
                            interval=interval_days,
                            jitter=shape_jitter, step=step_mm)
        rows_les += res["lesions"]
        rows_cnt += res["counts"]
        rows_mot += res["motion"]
        rows_sub.append(res["subject"])
        parts.append({"participant_id": sub, "group": groups[i]})
        log.info("phantom: %s done (%s, %d sessions)", sub, bgs[i], n_sessions)

    _write_bids_top(out, parts, seed)
    write_json(truth / "dataset_description.json", {
        "Name": "lesioncount phantom truth", "BIDSVersion": "1.8.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lesioncount", "Version": __version__,
                         "Description": "lesioncount.phantom.make_study"}],
        "SourceDatasets": [{"URL": "file://../.."}],
        "PhantomParameters": {"n_subjects": n_subjects, "n_sessions": n_sessions, "seed": seed,
                              "backgrounds": list(backgrounds), "whole_head_fraction": whole_head_fraction,
                              "thick_slice_fraction": thick_slice_fraction, "with_pre": with_pre,
                              "with_flair": with_flair,
                              "arm_rates": rates, "interval_days": interval_days,
                              "shape_jitter": shape_jitter, "step_mm": step_mm}})
    write_tsv(truth / "truth_lesions.tsv", rows_les,
              ["subject", "session", "lesion", "track", "status", "kind", "volume_mm3", "x", "y", "z",
               "contrast"])
    write_tsv(truth / "truth_counts.tsv", rows_cnt,
              ["subject", "session", "days", "gd_count", "new_gd_count", "cumulative_new_gd",
               "acquisition", "whole_head", "background", "has_pre", "has_flair"])
    write_tsv(truth / "truth_subjects.tsv", rows_sub,
              ["subject", "group", "sessions", "baseline_gd_count", "eligible", "cumulative_new_gd"])
    write_tsv(truth / "truth_motion.tsv", rows_mot,
              ["subject", "session", "transform", "rotation_deg", "translation_mm"]
              + [f"m{r}{c}" for r in range(3) for c in range(4)])
    write_text(truth / "README", _TRUTH_README)
    clear_caches()  # the pipeline usually runs next in the same process: give the memory back
    return out


def clear_caches() -> None:
    """Free the cached template and patient anatomies (about 1 GB after a mixed study)."""
    from .anatomy import _patient_cached, _template_base

    _template_base.cache_clear()
    _patient_cached.cache_clear()


def _subject_backgrounds(backgrounds, n: int) -> list[str]:
    names = []
    for b in backgrounds:
        if b == "mni":
            names.append(["mni"])
        elif b == "patients":
            names.append(list(PATIENTS))
        elif b in PATIENTS:
            names.append([b])
        else:
            raise ValueError(f"unknown background {b!r} (expected 'mni', 'patients' or a patient name)")
    out, used = [], [0] * len(names)
    for i in range(n):
        k = i % len(names)
        out.append(names[k][used[k] % len(names[k])])
        used[k] += 1
    return out


def _exact_fraction(rng, n: int, frac: float) -> np.ndarray:
    """A random selection of round(frac * n) of n items (exact proportions even for small n)."""
    sel = np.zeros(n, bool)
    sel[: int(round(float(frac) * n))] = True
    return rng.permutation(sel)


def _visit_days(rng, n_sessions, interval):
    days = [0]
    for v in range(1, n_sessions):
        days.append(v * interval + int(rng.integers(-3, 4)))
    return days


def _lesion_timeline(rng, frng, anat: Anatomy, n_sessions, days, rate, jitter, background):
    """All lesions of a subject (enhancing tracks and chronic), placed without overlap."""
    lam = rate * rng.gamma(FRAILTY_SHAPE, 1.0 / FRAILTY_SHAPE)
    n_base = int(rng.choice(len(BASELINE_PROBS), p=BASELINE_PROBS))
    onsets = []  # (first visit, age in days at that visit, duration)
    for _ in range(n_base):
        dur = _duration(rng)
        onsets.append((0, rng.uniform(0, dur), dur))
    for v in range(1, n_sessions):
        gap = days[v] - days[v - 1]
        for _ in range(int(rng.poisson(lam * gap / 28.0))):
            dur = _duration(rng)
            onsets.append((v, rng.uniform(0, min(dur, gap)), dur))
    n_chronic = int(rng.integers(2, 9)) if background == "mni" else int(rng.integers(0, 3))
    placer = _Placer(rng, anat)
    lesions: list[_Lesion] = []
    for track, (first, age, dur) in enumerate(onsets, start=1):
        d = float(np.exp(rng.uniform(*np.log(DIAMETER_MM))))
        kind = RING if (d >= 6.0 and rng.random() < 0.35) else NODULAR
        site, c, d = placer.place(d)
        if c is None:
            log.warning("phantom: no room for an enhancing lesion; dropped")
            continue
        kind = kind if d >= 6.0 else NODULAR
        shape = random_shape(rng, c, d, kind=kind, contrast=float(rng.uniform(*CONTRAST)),
                             jitter=jitter)
        enh = [v for v in range(first, n_sessions) if age + days[v] - days[first] < dur]
        les = _Lesion(track, shape, site, first=first, enhancing=enh)
        les.chronic_shape = chronic_look(rng, shape.scaled(0.8))
        les.chronic_from = max(enh) + 1
        lesions.append(les)
    for les in lesions:  # FLAIR: drawn from its own stream, after everything else
        les.flair_shape = random_flair(frng, les.shape)
        # the chronic scar keeps most of the FLAIR signal
        les.chronic_shape = les.chronic_shape.scaled(1.0, flair=1.0 + 0.8 * (les.flair_shape.flair - 1.0))
    for _ in range(n_chronic):
        d = float(np.exp(rng.uniform(np.log(3.0), np.log(12.0))))
        site, c, d = placer.place(d)
        if c is None:
            continue
        shape = random_shape(rng, c, d, kind=NODULAR, contrast=0.0, jitter=jitter)
        chronic = chronic_look(rng, shape)
        lesions.append(_Lesion(0, shape, site, first=-1, enhancing=[],
                               chronic_shape=chronic.scaled(1.0, flair=float(frng.uniform(*FLAIR_CHRONIC))),
                               chronic_from=0))
    return lesions, lam


def _duration(rng) -> float:
    return float(np.clip(DURATION_MEDIAN_DAYS * np.exp(DURATION_SIGMA * rng.standard_normal()), 7, 70))


class _Placer:
    """Lesion centres by site, at least 2.5 mm apart edge to edge (bounding spheres)."""

    def __init__(self, rng, anat: Anatomy):
        self.rng = rng
        self.anat = anat
        self.cands = {k: np.flatnonzero(v.ravel()) for k, v in anat.regions.items()}
        self.placed: list[tuple[np.ndarray, float]] = []

    def place(self, diameter: float, tries: int = 200):
        """A site and centre for a lesion of about ``diameter`` mm, and the diameter it may have
        there; (None, None, None) when there is no room."""
        sites = [k for k in SITE_WEIGHTS if self.cands.get(k) is not None and self.cands[k].size]
        if not sites:
            return None, None, None
        w = np.array([SITE_WEIGHTS[k] for k in sites])
        for _ in range(tries):
            site = sites[int(self.rng.choice(len(sites), p=w / w.sum()))]
            # infratentorial and juxtacortical sites hold only small lesions (<= 8 mm)
            d = min(diameter, 8.0) if site in ("infratentorial", "juxtacortical") else diameter
            r = 0.5 * d * (1.0 + MAX_JITTER_EST)
            cand = self.cands[site]
            ijk = np.array(np.unravel_index(cand[self.rng.integers(cand.size)], self.anat.shape), float)
            c = apply_affine(self.anat.affine, ijk + self.rng.uniform(-0.5, 0.5, 3))
            if all(np.linalg.norm(c - p) >= r + q + 2.5 for p, q in self.placed):
                self.placed.append((c, r))
                return site, c, d
        return None, None, None


def head_frame(anat) -> tuple[np.ndarray, np.ndarray]:
    """Centre (world mm) of an anatomy's head and the field of view (mm) that holds it
    with room for head motion: the frame every session of a subject is acquired in."""
    hm = np.argwhere(anat.head_mask)
    lo_w = apply_affine(anat.affine, hm.min(axis=0).astype(float))
    hi_w = apply_affine(anat.affine, hm.max(axis=0).astype(float))
    lo_w, hi_w = np.minimum(lo_w, hi_w), np.maximum(lo_w, hi_w)
    return 0.5 * (lo_w + hi_w), (hi_w - lo_w) + 2 * MOTION_MARGIN_MM


def _make_subject(out: Path, truth: Path, sub: str, rng, frng, *, background, whole_head, thick,
                  group, rate, n_sessions, with_pre, with_flair, interval, jitter, step) -> dict:
    if background == "mni":
        anat = template_anatomy(rng, whole_head=whole_head, step_mm=step)
    else:
        anat = patient_anatomy(background, rng, step_mm=step)
    days = _visit_days(rng, n_sessions, interval)
    lesions, lam = _lesion_timeline(rng, frng, anat, n_sessions, days, rate, jitter, background)

    center, fov = head_frame(anat)
    spacing = np.array([1.0, 1.0, 3.0 if thick else 1.0]) * step
    acq = "2d3mm" if thick else "3d1mm"
    shape_aff = random_affine(rng, center)          # this subject's head size and shape
    pose0 = random_rigid(rng, MAX_MOTION_DEG, MAX_MOTION_MM, center)
    gain_subject = float(rng.uniform(500, 1500)) if background == "mni" else 1.0
    snr_range = SNR_RANGE if background == "mni" else SNR_RANGE_REAL

    post_model = Image(anat.post, anat.affine)
    pre_model = Image(anat.pre, anat.affine)
    flair_model = Image(anat.flair, anat.affine)
    head_model = Image(anat.head_mask.astype(np.float32), anat.affine)
    mim_model = Image(anat.mimics.astype(np.int32), anat.affine) if anat.mimics is not None else None
    chr_model = Image(anat.chronic.astype(np.int32), anat.affine) if anat.chronic.any() else None

    rows_les, rows_cnt, rows_mot, sess_rows = [], [], [], []
    visible_prev: set[int] = set()
    cumulative = 0
    baseline_count = 0
    base_world = None
    for v in range(n_sessions):
        ses = f"ses-M{v:02d}"
        pose = pose0 if v == 0 else random_rigid(rng, MAX_MOTION_DEG, MAX_MOTION_MM, center)
        m_post = pose @ shape_aff
        if v == 0:
            base_world = m_post
        orient = str(rng.choice(ORIENTATIONS_2D if thick else ORIENTATIONS_3D))
        grid = scanner_grid(center, fov, spacing, orient)
        t_axis = slice_axis(grid) if thick else None
        th = 3 if thick else 1
        field = bias_field(rng, grid.shape)
        anat_dir = out / sub / ses / "anat"
        tdir = truth / sub / ses / "anat"
        stem = f"{sub}_{ses}"

        # post-contrast
        post = acquire(post_model, m_post, grid, thick_axis=t_axis, thickness=th)
        inv_post = np.linalg.inv(m_post)
        chronic_lab = np.zeros(grid.shape, np.uint8)
        for les in lesions:
            if v >= les.chronic_from and les.chronic_shape is not None:
                r = render(les.chronic_shape, grid.shape, grid.affine, inv_post)
                paint(post, r, anat.wm_level_post, "post")
                if not r.empty:
                    chronic_lab[r.slices][r.label_mask()] = 1
        labels = np.zeros(grid.shape, np.int32)
        enh_now = sorted((les for les in lesions if v in les.enhancing), key=lambda l: l.track)
        visible_now: set[int] = set()
        n_new = 0
        k = 0
        for les in enh_now:
            shp = les.shape_at(v)
            r = render(shp, grid.shape, grid.affine, inv_post)
            if r.empty:
                continue
            paint(post, r, anat.wm_level_post, "post")
            m = r.label_mask() & (labels[r.slices] == 0)
            if not m.any():
                continue
            k += 1
            labels[r.slices][m] = k
            visible_now.add(les.track)
            status = "baseline" if v == 0 else ("persistent" if les.track in visible_prev else "new")
            n_new += status == "new"
            cw = apply_affine(m_post, shp.center)
            bw = apply_affine(base_world, shp.center)
            rows_les.append(dict(subject=sub, session=ses, lesion=k, track=les.track, status=status,
                                 kind=shp.kind, volume_mm3=float(r.coverage.sum() * grid.voxel_volume),
                                 x=cw[0], y=cw[1], z=cw[2], contrast=shp.contrast,
                                 diameter_mm=shp.diameter_mm, n_voxels=int(m.sum()), site=les.site,
                                 x_baseline=bw[0], y_baseline=bw[1], z_baseline=bw[2]))
        if chr_model is not None:
            chronic_lab |= (acquire(chr_model, m_post, grid, interpolation="nearest") > 0).astype(np.uint8)
        gain = gain_subject * float(rng.uniform(0.85, 1.2))
        snr = float(rng.uniform(*snr_range))
        post_img = _finish(rng, post, field, gain, anat.wm_level_post * gain / snr,
                           None if anat.whole_head else acquire(head_model, m_post, grid,
                                                                thick_axis=t_axis, thickness=th))
        dtype = str(rng.choice(DTYPES))
        ext = str(rng.choice([".nii.gz", ".nii"]))
        arr, dt = to_storage(post_img, dtype)
        save_image(Image(arr, grid.affine), anat_dir / f"{stem}_ce-gadolinium_T1w{ext}", dtype=np.dtype(dt))
        save_image(Image(labels.astype(np.int16), grid.affine),
                   tdir / f"{stem}_ce-gadolinium_desc-truth_dseg.nii.gz")
        save_image(Image(chronic_lab, grid.affine), tdir / f"{stem}_ce-gadolinium_desc-chronic_mask.nii.gz")
        if mim_model is not None:
            mim = acquire(mim_model, m_post, grid, interpolation="nearest").astype(np.uint8)
            save_image(Image(mim, grid.affine), tdir / f"{stem}_ce-gadolinium_desc-mimics_dseg.nii.gz")

        rows_mot.append(_motion_row(sub, ses, "baseline_post_to_post", pose @ np.linalg.inv(pose0)))

        # pre-contrast: same grid and coil (bias), a small extra motion
        if with_pre:
            d = random_rigid(rng, MAX_PREPOST_DEG, MAX_PREPOST_MM, apply_affine(pose, center))
            m_pre = d @ m_post
            inv_pre = np.linalg.inv(m_pre)
            pre = acquire(pre_model, m_pre, grid, thick_axis=t_axis, thickness=th)
            for les in lesions:
                if v >= les.chronic_from and les.chronic_shape is not None:
                    paint(pre, render(les.chronic_shape, grid.shape, grid.affine, inv_pre),
                          anat.wm_level_pre, "pre")
            for les in enh_now:
                paint(pre, render(les.shape_at(v), grid.shape, grid.affine, inv_pre),
                      anat.wm_level_pre, "pre")
            gain_pre = gain_subject * float(rng.uniform(0.85, 1.2))
            pre_img = _finish(rng, pre, field, gain_pre, anat.wm_level_pre * gain_pre / snr,
                              None if anat.whole_head else acquire(head_model, m_pre, grid,
                                                                   thick_axis=t_axis, thickness=th))
            dtype_pre = str(rng.choice(DTYPES))
            arr, dt = to_storage(pre_img, dtype_pre)
            save_image(Image(arr, grid.affine), anat_dir / f"{stem}_T1w{ext}", dtype=np.dtype(dt))
            rows_mot.append(_motion_row(sub, ses, "post_to_pre", d))

        if with_flair:
            shapes = [f for f in (les.flair_at(v) for les in lesions) if f is not None]
            d = _write_flair(frng, anat, shapes, flair_model, head_model, pose, center, m_post,
                             grid, t_axis, th, field, gain_subject, snr,
                             anat_dir / f"{stem}_FLAIR{ext}")
            rows_mot.append(_motion_row(sub, ses, "post_to_flair", d))

        if v == 0:
            baseline_count = k
        else:
            cumulative += n_new
        rows_cnt.append(dict(subject=sub, session=ses, days=days[v], gd_count=k,
                             new_gd_count=n_new if v else 0, cumulative_new_gd=cumulative,
                             acquisition=acq, whole_head=bool(anat.whole_head),
                             background=background, has_pre=bool(with_pre),
                             has_flair=bool(with_flair), orientation=orient,
                             post_dtype=dtype, post_file=f"{stem}_ce-gadolinium_T1w{ext}",
                             snr=snr, chronic_voxels=int(chronic_lab.sum())))
        sess_rows.append(dict(session_id=ses,
                              acq_time=(START_DATE + timedelta(days=days[v])).strftime("%Y-%m-%dT%H:%M:%S")))
        visible_prev = visible_now
    write_tsv(out / sub / f"{sub}_sessions.tsv", sess_rows, ["session_id", "acq_time"])
    subject_row = dict(subject=sub, group=group, sessions=n_sessions, baseline_gd_count=baseline_count,
                       eligible=baseline_count <= 2, cumulative_new_gd=cumulative, rate=float(lam),
                       background=background, acquisition=acq, whole_head=bool(anat.whole_head))
    return dict(lesions=rows_les, counts=rows_cnt, motion=rows_mot, subject=subject_row)


def _write_flair(frng, anat, shapes, flair_model, head_model, pose, center, m_post, grid, t_axis,
                 th, field, gain_subject, snr, path) -> None:
    """This visit's FLAIR: the post-contrast grid, its own small motion, gain and noise."""
    d = random_rigid(frng, MAX_PREPOST_DEG, MAX_PREPOST_MM, apply_affine(pose, center))
    m_fl = d @ m_post
    inv_fl = np.linalg.inv(m_fl)
    fl = acquire(flair_model, m_fl, grid, thick_axis=t_axis, thickness=th)
    for shp in shapes:
        paint(fl, render(shp, grid.shape, grid.affine, inv_fl), anat.wm_level_flair, "flair")
    gain = gain_subject * float(frng.uniform(0.85, 1.2))
    img = _finish(frng, fl, field, gain, anat.wm_level_flair * gain / snr,
                  None if anat.whole_head else acquire(head_model, m_fl, grid,
                                                       thick_axis=t_axis, thickness=th))
    arr, dt = to_storage(img, str(frng.choice(DTYPES)))
    save_image(Image(arr, grid.affine), path, dtype=np.dtype(dt))
    return d


def _finish(rng, arr, field, gain, sigma, head=None) -> np.ndarray:
    """Bias x gain, Rician noise, and zero outside the head for skull-stripped looks."""
    img = arr * field * np.float32(gain)
    img = rician(rng, np.maximum(img, 0).astype(np.float32), float(sigma))
    if head is not None:
        img = np.where(head > 0.5, img, 0.0)
    return img.astype(np.float32)


def _motion_row(sub, ses, name, m):
    rot, tr = rigid_parameters(m)
    row = dict(subject=sub, session=ses, transform=name, rotation_deg=rot, translation_mm=tr)
    for r in range(3):
        for c in range(4):
            row[f"m{r}{c}"] = float(m[r, c])
    return row


def _write_bids_top(out: Path, parts, seed):
    write_json(out / "dataset_description.json", {
        "Name": f"lesioncount phantom study (seed {seed})", "BIDSVersion": "1.8.0",
        "DatasetType": "raw", "License": "CC-BY-4.0",
        "Authors": ["lesioncount phantom generator"],
        "GeneratedBy": [{"Name": "lesioncount", "Version": __version__}]})
    write_tsv(out / "participants.tsv", parts, ["participant_id", "group"])
    write_json(out / "participants.json", {"group": {
        "Description": "trial arm", "Levels": {"placebo": "placebo", "il2": "low-dose interleukin-2"}}})
    write_text(out / "README", _README)
    write_text(out / ".bidsignore", "")


_README = """lesioncount phantom study
=========================

Synthetic longitudinal post-contrast (ce-gadolinium) and pre-contrast T1w scans of MS
subjects with known enhancing lesions, made by lesioncount.phantom.make_study. Backgrounds
are the MNI152 2009 template (ICBM, nilearn) as a tissue model and, optionally, two real
patients of the Ljubljana MS dataset (Lesjak et al., Neuroinformatics 2017, CC-BY).
The truth (lesion labels on each post-contrast grid, counts, motion) is in
derivatives/truth. Not real patients' data except where a real background is named in
derivatives/truth/truth_counts.tsv.
"""

_TRUTH_README = """Truth of a lesioncount phantom study
====================================

- sub-*/ses-*/anat/*_ce-gadolinium_desc-truth_dseg.nii.gz: enhancing lesions, label k =
  row `lesion` k of truth_lesions.tsv for that subject and session; on the grid of that
  session's post-contrast file (voxels covered >= 50 %, at least the most covered voxel).
- *_desc-mimics_dseg.nii.gz (template backgrounds only): normal enhancing structures,
  1 vein, 2 sinus or falx, 3 choroid plexus, 4 dura.
- *_desc-chronic_mask.nii.gz: non-enhancing chronic lesions (synthetic, and the real ones
  of patient backgrounds).
- truth_lesions.tsv: status follows the default convention (new = overlaps no enhancing
  lesion of the previous session); x, y, z in that session's post-contrast world mm;
  x_baseline.. in the baseline post-contrast world mm.
- truth_counts.tsv, truth_subjects.tsv: as lesioncount's counts.tsv and subjects.tsv.
- truth_motion.tsv: 3x4 RAS matrices (m00..m23) mapping world points of the baseline
  post-contrast scan to the session's post-contrast scan (baseline_post_to_post), and of
  the session's post to its pre (post_to_pre) and to its FLAIR (post_to_flair).
"""
