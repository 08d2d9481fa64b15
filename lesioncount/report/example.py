"""A tiny, contract-conforming output folder with known content, for tests and the screenshot.

:func:`make_example_output` writes small synthetic inputs (post, pre) and the output folder
that ``lesioncount run`` would write for them (tables, label maps on each post grid,
enhancement maps, brain masks, transforms, sidecars, ``errors.tsv``), with hand-placed
lesions whose positions and statuses are known. Follow-up visits are translated against
the baseline and the saved transforms are those translations, so a crop in baseline space
must find every lesion where it was placed. One visit can be marked as a failed
registration (no counts, an error row), as the pipeline records it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..image import Image
from ..io import save_image, write_json
from ..outputs import SessionPaths, write_tables

SHAPE = (48, 48, 32)
SPACING = (1.5, 1.5, 2.0)


@dataclass(frozen=True)
class PlacedLesion:
    centre: tuple[float, float, float]  # baseline world RAS mm
    radius_mm: float
    visits: tuple[int, ...]  # visit indices where it enhances


def _affine(shift_vox=(0.0, 0.0, 0.0)) -> np.ndarray:
    # an LAS grid (x flipped), anisotropic voxels, centred on the world origin
    a = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    centre = (np.asarray(SHAPE) - 1) / 2 + np.asarray(shift_vox)
    a[:3, 3] = -a[:3, :3] @ centre
    return a


def _world(affine: np.ndarray) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _anatomy(p: np.ndarray) -> np.ndarray:
    """A smooth 'brain' in baseline world coordinates: ellipsoid, folds, a dark ventricle."""
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    r = (x / 32) ** 2 + (y / 33) ** 2 + (z / 26) ** 2
    brain = r < 1
    img = np.where(brain, 300 + 60 * np.sin(x / 3.5) * np.cos(y / 4.5) + 40 * np.sin(z / 5), 20)
    vent = (x / 7) ** 2 + (y / 14) ** 2 + (z / 8) ** 2 < 1
    img = np.where(vent, 120, img)
    return img.astype(np.float32), brain


def make_example_output(root: str | Path, *, groups=(("il2", 3), ("placebo", 3)),
                        new_per_visit=None, n_visits: int = 3, failed: tuple[str, int] | None = None,
                        seed: int = 0) -> Path:
    """Write inputs under ``root/study`` and an output folder ``root/out``; return the latter.

    Parameters
    ----------
    groups : sequence of (name, n_subjects)
    new_per_visit : dict, optional
        ``group -> new lesions per follow-up visit``, one number for the group or a list
        (one per subject, cycled); default il2: 0, placebo: 1. Each subject's first new
        lesion also enhances on the next visit (persistent there).
    failed : (subject, visit index), optional
        A visit whose registration to baseline is recorded as failed.
    """
    import SimpleITK as sitk

    from ..image import ras_to_lps

    rng = np.random.default_rng(seed)
    root = Path(root)
    out, study = root / "out", root / "study"
    new_per_visit = new_per_visit or {"il2": 0, "placebo": 1}
    counts, lesions, subjects, errors = [], [], [], []
    n = 0
    for grp, n_subj in groups:
        for j in range(n_subj):
            n += 1
            per_visit = new_per_visit.get(grp, 0)
            per_visit = per_visit[j % len(per_visit)] if isinstance(per_visit, (list, tuple)) \
                else per_visit
            subj = f"sub-{n:02d}"
            placed: list[PlacedLesion] = []
            # one baseline lesion, enhancing at baseline only
            placed.append(PlacedLesion((10.0, -8.0, 4.0), 3.0, (0,)))
            k = 0
            for v in range(1, n_visits):
                for _ in range(per_visit):
                    ang = 1.3 * k + n
                    c = (14 * np.cos(ang), 14 * np.sin(ang), -6.0 + 6 * (k % 3))
                    span = (v, v + 1) if (k == 0 and n_visits > 2 and v + 1 < n_visits) else (v,)
                    placed.append(PlacedLesion(tuple(float(a) for a in c), 2.5 + (k % 2), span))
                    k += 1
            cumulative, rows_subj = 0, []
            base_count = None
            for v in range(n_visits):
                ses = f"ses-M{v:02d}"
                paths = SessionPaths(out, subj, ses)
                shift = np.zeros(3) if v == 0 else rng.uniform(-3, 3, 3)  # mm, RAS
                aff = _affine()
                world = _world(aff)
                p_base = world - shift  # session point q = baseline point p + shift
                anat, brain = _anatomy(p_base)
                gain = 1.0 + 0.1 * v
                post = anat.copy()
                labels = np.zeros(SHAPE, np.int16)
                lid = 0
                vis = [les for les in placed if v in les.visits]
                for les in vis:
                    d = np.linalg.norm(p_base - np.asarray(les.centre), axis=-1)
                    ball = d <= les.radius_mm
                    post[ball] += 250
                    lid += 1
                    labels[ball] = lid
                post = post * gain + rng.normal(0, 6, SHAPE)
                pre = anat * 0.9 + rng.normal(0, 6, SHAPE)
                enh = np.where(brain, (post / gain - pre / 0.9) / 10, 0).astype(np.float32)
                post_path = study / subj / ses / "anat" / f"{subj}_{ses}_ce-gadolinium_T1w.nii.gz"
                pre_path = study / subj / ses / "anat" / f"{subj}_{ses}_T1w.nii.gz"
                save_image(Image(post.astype(np.float32), aff), post_path)
                save_image(Image(pre.astype(np.float32), aff), pre_path)
                is_failed = failed is not None and failed == (subj, v)
                if is_failed:
                    errors.append({"subject": subj, "session": ses, "file": str(post_path),
                                   "level": "error",
                                   "reason": f"{post_path}: registration to baseline looks failed "
                                             f"(quality 0.120 < 0.25); not counted"})
                    continue
                save_image(Image(labels, aff), paths.lesions, dtype=np.int16)
                save_image(Image(enh, aff), paths.enhancement)
                save_image(Image(brain.astype(np.uint8), aff), paths.brain)
                identity = sitk.Euler3DTransform()
                sitk.WriteTransform(identity, str(paths.pre_to_post))
                if v:
                    sitk.WriteTransform(sitk.TranslationTransform(3, [float(t) for t in
                                                                      ras_to_lps(shift)]),
                                        str(paths.to_baseline))
                prev = [les for les in placed if v - 1 in les.visits] if v else []
                n_new = n_pers = 0
                for i, les in enumerate(vis, start=1):
                    status = "baseline" if v == 0 else ("persistent" if les in prev else "new")
                    n_new += status == "new"
                    n_pers += status == "persistent"
                    lesions.append({"subject": subj, "session": ses, "lesion": i,
                                    "track": placed.index(les) + 1, "status": status,
                                    "volume_mm3": round(4 / 3 * np.pi * les.radius_mm ** 3, 1),
                                    "x": les.centre[0], "y": les.centre[1], "z": les.centre[2],
                                    "max_enhancement": 25.0, "mean_enhancement": 18.0})
                cumulative += n_new
                if v == 0:
                    base_count = len(vis)
                quality = None if v == 0 else round(float(rng.uniform(0.7, 0.85)), 3)
                rows_subj.append({"subject": subj, "session": ses, "days": 30.0 * v,
                                  "gd_count": len(vis), "new_gd_count": n_new,
                                  "cumulative_new_gd": cumulative, "persistent_gd_count": n_pers,
                                  "status": "ok", "pre_used": True,
                                  "registration_quality": quality, "detector": "classical"})
                write_json(paths.sidecar, {
                    "subject": subj, "session": ses, "status": "ok", "is_baseline": v == 0,
                    "inputs": {"post": str(post_path), "pre": str(pre_path)},
                    "pre_used": True,
                    "registration": {
                        "pre_to_post": {"quality": 0.8, "failed": False},
                        "to_baseline": None if v == 0 else {"quality": quality, "failed": False}},
                })
            counts += rows_subj
            subjects.append({"subject": subj, "group": grp, "sessions": n_visits,
                             "baseline_gd_count": base_count, "eligible": base_count <= 2,
                             "cumulative_new_gd": cumulative,
                             "complete": not (failed and failed[0] == subj),
                             "failed_sessions": f"ses-M{failed[1]:02d}"
                             if failed and failed[0] == subj else None})
    write_tables(out, counts, lesions, subjects, errors)
    write_json(out / "dataset_description.json", {
        "Name": "example", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lesioncount", "Version": "example",
                         "Parameters": {"registration": {"min_quality": 0.25}}}]})
    return out
