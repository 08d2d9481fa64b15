"""A tiny longitudinal BIDS study for orchestration tests (seconds per session, not realism).

The MNI152 template from the nilearn wheel, subsampled to ``step_mm`` voxels, gives a
brain-shaped pre/post pair per visit; each visit is the same head moved by a small
known shift (in the affine), with Rician-like noise and a few bright spheres on the
post-contrast scan only (enhancing lesions). Deterministic for a given seed.
"""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

TEMPLATE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _template(step: int):
    import nilearn

    d = Path(os.path.dirname(nilearn.__file__)) / "datasets" / "data"
    imgs = [nib.load(str(d / TEMPLATE.format(k))) for k in ("t1", "gm", "wm")]
    s = (slice(None, None, step),) * 3
    aff = imgs[0].affine.copy()
    aff[:3, :3] *= step
    t1, gm, wm = (np.asarray(i.dataobj, np.float32)[s] for i in imgs)
    return t1, gm / 255.0, wm / 255.0, aff


def tiny_study(root, *, n_subjects: int = 2, n_sessions: int = 2, step_mm: int = 3,
               seed: int = 0, with_pre: bool = True) -> Path:
    """Write a BIDS study of ``n_subjects`` x ``n_sessions`` tiny visits under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    t1, gm, wm, aff = _template(step_mm)
    brain = t1 > 20
    csf = np.clip(brain - gm - wm, 0, 1)
    pre0 = 1.0 * wm + 0.65 * gm + 0.22 * csf
    post0 = 1.0 * wm + 0.85 * gm + 0.30 * csf
    ijk = np.indices(t1.shape).reshape(3, -1).T
    deep = np.argwhere(wm > 0.9)
    rng = np.random.default_rng(seed)
    (root / "dataset_description.json").write_text(
        '{"Name": "tiny", "BIDSVersion": "1.9.0"}\n')
    lines = ["participant_id\tgroup"]
    for si in range(n_subjects):
        sub = f"sub-{si + 1:02d}"
        lines.append(f"{sub}\t{'a' if si % 2 == 0 else 'b'}")
        lesions: list[np.ndarray] = []
        for vi in range(n_sessions):
            ses = f"ses-{vi + 1:02d}"
            anat = root / sub / ses / "anat"
            anat.mkdir(parents=True, exist_ok=True)
            lesions = lesions[-1:] + [deep[rng.integers(len(deep))] for _ in range(rng.integers(1, 3))]
            post = post0.copy()
            for c in lesions:
                d2 = (((ijk - c) * step_mm) ** 2).sum(1).reshape(t1.shape)
                post = np.where(d2 <= (2.2 * step_mm) ** 2, 2.0, post)
            a = aff.copy()
            a[:3, 3] += rng.uniform(-3, 3, 3)  # head moved between visits (mm)
            for name, arr in (("ce-gadolinium_T1w", post), ("T1w", pre0)):
                if name == "T1w" and not with_pre:
                    continue
                noisy = np.abs(arr + rng.normal(0, 0.03, arr.shape)).astype(np.float32) * 1000
                img = nib.Nifti1Image(noisy, a)
                img.set_data_dtype(np.int16)
                nib.save(img, str(anat / f"{sub}_{ses}_{name}.nii.gz"))
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root
