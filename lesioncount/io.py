"""Reading and writing images, with every check at the boundary.

:func:`load_image` is the one way lesioncount reads a scan: it returns an
:class:`~lesioncount.image.Image` or raises :class:`~lesioncount.errors.InputError`
with a one-line message naming the file and what is wrong (truncated or corrupt
file, not NIfTI, wrong dimensionality, non-finite voxels, missing or singular
affine, absurd voxel sizes). Writes are atomic: a file appears under its final
name only once complete.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from .errors import InputError
from .image import Image, voxel_sizes

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# Plausible MRI voxel sizes: below 0.1 mm or above 10 mm the header is wrong, not the scan.
MIN_VOXEL_MM = 0.1
MAX_VOXEL_MM = 10.0


def is_nifti_name(path: str | os.PathLike) -> bool:
    return str(path).endswith(NIFTI_SUFFIXES)


def load_image(path: str | os.PathLike, *, dtype=np.float32) -> Image:
    """Read one 3D NIfTI scan (scaling by ``scl_slope``/``scl_inter`` applied).

    Raises
    ------
    InputError
        With a one-line reason naming ``path``.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if not p.is_file():
        raise InputError(p, "is not a file")
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty (0 bytes)")
    if not is_nifti_name(p):
        raise InputError(p, "not a NIfTI file name (expected .nii or .nii.gz)")
    try:
        img = nib.load(str(p))
    except ImageFileError as e:
        raise InputError(p, f"not a readable NIfTI file ({_short(e)})") from None
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise InputError(p, f"corrupt or truncated file ({_short(e)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(p, f"is a {type(img).__name__}, not NIfTI")
    shape = img.shape
    if len(shape) == 4 and shape[3] == 1:
        pass
    elif len(shape) != 3:
        extra = f" with {shape[3]} volumes" if len(shape) == 4 else ""
        raise InputError(p, f"is {len(shape)}D{extra} (shape {tuple(shape)}); expected one 3D volume")
    if min(shape[:3]) < 2:
        raise InputError(p, f"has shape {tuple(shape)}: a 2D image, expected a 3D volume")
    hdr = img.header
    if int(hdr.get("sform_code", 0)) == 0 and int(hdr.get("qform_code", 0)) == 0:
        raise InputError(p, "has no orientation (qform_code and sform_code are both 0): "
                            "its position in space is unknown")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError(p, "affine contains NaN or Inf")
    det = float(np.linalg.det(affine[:3, :3]))
    if abs(det) < 1e-6:
        raise InputError(p, f"affine is singular (determinant {det:.3g})")
    vs = voxel_sizes(affine)
    if np.any(vs < MIN_VOXEL_MM) or np.any(vs > MAX_VOXEL_MM):
        raise InputError(p, f"implausible voxel size {tuple(np.round(vs, 4))} mm "
                            f"(expected {MIN_VOXEL_MM}-{MAX_VOXEL_MM} mm)")
    try:
        data = np.asarray(img.dataobj, dtype=np.float64 if dtype == np.float64 else np.float32)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise InputError(p, f"corrupt or truncated image data ({_short(e)})") from None
    if data.ndim == 4:
        data = data[..., 0]
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(p, f"{int(bad.sum())} voxels are NaN or Inf")
    if float(data.max()) == float(data.min()):
        raise InputError(p, f"image is constant (every voxel is {float(data.min()):g})")
    return Image(np.ascontiguousarray(data.astype(dtype, copy=False)), affine)


def read_map(path: str | os.PathLike, dtype=np.float32) -> Image:
    """One of lesioncount's own intermediate maps (no input checks: unlike an input scan it
    may be constant, e.g. a mask with no lesion). Masks are read as ``np.uint8``: a quarter
    of the float map's memory."""
    import nibabel as nib

    img = nib.load(str(path))
    return Image(np.asarray(img.dataobj, dtype=dtype), np.asarray(img.affine, float))


def read_mask(path: str | os.PathLike) -> Image | None:
    """One of lesioncount's own binary masks as uint8, None if absent."""
    return read_map(path, np.uint8) if Path(path).exists() else None


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return s[:160]


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike):
    """Yield a temporary path beside ``final``; move it into place only if the block succeeds.

    The temporary name keeps the final suffix (nibabel chooses the format from it).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes[-2:]) if final.name.endswith(".nii.gz") else final.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part" + suffix, dir=final.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); outputs get the usual permissions (readers,
    # other programs and cluster jobs of the group read them).
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_partial_files(folder: str | os.PathLike) -> int:
    """Delete the temporary files of :func:`atomic_path` that a killed run left (``.NAME.*.part*``).

    Call it only when no other run writes into ``folder``. Returns how many were removed.
    """
    n = 0
    for p in Path(folder).rglob(".*.part*"):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_image(image: Image, path: str | os.PathLike, *, dtype=None) -> Path:
    """Write an Image as NIfTI atomically. Integer label maps keep an integer type.

    ``dtype=np.int16`` on a float image stores it scaled (nibabel sets ``scl_slope``).
    """
    import nibabel as nib

    arr = image.array
    out_dtype = dtype or arr.dtype
    img = nib.Nifti1Image(arr, image.affine)
    img.set_qform(image.affine, code=1)
    img.set_sform(image.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")  # spatial units set, as the BIDS validator expects
    img.set_data_dtype(out_dtype)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_tsv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> Path:
    """Write rows as a TSV with the given columns first (extra keys follow, sorted)."""
    extra = sorted({k for r in rows for k in r} - set(columns))
    cols = list(columns) + extra
    lines = ["\t".join(cols)]
    for r in rows:
        lines.append("\t".join(_cell(r.get(c)) for c in cols))
    return write_text(path, "\n".join(lines) + "\n")


def _cell(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "n/a"
        return f"{float(v):.6g}"
    return str(v)


def read_tsv(path: str | os.PathLike) -> list[dict[str, str]]:
    """Read a TSV into dicts of strings (BIDS 'n/a' becomes '')."""
    p = Path(path)
    try:
        text = p.read_text()
    except UnicodeDecodeError:
        raise InputError(p, "is not a text file") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(p, "is empty")
    header = [h.strip() for h in lines[0].split("\t")]
    out = []
    for n, ln in enumerate(lines[1:], start=2):
        cells = ln.split("\t")
        if len(cells) != len(header):
            raise InputError(p, f"line {n} has {len(cells)} columns, header has {len(header)}")
        out.append({h: ("" if c.strip() == "n/a" else c.strip()) for h, c in zip(header, cells)})
    return out
