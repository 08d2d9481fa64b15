"""One small image type (array + RAS affine) and the one conversion to SimpleITK.

Every stage of lesioncount works on :class:`Image`: a 3D numpy array indexed
``[i, j, k]`` as nibabel reads it, with the 4x4 voxel-to-world affine in RAS+
millimetres. Voxel volume, spacing and world coordinates are always derived from
the affine, never passed beside it.

SimpleITK works in LPS and orders its arrays ``[k, j, i]``; :func:`to_sitk`,
:func:`from_sitk`, :func:`ras_to_lps` and :func:`lps_to_ras` are the only places
that know this (as TorchIO does in its ``io.py``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS (its own inverse)


@dataclass(frozen=True, eq=False)
class Image:
    """A 3D image on a grid: ``array[i, j, k]`` and its voxel-to-RAS affine (mm)."""

    array: np.ndarray
    affine: np.ndarray

    def __post_init__(self):
        if self.array.ndim != 3:
            raise ValueError(f"Image needs a 3D array, got shape {self.array.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"Image needs a 4x4 affine, got shape {aff.shape}")
        object.__setattr__(self, "affine", aff)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along each array axis, in mm."""
        return voxel_sizes(self.affine)

    @property
    def voxel_volume(self) -> float:
        """Volume of one voxel in mm^3 (absolute determinant of the affine's 3x3 part)."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    def like(self, array: np.ndarray) -> "Image":
        """A new image on the same grid."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match grid {self.array.shape}")
        return Image(array, self.affine)

    def world(self, ijk: np.ndarray) -> np.ndarray:
        """World (RAS mm) coordinates of voxel indices, shape (..., 3)."""
        return apply_affine(self.affine, ijk)


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return pts @ affine[:3, :3].T + affine[:3, 3]


def same_grid(a: Image, b: Image, atol_mm: float = 1e-3) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=atol_mm)


def ras_to_lps(points: np.ndarray) -> np.ndarray:
    p = np.array(points, dtype=np.float64, copy=True)
    p[..., :2] *= -1
    return p


lps_to_ras = ras_to_lps  # the flip is its own inverse


def to_sitk(image: Image, dtype=np.float32):
    """The one conversion Image -> SimpleITK (RAS affine -> LPS origin/spacing/direction)."""
    import SimpleITK as sitk

    arr = np.ascontiguousarray(np.transpose(image.array.astype(dtype, copy=False)))
    return _set_geometry(sitk.GetImageFromArray(arr), image.affine)


def sitk_grid(image: Image, value: int = 0):
    """A SimpleITK uint8 image on ``image``'s grid filled with ``value``, without copying
    its array (a reference grid for resampling, a field-of-view mask)."""
    import SimpleITK as sitk

    out = sitk.Image([int(n) for n in image.shape], sitk.sitkUInt8)
    if value:
        out = out + int(value)
    return _set_geometry(out, image.affine)


def _set_geometry(out, affine: np.ndarray):
    lps = _FLIP @ affine
    spacing = voxel_sizes(lps)
    direction = lps[:3, :3] / spacing
    out.SetSpacing([float(s) for s in spacing])
    out.SetOrigin([float(o) for o in lps[:3, 3]])
    out.SetDirection([float(d) for d in direction.ravel()])
    return out


def from_sitk(img) -> Image:
    """The one conversion SimpleITK -> Image (LPS -> RAS affine)."""
    import SimpleITK as sitk

    arr = np.transpose(sitk.GetArrayFromImage(img))
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = img.GetOrigin()
    return Image(arr, _FLIP @ lps)


def isotropic_grid(reference: Image, spacing_mm: float = 1.0) -> Image:
    """An empty grid covering the same field of view as ``reference`` at isotropic spacing.

    Keeps the reference's orientation. Used as the common tracking space (baseline
    space at 1 mm) so that 3 mm-slice sessions do not lose small lesions.
    """
    sp = reference.spacing
    extent = np.asarray(reference.shape) * sp
    shape = np.maximum(1, np.round(extent / spacing_mm)).astype(int)
    direction = reference.affine[:3, :3] / sp
    aff = np.eye(4)
    aff[:3, :3] = direction * spacing_mm
    # keep the corner of the field of view (voxel -0.5 edge) where it is
    corner = apply_affine(reference.affine, -0.5 * np.ones(3))
    aff[:3, 3] = corner + direction @ (0.5 * spacing_mm * np.ones(3))
    return Image(np.zeros(tuple(shape), dtype=np.uint8), aff)


