"""The one lesion definition: connectivity, minimum size in mm^3, measures in world mm."""
import numpy as np
import pytest

from lesioncount.config import LesionConfig, PipelineConfig, TrackingConfig
from lesioncount.errors import ConfigError
from lesioncount.image import Image
from lesioncount.lesions import components, label_lesions, measure

ANISO = np.array([[0, 0, -1.0, 50], [0.8, 0, 0, -20], [0, 3.0, 0, 10], [0, 0, 0, 1]])


def test_diagonal_contact_is_one_lesion_with_26_connectivity():
    m = np.zeros((6, 6, 6), bool)
    m[1, 1, 1] = m[2, 2, 2] = True
    assert components(m)[1] == 1
    assert components(m, LesionConfig(connectivity=1))[1] == 2


def test_minimum_size_is_in_mm3_not_voxels():
    m = np.zeros((20, 20, 20), bool)
    m[2:4, 2:4, 2:4] = True      # 8 voxels
    m[10:13, 10:13, 10:13] = True  # 27 voxels
    iso = np.eye(4)
    assert label_lesions(m, iso).max() == 1           # 8 mm3 < 10 mm3: dropped
    big = np.diag([1.0, 1.0, 3.0, 1.0])
    assert label_lesions(m, big).max() == 2           # 24 mm3: kept
    assert label_lesions(m, iso, LesionConfig(min_volume_mm3=5)).max() == 2


def test_labels_are_sequential_and_deterministic():
    m = np.zeros((30, 10, 10), bool)
    for x in (2, 12, 22):
        m[x:x + 4, 3:7, 3:7] = True
    lab = label_lesions(m, np.eye(4))
    assert sorted(np.unique(lab)) == [0, 1, 2, 3]
    assert lab[3, 4, 4] == 1 and lab[23, 4, 4] == 3


def test_measure_volume_and_world_centroid_on_anisotropic_affine():
    lab = np.zeros((10, 12, 8), np.int32)
    lab[2:5, 3:6, 1:4] = 1  # 27 voxels, centre (3, 4, 2)
    im = Image(lab, ANISO)
    (st,) = measure(im, enhancement=np.full(lab.shape, 2.0))
    assert st.volume_mm3 == pytest.approx(27 * 0.8 * 3.0 * 1.0)
    np.testing.assert_allclose(st.centroid_ras, im.world(np.array([3.0, 4.0, 2.0])))
    assert st.max_enhancement == 2.0


def test_config_round_trip_and_validation():
    cfg = PipelineConfig(tracking=TrackingConfig(convention="any_earlier"))
    back = PipelineConfig.from_dict(cfg.to_dict())
    assert back == cfg
    with pytest.raises(ConfigError):
        PipelineConfig(detector="magic")
    with pytest.raises(ConfigError):
        PipelineConfig.from_dict({"tracking": {"no_such_field": 1}})
