"""Reading scans: good ones in every on-disk form, and a corpus of bad ones."""
import gzip

import nibabel as nib
import numpy as np
import pytest

from lesioncount.errors import InputError
from lesioncount.image import Image, from_sitk, resample, to_sitk
from lesioncount.io import atomic_path, load_image, read_tsv, save_image, write_tsv

AFF = np.array([[-0.9, 0, 0, 90], [0, 0, 3.0, -120], [0, 1.1, 0, -60], [0, 0, 0, 1]])


def write(path, arr, aff=AFF, dtype=None, slope=None):
    img = nib.Nifti1Image(arr, aff)
    if dtype is not None:
        img.set_data_dtype(dtype)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    nib.save(img, str(path))
    return path


@pytest.fixture
def vol():
    return np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10)


@pytest.mark.parametrize("name", ["a.nii", "a.nii.gz"])
def test_reads_nii_and_niigz_with_affine(tmp_path, vol, name):
    im = load_image(write(tmp_path / name, vol))
    assert im.shape == (8, 9, 10)
    np.testing.assert_allclose(im.affine, AFF)
    np.testing.assert_allclose(im.array, vol)
    assert im.voxel_volume == pytest.approx(0.9 * 3.0 * 1.1)


def test_scl_slope_is_applied(tmp_path, vol):
    p = tmp_path / "s.nii.gz"
    img = nib.Nifti1Image((vol / 7).astype(np.float32), AFF)
    img.set_data_dtype(np.int16)  # nibabel picks a scl_slope to fit the range
    nib.save(img, str(p))
    raw = nib.load(str(p))
    assert raw.dataobj.slope != 1.0
    np.testing.assert_allclose(load_image(p).array, vol / 7, atol=float(raw.dataobj.slope))


def test_single_volume_4d_is_accepted(tmp_path, vol):
    assert load_image(write(tmp_path / "x.nii.gz", vol[..., None])).shape == (8, 9, 10)


def put(path, data):
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def _singular(tmp_path, vol):
    p = tmp_path / "sing.nii.gz"
    img = nib.Nifti1Image(vol, None)
    img.header.set_sform(np.diag([1.0, 0.0, 1.0, 1.0]), code=2)
    nib.save(img, str(p))
    return p


def _truncated(tmp_path, vol):
    p = write(tmp_path / "t.nii.gz", np.random.default_rng(0).random((40, 40, 40)).astype(np.float32))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _bad_header_size(tmp_path, vol):
    p = tmp_path / "h.nii"
    write(p, vol)
    data = p.read_bytes()
    p.write_bytes(data[:200])
    return p


BAD = {
    "missing": (lambda t, v: t / "nope.nii.gz", "not found"),
    "zero bytes": (lambda t, v: put(t / "z.nii.gz", b""), "empty"),
    "truncated gz": (_truncated, "truncated"),
    "truncated header": (_bad_header_size, ""),
    "not nifti": (lambda t, v: put(t / "n.nii.gz", gzip.compress(b"hello world " * 100)), ""),
    "text file": (lambda t, v: put(t / "n.nii", "not an image at all\n" * 30), ""),
    "4D": (lambda t, v: write(t / "f.nii.gz", np.stack([v, v], -1)), "4D with 2 volumes"),
    "2D": (lambda t, v: write(t / "f.nii.gz", v[:, :, :1]), "2D"),
    "NaN": (lambda t, v: write(t / "f.nii.gz", np.where(v > 100, np.nan, v).astype(np.float32)), "NaN"),
    "Inf": (lambda t, v: write(t / "f.nii.gz", np.where(v > 100, np.inf, v).astype(np.float32)), "NaN or Inf"),
    "singular affine": (_singular, "singular"),
    "absurd voxel": (lambda t, v: write(t / "f.nii.gz", v, np.diag([1.0, 1.0, 50.0, 1.0])), "voxel size"),
    "constant": (lambda t, v: write(t / "f.nii.gz", np.ones_like(v)), "constant"),
    "wrong extension": (lambda t, v: put(t / "x.img", b"1"), "NIfTI"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_line_error_naming_the_file(tmp_path, vol, case):
    make, words = BAD[case]
    p = make(tmp_path, vol)
    with pytest.raises(InputError) as ei:
        load_image(p)
    msg = str(ei.value)
    assert str(p) in msg and "\n" not in msg
    assert words.lower() in msg.lower()


def test_missing_affine_is_rejected(tmp_path, vol):
    p = tmp_path / "noaff.nii.gz"
    img = nib.Nifti1Image(vol, AFF)
    img.set_qform(None, code=0)
    img.set_sform(None, code=0)
    nib.save(img, str(p))
    with pytest.raises(InputError, match="no orientation"):
        load_image(p)


def test_save_is_atomic_and_round_trips_labels(tmp_path):
    lab = np.zeros((5, 6, 7), np.int16)
    lab[1:3, 2:4, 3:5] = 3
    p = save_image(Image(lab, AFF), tmp_path / "l.nii.gz")
    back = nib.load(str(p))
    assert np.array_equal(np.asarray(back.dataobj), lab) and back.get_data_dtype() == np.int16
    assert not list(tmp_path.glob(".*part*"))
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "never.tsv") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert not (tmp_path / "never.tsv").exists() and not list(tmp_path.glob(".*part*"))


def test_tsv_round_trip(tmp_path):
    write_tsv(tmp_path / "a.tsv", [{"a": 1, "b": None, "c": True}], ["a", "b"])
    assert read_tsv(tmp_path / "a.tsv") == [{"a": "1", "b": "", "c": "true"}]


def test_sitk_conversion_keeps_world_positions():
    arr = np.zeros((10, 12, 8), np.float32)
    arr[2, 3, 4] = 1
    im = Image(arr, AFF)
    s = to_sitk(im)
    world_lps = np.array(s.TransformIndexToPhysicalPoint((2, 3, 4)))
    world_ras = im.world(np.array([2, 3, 4]))
    np.testing.assert_allclose(world_lps * [-1, -1, 1], world_ras)
    back = from_sitk(s)
    np.testing.assert_allclose(back.affine, AFF)
    assert np.array_equal(back.array, arr)
    # resampling onto a grid of another orientation keeps the dot at the same world point
    other = Image(np.zeros((30, 30, 30), np.uint8),
                  np.array([[1.0, 0, 0, 70], [0, -1.0, 0, -95], [0, 0, 1.0, -70], [0, 0, 0, 1]]))
    r = resample(im, other, interpolation="nearest")
    ijk = np.argwhere(r.array > 0)
    assert len(ijk) >= 1
    np.testing.assert_allclose(other.world(ijk[0]), world_ras, atol=1.6)


def test_resample_onto_the_same_grid_is_the_identity():
    from lesioncount.image import Image, resample

    rng = np.random.default_rng(0)
    aff = np.diag([0.9, 1.1, 3.0, 1.0])
    aff[:3, 3] = [10, -5, 2]
    img = Image(rng.random((6, 7, 5)).astype(np.float64), aff)
    out = resample(img, img)
    assert out.array.dtype == np.float32 and np.array_equal(out.array, img.array.astype(np.float32))
    lab = Image((img.array > 0.5).astype(np.uint8), aff)
    out = resample(lab, img, interpolation="nearest")
    assert out.array.dtype == np.int32 and np.array_equal(out.array, lab.array)
