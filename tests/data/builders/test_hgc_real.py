"""hgc_real builder: the split protocol, units and intrinsics on a fixture of the set's layout, and
on the real files in ../shared/data/hgc_real where they are present."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from hgc_fixture import REAL_DIR, write_hgc_fixture

from hpe_jax.data import prepare
from hpe_jax.data.builders import hgc_real


def _examples(data_dir, split):
    builder = tfds.builder("hgc_real", data_dir=str(data_dir))
    return {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_split_of_follows_the_protocol():
    assert [hgc_real.split_of(i, True) for i in range(5)] == ["val", "test", "test", "test",
                                                              "val"]
    assert hgc_real.split_of(8, False) == "val" and hgc_real.split_of(9, False) == "pool"


def test_crop_intrinsics_move_the_frame_camera_to_the_crop():
    K = hgc_real.crop_intrinsics(np.array([900.0, 910.0, 640.0, 360.0]),
                                 np.array([400, 200, 128, 128]), 256)
    np.testing.assert_allclose(K, [[1800.0, 0, 480.0], [0, 1820.0, 320.0], [0, 0, 1]])
    # A frame point and the same point seen through the crop: crop pixel = (frame - xy) * 2.
    xyz = np.array([10.0, -20.0, 400.0])
    u = 900.0 * xyz[0] / xyz[2] + 640.0
    np.testing.assert_allclose((K @ xyz)[0] / xyz[2], (u - 400) * 2)


def test_fixture_builds_val_test_and_an_unlabelled_pool(tmp_path):
    rows = write_hgc_fixture(tmp_path / "set", n=12, withheld=(2, 5, 6, 9, 10, 11), size=64)
    prepare.prepare_folder_target("hgc_real", str(tmp_path / "set"), str(tmp_path / "data"))
    info = tfds.builder("hgc_real", data_dir=str(tmp_path / "data")).info
    assert {k: v.num_examples for k, v in info.splits.items()} == {"val": 3, "test": 3,
                                                                    "pool": 6}
    val = _examples(tmp_path / "data", "val")
    assert sorted(val) == ["00000", "00004", "00008"]
    ex, row = val["00004"], rows[4]
    np.testing.assert_allclose(ex["keypoints_3d"], row["pose_cm"] * 10.0, rtol=1e-6)  # mm
    np.testing.assert_allclose(ex["K"], hgc_real.crop_intrinsics(row["cam"], row["bbox"], 64),
                               rtol=1e-6)
    uvw = ex["keypoints_3d"] @ ex["K"].T
    np.testing.assert_allclose(ex["keypoints_2d"], uvw[:, :2] / uvw[:, 2:], atol=1e-3)
    # The box is the photo: the pipeline's margin grows it back to the whole image.
    np.testing.assert_allclose(ex["bbox"], hgc_real.photo_box(64, 64))
    side = (ex["bbox"][2] - ex["bbox"][0]) * 1.4
    np.testing.assert_allclose(side, 64.0, rtol=1e-5)
    pool = _examples(tmp_path / "data", "pool")
    assert sorted(pool) == ["00002", "00005", "00006", "00009", "00010", "00011"]
    assert all(not p["visibility"].any() and not p["keypoints_3d"].any() for p in pool.values())
    assert sorted(_examples(tmp_path / "data", "test")) == ["00001", "00003", "00007"]


def test_withheld_test_labels_leave_no_test_split(tmp_path):
    write_hgc_fixture(tmp_path / "set", n=8, withheld=(1, 2, 3, 5, 6, 7), size=32)
    prepare.prepare_folder_target("hgc_real", str(tmp_path / "set"), str(tmp_path / "data"))
    splits = tfds.builder("hgc_real", data_dir=str(tmp_path / "data")).info.splits
    assert sorted(splits) == ["pool", "val"]


def test_a_missing_file_is_one_clear_error_before_any_work(tmp_path):
    write_hgc_fixture(tmp_path / "set", n=4, withheld=(), size=32)
    os.remove(tmp_path / "set" / "pose_gt.mat")
    with pytest.raises(FileNotFoundError, match=r"lacks pose_gt.mat.*hand-graph-cnn"):
        prepare.check_folder("hgc_real", str(tmp_path / "set"))
    with pytest.raises(FileNotFoundError, match=r"--config.data.image_folder=.*no such folder"):
        prepare.check_folder("hgc_real", str(tmp_path / "nowhere"))


@pytest.mark.skipif(not os.path.isdir(REAL_DIR), reason="../shared/data/hgc_real is absent")
def test_the_real_set_matches_its_own_val_json(tmp_path):
    prepare.prepare_folder_target("hgc_real", REAL_DIR, str(tmp_path / "data"))
    splits = tfds.builder("hgc_real", data_dir=str(tmp_path / "data")).info.splits
    assert splits["val"].num_examples == 146 and splits["pool"].num_examples == 437
    val = _examples(tmp_path / "data", "val")
    with open(os.path.join(REAL_DIR, "val.json")) as f:
        ref = {s["id"]: s for s in json.load(f)["samples"]}
    assert sorted(val) == sorted(ref)
    for key in ("00000", "00100", "00580"):
        np.testing.assert_allclose(val[key]["keypoints_3d"], ref[key]["keypoints_3d"],
                                   rtol=1e-5, atol=1e-3)
        np.testing.assert_allclose(val[key]["K"], ref[key]["K"], rtol=1e-5)
