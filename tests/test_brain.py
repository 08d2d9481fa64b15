"""Brain extraction on skull-stripped and whole-head synthetic heads, any grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from lesioncount.brain import brain_mask, brain_surface_distance, csf_mask, head_mask
from lesioncount.config import BrainConfig
from lesioncount.errors import InputError
from lesioncount.image import Image, apply_affine, resample

SHARED = Path(__file__).parents[1] / ".." / "shared" / "data" / "open_ms_data"


# ----------------------------------------------------------------------------- fixtures


def template_path() -> Path:
    import nilearn

    return (Path(nilearn.__file__).parent / "datasets" / "data"
            / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")


def load_template(spacing_mm: float = 2.0) -> Image:
    """The MNI 2009a T1 template (skull-stripped, 0-255) on an isotropic grid."""
    import nibabel as nib

    p = template_path()
    if not p.is_file():
        pytest.skip(f"MNI template not found at {p} (nilearn wheel data)")
    n = nib.load(str(p))
    img = Image(np.asarray(n.dataobj).astype(np.float32), n.affine)
    if spacing_mm == 1.0:
        return img
    return resample(img, grid_like(img, (spacing_mm,) * 3), interpolation="linear")


def grid_like(img: Image, spacing, rotation=None, pad_mm: float = 0.0) -> Image:
    """An empty grid with ``spacing`` (and an optional rotation of its axes) centred on
    ``img``'s field of view, enlarged by ``pad_mm`` on each side."""
    aff = np.diag(list(spacing) + [1.0]).astype(float)
    if rotation is not None:
        aff[:3, :3] = rotation @ aff[:3, :3]
    ext = np.asarray(img.shape) * img.spacing + 2 * pad_mm
    shape = tuple(int(np.ceil(e / s)) for e, s in zip(ext, spacing))
    centre = img.world((np.asarray(img.shape) - 1) / 2)
    aff[:3, 3] = centre - aff[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return Image(np.zeros(shape, np.uint8), aff)


def rotation_matrix(deg_x: float, deg_y: float, deg_z: float) -> np.ndarray:
    ax, ay, az = np.deg2rad([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


# Layers outside the brain, outward (thickness mm, pre-contrast value, post-contrast value),
# values on the template's 0-255 scale (WM ~230, GM ~150, CSF ~30).
HEAD_LAYERS = (
    ("csf", 2.5, 30.0, 30.0),
    ("dura", 1.0, 60.0, 260.0),       # enhances after gadolinium
    ("inner_table", 3.0, 15.0, 15.0),
    ("diploe", 3.0, 150.0, 170.0),
    ("outer_table", 2.0, 15.0, 15.0),
    ("scalp_fat", 4.0, 290.0, 290.0),  # fat: brighter than white matter on T1
    ("skin", 1.5, 120.0, 130.0),
)


def whole_head(brain: Image, *, post: bool, noise: float = 4.0, seed: int = 0,
               pad_mm: float = 24.0) -> tuple[Image, np.ndarray]:
    """A whole-head T1 (pre or post contrast) built around a skull-stripped brain.

    The brain (``brain.array > 0``, the truth) is wrapped in CSF, dura (bright after
    contrast), inner table, diploe, outer table, scalp fat and skin, each layer at a
    distance (mm) from the brain's smoothed outer envelope; after contrast a superior
    sagittal sinus (bright tube in the dura at the vertex midline) is added. Returns the
    image on an enlarged copy of the brain's grid and the truth mask on that grid.
    """
    grid = grid_like(brain, brain.spacing, pad_mm=pad_mm)
    b = resample(brain, grid, interpolation="linear").array
    truth = b > 0
    sp = grid.spacing
    envelope = ndi.binary_fill_holes(truth)
    d = ndi.distance_transform_edt(~envelope, sampling=sp)
    out = b.copy()
    edge = 0.0
    for _, thick, pre_v, post_v in HEAD_LAYERS:
        shell = ~truth & (d > edge) & (d <= edge + thick)
        out[shell] = post_v if post else pre_v
        edge += thick
    if post:
        # superior sagittal sinus: a 6 mm tube in the dura/inner table along y at x = 0
        xyz = apply_affine(grid.affine, np.indices(grid.shape).transpose(1, 2, 3, 0))
        top = np.where(truth.any(axis=(0, 1)))[0].max()
        z_top = apply_affine(grid.affine, np.array([0, 0, top]))[2]
        r = np.hypot(xyz[..., 0], xyz[..., 2] - (z_top + 3.5))
        out[(r < 3.0) & ~truth & (d <= 7.0)] = 300.0
    rng = np.random.default_rng(seed)
    out = out + rng.normal(0, noise, out.shape)
    return grid.like(np.clip(out, 0, None).astype(np.float32)), truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def on_grid(img: Image, truth: np.ndarray, grid: Image) -> tuple[Image, np.ndarray]:
    """Resample an image (linear) and its truth mask (partial volume > 0.5) onto ``grid``."""
    im = resample(img, grid, interpolation="linear")
    tr = resample(img.like(truth.astype(np.float32)), grid, interpolation="linear").array > 0.5
    return im, tr


@pytest.fixture(scope="module")
def template2() -> Image:
    return load_template(2.0)


# ------------------------------------------------------------------------------- tests


def test_skull_stripped_template_is_its_foreground(template2):
    m = brain_mask(template2)
    truth = template2.array > 0
    assert m.dtype == bool and m.shape == template2.shape
    assert dice(m, truth) >= 0.99


@pytest.mark.parametrize("post", [False, True])
def test_whole_head_1mm_like_grid(template2, post):
    head, truth = whole_head(template2, post=post)
    m = brain_mask(head)
    assert dice(m, truth) >= 0.95
    # the bright scalp and the enhancing dura are outside the mask
    d_out = ndi.distance_transform_edt(~truth, sampling=head.spacing)
    assert (m & (d_out > 3.5)).sum() < 0.002 * truth.sum()


def test_whole_head_anisotropic_oblique_grid(template2):
    head, truth = whole_head(template2, post=True)
    grid = grid_like(head, (2.0, 2.0, 3.0), rotation=rotation_matrix(12, -8, 20))
    im, tr = on_grid(head, truth, grid)
    assert im.spacing[2] == pytest.approx(3.0)
    m = brain_mask(im)
    assert dice(m, tr) >= 0.95


def test_whole_head_differs_from_foreground(template2):
    """The whole-head path is really taken: the head mask alone would score badly."""
    head, truth = whole_head(template2, post=True)
    assert dice(head_mask(head), truth) < 0.8


def test_surface_distance_in_mm_on_anisotropic_grid():
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    m = np.zeros((40, 40, 20), bool)
    m[5:35, 5:35, 3:17] = True  # z extent 14 slices = 42 mm
    d = brain_surface_distance(m, aff)
    assert d[20, 20, 10] == pytest.approx(min(15.0, 21.0), abs=1.01)  # nearest face is in x/y
    assert d[20, 20, 3] == pytest.approx(3.0)  # first slice: one 3 mm step to the outside
    assert d[5, 20, 10] == pytest.approx(1.0)
    assert (d[~m] == 0).all()
    m2 = np.zeros_like(m)
    m2[:, :, :] = True  # touches the grid's edge: bounded there
    assert brain_surface_distance(m2, aff).max() < 61


def test_csf_mask_finds_ventricles(template2):
    m = brain_mask(template2)
    csf = csf_mask(template2, m)
    assert csf.sum() > 0
    # ventricles are dark on T1 and deep: all chosen voxels are darker than the WM median
    wm = np.median(template2.array[m & (template2.array > 200)])
    assert template2.array[csf].max() < wm
    assert not (csf & (brain_surface_distance(m, template2.affine) < 8.0)).any()


def test_empty_image_is_an_input_error():
    img = Image(np.zeros((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(InputError):
        brain_mask(img)


@pytest.mark.skipif(not (SHARED / "patient07" / "T1POST.nii.gz").is_file(),
                    reason="shared open_ms_data not present")
def test_real_skull_stripped_post_is_its_foreground():
    import nibabel as nib

    n = nib.load(str(SHARED / "patient07" / "T1POST.nii.gz"))
    img = Image(np.asarray(n.dataobj, dtype=np.float32)[::2, ::2, ::2],
                n.affine @ np.diag([2.0, 2.0, 2.0, 1.0]))
    m = brain_mask(img)
    fg = img.array > 0
    assert dice(m, fg) >= 0.97


@pytest.mark.parametrize("post", [False, True])
def test_phantom_whole_head(post):
    """The phantom package's whole head (another author's layers, veins, sinuses, falx)."""
    anatomy = pytest.importorskip("lesioncount.phantom.anatomy")
    an = anatomy.template_anatomy(np.random.default_rng(0), whole_head=True, step_mm=2)
    img = Image((an.post if post else an.pre).astype(np.float32), an.affine)
    m = brain_mask(img)
    assert dice(m, an.brain) >= 0.95


@pytest.mark.parametrize("seed", [100, 102])
def test_phantom_whole_head_as_acquired_thick_slices(seed):
    """The phantom study's whole head as its scanner sees it: head-shape affine, motion, an
    oblique 1x1x3 mm grid, bias field, gain and Rician noise. Before the neck cut these
    post-contrast masks leaked into the neck and skull base (Dice 0.87, volume +30 %)."""
    anatomy = pytest.importorskip("lesioncount.phantom.anatomy")
    from lesioncount.phantom import acquisition as acq
    from lesioncount.phantom import study

    rng = np.random.default_rng(seed)
    an = anatomy.template_anatomy(rng, whole_head=True, step_mm=1)
    centre, fov = study.head_frame(an)
    m = acq.random_rigid(rng, 10, 10, centre) @ acq.random_affine(rng, centre)
    grid = acq.scanner_grid(centre, fov, np.array([1.0, 1.0, 3.0]), "LPS")
    ax = acq.slice_axis(grid)
    post = acq.acquire(Image(an.post, an.affine), m, grid, thick_axis=ax, thickness=3)
    truth = acq.acquire(Image(an.brain.astype(np.float32), an.affine), m, grid,
                        thick_axis=ax, thickness=3) > 0.5
    img = study._finish(rng, post, acq.bias_field(rng, grid.shape), 900.0,
                        an.wm_level_post * 900.0 / 25.0)
    mask = brain_mask(Image(img, grid.affine), BrainConfig())
    assert dice(mask, truth) >= 0.93
    assert mask.sum() < 1.15 * truth.sum()


def test_boxed_dilation_erosion_closing_equal_the_whole_grid_ones():
    """brain.py dilates and erodes on the mask's box only; the result must be that of the
    distance transform over the whole grid (grid edges counting as outside for erosion)."""
    from lesioncount.brain import _close, _dilate, _erode

    def dilate_ref(m, r, sp):
        return m | (ndi.distance_transform_edt(~m, sampling=sp) <= r)

    def erode_ref(m, r, sp):
        return ndi.distance_transform_edt(np.pad(m, 1), sampling=sp)[1:-1, 1:-1, 1:-1] > r

    def close_ref(m, r, sp):
        pad = [int(np.ceil(r / s)) + 1 for s in sp]
        p = np.pad(m, [(q, q) for q in pad])
        d = dilate_ref(p, r, sp)
        e = ~dilate_ref(~d, r, sp)
        return e[tuple(slice(q, -q) for q in pad)] | m

    rng = np.random.default_rng(5)
    for sp in [(1.0, 1.0, 1.0), (1.0, 1.2, 3.0)]:
        sp = np.asarray(sp)
        for trial in range(4):
            m = ndi.gaussian_filter(rng.normal(size=(40, 36, 24)), 2.0) > 0.12
            m[:, :, :3] = False
            if trial % 2:  # touching a face of the grid, as a head cut by the field of view
                m[:6, 10:20, 5:15] = True
            for r in (2.0, 4.5):
                np.testing.assert_array_equal(_dilate(m, r, sp), dilate_ref(m, r, sp))
                np.testing.assert_array_equal(_erode(m, r, sp), erode_ref(m, r, sp))
                np.testing.assert_array_equal(_close(m, r, sp), close_ref(m, r, sp))