def resample(
    image: Image,
    reference: Image,
    transform=None,
    *,
    interpolation: str = "linear",
    default: float = 0.0,
) -> Image:
    """Resample ``image`` onto ``reference``'s grid.

    ``transform`` is a SimpleITK transform that maps points of the reference's
    space to points of the image's space (the convention of ``sitk.Resample`` and
    of :func:`lesioncount.registration.register`, with the reference as fixed image).
    ``interpolation`` is ``"linear"``, ``"nearest"`` (labels) or ``"bspline"``.
    """
    is_label = interpolation == "nearest"
    dtype = np.int32 if is_label else np.float32
    if (transform is None and image.shape == reference.shape
            and np.allclose(image.affine, reference.affine, atol=1e-5)):
        # same grid, no transform: every output voxel centre is an input voxel centre
        return Image(np.asarray(image.array).astype(dtype), reference.affine)
    import SimpleITK as sitk

    interp = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }[interpolation]
    moving = to_sitk(image, dtype=dtype)
    ref = sitk_grid(reference)
    tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    pixel = sitk.sitkInt32 if is_label else sitk.sitkFloat32
    out = sitk.Resample(moving, ref, tx, interp, float(default), pixel)
    res = from_sitk(out)
    return Image(res.array, reference.affine)


def block_mean(a: np.ndarray, f: tuple[int, int, int]) -> np.ndarray:
    """Mean over blocks of ``f`` voxels (edges padded by replication).

    Block ``k`` along an axis covers voxels ``k*f .. k*f + f - 1``: on a grid its value
    sits at voxel coordinate ``k*f + (f - 1) / 2`` (brain masks and the registration
    pyramid work on such grids). All factors 1: ``a`` itself.
    """
    if all(int(k) == 1 for k in f):
        return a
    pad = [(0, (-n) % k) for n, k in zip(a.shape, f)]
    a = np.pad(a, pad, mode="edge")
    s = a.shape
    return a.reshape(s[0] // f[0], f[0], s[1] // f[1], f[1], s[2] // f[2], f[2]).mean(axis=(1, 3, 5))


def mask_box(mask: np.ndarray, spacing, margin_mm: float,
             align=(1, 1, 1)) -> tuple[slice, slice, slice]:
    """The bounding box of ``mask``'s voxels grown by ``margin_mm``, clipped to the grid.

    A whole-head field of view is about twice the brain's bounding box; the stages that
    only look at the brain and a few millimetres around it run on this box. Its start
    along each axis is lowered to a multiple of ``align`` (a filter working in blocks
    then sees the same blocks as on the whole grid). The whole grid when the mask is empty.
    """
    from scipy import ndimage as ndi

    m = np.asarray(mask, dtype=bool)
    tight = ndi.find_objects(m.astype(np.uint8))
    if not tight:
        return tuple(slice(0, n) for n in m.shape)
    pad = np.ceil(float(margin_mm) / np.asarray(spacing, dtype=float)).astype(int)
    box = []
    for s, p, a, n in zip(tight[0], pad, align, m.shape):
        start = max(0, s.start - int(p))
        box.append(slice(start - start % int(a), min(n, s.stop + int(p))))
    return tuple(box)


def crop(image: Image, box: tuple[slice, slice, slice]) -> Image:
    """``image.array[box]`` (a view) with its affine: every voxel keeps its world position."""
    lo = np.array([s.start or 0 for s in box], dtype=float)
    aff = image.affine.copy()
    aff[:3, 3] = apply_affine(image.affine, lo)
    return Image(image.array[box], aff)


def uncrop(array: np.ndarray, box: tuple[slice, slice, slice], shape, fill=0) -> np.ndarray:
    """``array`` (the values on ``box``) placed on the whole grid of ``shape``, ``fill`` elsewhere."""
    out = np.full(tuple(shape), fill, dtype=array.dtype)
    out[box] = array
    return out
