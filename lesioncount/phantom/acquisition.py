"""Acquiring a phantom: head pose, scanner grids, slice profile, bias, gain, Rician noise, storage.

Conventions: all 4x4 matrices here are RAS millimetres. A *pose* maps points of the
subject's model space to the scanner's world space; an image acquired with pose ``M``
shows at scanner point ``x`` what the model has at ``M^-1 x``.
"""
from __future__ import annotations

import numpy as np

from ..image import Image, resample

# On-disk orientations (nibabel axis codes: the direction each array axis points to).
ORIENTATIONS_3D = ("RAS", "LAS", "LPS", "PIR", "ASR", "LPI")
# 2D axial acquisitions: the slice axis is the one that points S or I.
ORIENTATIONS_2D = ("RAS", "LAS", "LPS", "RPI", "LAI")
DTYPES = ("float32", "int16", "uint16")
_AXIS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def rotation_matrix(angles_deg) -> np.ndarray:
    """Rotation about x, then y, then z (degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rigid(angles_deg, translation_mm, center=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 rigid transform rotating about ``center`` then translating."""
    r = rotation_matrix(angles_deg)
    c = np.asarray(center, float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c - r @ c + np.asarray(translation_mm, float)
    return m


def random_rigid(rng: np.random.Generator, max_deg: float, max_mm: float, center) -> np.ndarray:
    """A random rigid motion: each rotation angle and each shift uniform in +-max/2,
    so that the difference of two such poses stays within about +-max per axis."""
    return rigid(rng.uniform(-max_deg / 2, max_deg / 2, 3), rng.uniform(-max_mm / 2, max_mm / 2, 3),
                 center)


def random_affine(rng: np.random.Generator, center, scale=0.06, shear=0.03) -> np.ndarray:
    """A subject's head size and shape: per-axis scaling and a little shear about ``center``."""
    a = np.diag(1.0 + rng.uniform(-scale, scale, 3))
    a = a + np.triu(rng.uniform(-shear, shear, (3, 3)), 1)
    c = np.asarray(center, float)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = c - a @ c
    return m


def rigid_parameters(m: np.ndarray) -> tuple[float, float]:
    """Rotation angle (degrees) and translation length (mm) of a rigid 4x4."""
    cos = (np.trace(m[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))), float(np.linalg.norm(m[:3, 3]))


def scanner_grid(center, fov_mm, spacing_mm, orientation: str) -> Image:
    """An empty grid in scanner space: ``fov_mm`` and ``spacing_mm`` per world axis (x, y, z).

    ``orientation`` is a nibabel axis code ("RAS", "PIR", ...): the direction each
    array axis points to.
    """
    if sorted(_AXIS[c][0] for c in orientation) != [0, 1, 2]:
        raise ValueError(f"not an orientation code: {orientation!r}")
    fov = np.asarray(fov_mm, float)
    sp = np.asarray(spacing_mm, float)
    aff = np.eye(4)
    shape = []
    for a, code in enumerate(orientation):
        w, sign = _AXIS[code]
        n = int(np.ceil(fov[w] / sp[w]))
        shape.append(n)
        aff[:3, a] = 0.0
        aff[w, a] = sign * sp[w]
    shape = tuple(shape)
    mid = (np.asarray(shape) - 1) / 2.0
    aff[:3, 3] = np.asarray(center, float) - aff[:3, :3] @ mid
    return Image(np.zeros(shape, np.uint8), aff)


def slice_axis(grid: Image) -> int:
    """The array axis that runs along world z (superior-inferior)."""
    return int(np.argmax(np.abs(grid.affine[2, :3])))


def _sitk_transform(m_ras: np.ndarray):
    """A SimpleITK transform from a RAS 4x4 (the project's one RAS->LPS transform conversion)."""
    from ..registration import transform_from_matrix_ras

    return transform_from_matrix_ras(m_ras)


def acquire(model: Image, pose: np.ndarray, grid: Image, *, thick_axis: int | None = None,
            thickness: int = 1, interpolation: str = "linear") -> np.ndarray:
    """Sample ``model`` (moved by ``pose``) on ``grid``, averaging over thick slices.

    With ``thick_axis`` and ``thickness`` = t > 1, each voxel of ``grid`` along that
    axis is the mean of t thin sub-slices across its thickness (a boxcar slice
    profile), not a point sample.
    """
    tx = _sitk_transform(np.linalg.inv(pose))
    if thick_axis is None or thickness <= 1:
        return resample(model, grid, tx, interpolation=interpolation).array
    aff = grid.affine.copy()
    step = aff[:3, thick_axis] / thickness
    aff[:3, thick_axis] = step
    aff[:3, 3] = aff[:3, 3] - step * (thickness - 1) / 2.0
    shape = list(grid.shape)
    shape[thick_axis] *= thickness
    fine = Image(np.zeros(shape, np.uint8), aff)
    arr = resample(model, fine, tx, interpolation=interpolation).array
    new_shape = list(grid.shape)
    new_shape.insert(thick_axis + 1, thickness)
    return arr.reshape(new_shape).mean(axis=thick_axis + 1)


def bias_field(rng: np.random.Generator, shape, strength: float = 0.15) -> np.ndarray:
    """A smooth multiplicative field around 1 (within about +-``strength``), random per call.

    exp of a sum of separable low-frequency cosine products (cheap on large grids).
    """
    log_field = np.zeros(shape, np.float32)
    for _ in range(6):
        f = []
        for n in shape:
            t = np.linspace(0.0, 1.0, n, dtype=np.float32)
            f.append(np.cos(np.float32(np.pi * rng.uniform(0.2, 1.2)) * t
                            + np.float32(rng.uniform(0, 2 * np.pi))).astype(np.float32))
        log_field += np.float32(rng.uniform(-1, 1)) * (f[0][:, None, None] * f[1][None, :, None]
                                                      * f[2][None, None, :])
    log_field *= np.float32(strength / max(float(np.abs(log_field).max()), 1e-6))
    return np.exp(log_field)


def rician(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``."""
    n1 = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    n2 = rng.standard_normal(signal.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt((signal + n1) ** 2 + n2 * n2)


def to_storage(array: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
    """The array and the on-disk dtype to save it with.

    ``int16`` is written scaled (nibabel picks ``scl_slope`` != 1 for the float
    values); ``uint16`` is rounded to integers and written unscaled.
    """
    if dtype == "uint16":
        return np.clip(np.round(array), 0, 65535).astype(np.uint16), "uint16"
    if dtype == "int16":
        return array.astype(np.float32), "int16"
    return array.astype(np.float32), "float32"
