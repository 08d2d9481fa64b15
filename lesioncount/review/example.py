"""A tiny, contract-conforming output folder with hand-placed lesions (tests and demos).

One subject ``sub-01`` with three visits and one ``sub-02`` with two visits and no
lesion. Grids are small (32 x 36 x 24 voxels of 2 x 2 x 3 mm, stored LAS with an
offset origin), and each follow-up head is moved by a known translation, written as
the session->baseline transform; each pre-contrast scan is moved again by a small
known translation (the pre->post transform). Lesions, in baseline world mm:

==========  ==========  ======================  =======================
lesion      ses-01      ses-02                  ses-03
==========  ==========  ======================  =======================
A (track 1) baseline    persistent              -
B (track 2) -           new (the "vessel")      persistent
C (track 3) -           -                       new
D           -           -                       enhancing, not detected
==========  ==========  ======================  =======================

Automatic counts: new 0, 1, 1, cumulative 0, 1, 2.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..image import Image, apply_affine
from ..io import save_image, write_json
from ..lesions import measure
from ..outputs import SessionPaths, write_tables

SHAPE = (32, 36, 24)
SPACING = (2.0, 2.0, 3.0)
LESIONS = {"A": (-10.0, 6.0, 3.0), "B": (12.0, -8.0, 9.0), "C": (2.0, 18.0, -6.0),
           "D": (-12.0, -14.0, 6.0)}
RADIUS_MM = 4.5
# session -> baseline: a session point = baseline point + shift (RAS mm)
SHIFTS = {"ses-01": (0.0, 0.0, 0.0), "ses-02": (3.0, -2.0, 1.5), "ses-03": (-2.0, 4.0, -3.0)}
PRE_SHIFT = (1.0, 1.0, 0.0)  # a pre-contrast point = post point + PRE_SHIFT
VISITS = {  # session: [(lesion name, track, status, detected)]
    "ses-01": [("A", 1, "baseline", True)],
    "ses-02": [("A", 1, "persistent", True), ("B", 2, "new", True)],
    "ses-03": [("B", 2, "persistent", True), ("C", 3, "new", True), ("D", None, None, False)],
}


def _affine() -> np.ndarray:
    aff = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])  # LAS on disk
    aff[:3, 3] = [SHAPE[0] * SPACING[0] / 2 - 3.0, -SHAPE[1] * SPACING[1] / 2 + 5.0,
                  -SHAPE[2] * SPACING[2] / 2 + 2.0]
    return aff


def _translation(shift_ras):
    import SimpleITK as sitk

    t = sitk.TranslationTransform(3)
    t.SetOffset((-shift_ras[0], -shift_ras[1], shift_ras[2]))  # RAS -> LPS
    return t


def _world(aff) -> np.ndarray:
    ijk = np.indices(SHAPE).reshape(3, -1).T
    return apply_affine(aff, ijk).reshape(SHAPE + (3,))


def write_example(root: str | Path, *, seed: int = 0) -> Path:
    """Write ``root/study`` (inputs) and ``root/out`` (outputs); return the output folder."""
    import SimpleITK as sitk

    root = Path(root)
    rng = np.random.default_rng(seed)
    out = root / "out"
    aff = _affine()
    w = _world(aff)
    axes = np.array([28.0, 32.0, 30.0])
    counts, lesion_rows, subjects = [], [], []
    for subj, visits in (("sub-01", VISITS), ("sub-02", {"ses-01": [], "ses-02": []})):
        cum = 0
        for k, (ses, les) in enumerate(visits.items()):
            shift = np.array(SHIFTS[ses])
            brain = (((w - shift) / axes) ** 2).sum(-1) <= 1
            anat = root / "study" / subj / ses / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            post = np.where(brain, 100.0, 0.0)
            labels = np.zeros(SHAPE, np.int16)
            detected = []
            for name, track, status, found in les:
                c = np.array(LESIONS[name]) + shift  # where it lies on this visit's scan
                ball = np.linalg.norm(w - c, axis=-1) <= RADIUS_MM
                post[ball] = 180.0
                if found:
                    detected.append((track, status))
                    labels[ball] = len(detected)
            post += rng.normal(0, 3, SHAPE) * brain
            # pre: the same head without enhancement, moved by PRE_SHIFT relative to post
            pre = np.where((((w - shift - PRE_SHIFT) / axes) ** 2).sum(-1) <= 1, 90.0, 0.0)
            pre += rng.normal(0, 3, SHAPE)
            p_post = anat / f"{subj}_{ses}_ce-gadolinium_T1w.nii.gz"
            p_pre = anat / f"{subj}_{ses}_T1w.nii.gz"
            save_image(Image(post.astype(np.float32), aff), p_post)
            save_image(Image(pre.astype(np.float32), aff), p_pre)
            paths = SessionPaths(out, subj, ses)
            paths.dir.mkdir(parents=True, exist_ok=True)
            save_image(Image(labels, aff), paths.lesions, dtype=np.int16)
            save_image(Image((labels > 0).astype(np.uint8), aff), paths.detected)
            enh = np.clip((post - 100.0) / 10.0, 0, None) * brain
            save_image(Image(enh.astype(np.float32), aff), paths.enhancement)
            save_image(Image(brain.astype(np.uint8), aff), paths.brain)
            sitk.WriteTransform(_translation(PRE_SHIFT), str(paths.pre_to_post))
            if k > 0:
                sitk.WriteTransform(_translation(shift), str(paths.to_baseline))
            base_post = root / "study" / subj / "ses-01" / "anat" / f"{subj}_ses-01_ce-gadolinium_T1w.nii.gz"
            write_json(paths.sidecar, {
                "subject": subj, "session": ses, "status": "ok", "key": f"example-{subj}-{ses}",
                "is_baseline": k == 0, "detector": "example",
                "inputs": {"post": str(p_post.resolve()), "pre": str(p_pre.resolve()),
                           "baseline_post": str(base_post.resolve())},
                "pre_used": True, "registration": {"pre_to_post": None, "to_baseline": None}})
            stats = measure(Image(labels.astype(np.int32), aff), enh)
            n_new = 0
            for st, (track, status) in zip(stats, detected):
                xyz = np.array(st.centroid_ras) - shift
                lesion_rows.append({
                    "subject": subj, "session": ses, "lesion": st.label, "track": track,
                    "status": status, "volume_mm3": round(st.volume_mm3, 2),
                    "x": round(float(xyz[0]), 2), "y": round(float(xyz[1]), 2),
                    "z": round(float(xyz[2]), 2), "max_enhancement": st.max_enhancement,
                    "mean_enhancement": st.mean_enhancement})
                n_new += status == "new"
            cum += n_new
            counts.append({"subject": subj, "session": ses, "days": 30.0 * k,
                           "gd_count": len(stats), "new_gd_count": n_new, "cumulative_new_gd": cum,
                           "persistent_gd_count": sum(s == "persistent" for _, s in detected),
                           "status": "ok", "pre_used": True,
                           "registration_quality": None if k == 0 else 0.99,
                           "detector": "example"})
        base = next(c["gd_count"] for c in counts if c["subject"] == subj)
        subjects.append({"subject": subj, "group": "placebo", "sessions": len(visits),
                         "baseline_gd_count": base, "eligible": base <= 2,
                         "cumulative_new_gd": cum, "complete": True, "failed_sessions": None})
    write_tables(out, counts, lesion_rows, subjects, [])
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "lesioncount example", "BIDSVersion": "1.9.0", "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "lesioncount", "Parameters": {"max_baseline_gd": 2}}]}) + "\n")
    return out


def lesion_world(name: str) -> np.ndarray:
    """Where an example lesion is, in baseline world mm."""
    return np.array(LESIONS[name])
