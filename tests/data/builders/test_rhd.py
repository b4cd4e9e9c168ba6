"""RHD builder: TFDS contract on the dummy data, plus the values a user relies on."""

from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from hpe_jax.data.builders import common, rhd
from hpe_jax.hand.camera import project
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, NUM_JOINTS, to_canonical

DUMMY = Path(rhd.__file__).parent / "dummy_data" / "rhd"
SPLIT_DIR = DUMMY / "RHD_published_v2"


class RhdTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = rhd.Rhd
    EXAMPLE_DIR = str(DUMMY)
    SPLITS = {"train": 3, "test": 2}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """{id: example} of both splits, built from the dummy data."""
    builder = rhd.Rhd(data_dir=str(tmp_path_factory.mktemp("tfds")))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY))
    )
    out = {}
    for split in ("train", "test"):
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            out[ex["id"].decode()] = ex
    return out


def _source(sample_id):
    split, idx = sample_id.split("/")
    folder = SPLIT_DIR / split
    annos = common.read_pickle(common.epath.Path(folder / f"anno_{split}.pickle"))
    png = lambda kind: np.asarray(Image.open(folder / kind / f"{idx}.png"))
    return annos[int(idx)], png("color"), png("depth"), png("mask")


def test_depth_follows_the_official_formula_in_mm(examples):
    for sample_id, ex in examples.items():
        _, _, depth_png, _ = _source(sample_id)
        expected = 5.0 * (depth_png[..., 0] * 256.0 + depth_png[..., 1]) / 65535 * 1000.0
        if ex["hand_side"] == 1:  # left: stored mirrored
            expected = expected[:, ::-1]
        np.testing.assert_allclose(ex["depth"], expected, rtol=1e-6)
        assert ex["depth"].max() < 5000.0 + 1e-3


def test_uv_is_the_projection_of_xyz_within_one_pixel(examples):
    for ex in examples.values():
        uv = np.asarray(project(ex["keypoints_3d"], ex["K"]))
        assert np.abs(uv - ex["keypoints_2d"]).max() < 1.0


def test_units_are_millimetres(examples):
    for ex in examples.values():
        bone = np.linalg.norm(ex["keypoints_3d"][9] - ex["keypoints_3d"][0])  # wrist-middle MCP
        assert 50.0 < bone < 150.0
        assert ex["keypoints_3d"][:, 2].min() > 100.0


def test_dominant_hand_is_chosen_and_left_hands_are_mirrored(examples):
    # Dummy frames: training 0 right, 1 left, 2 right; evaluation 0 left, 1 right dominant.
    expected = {"training/00000": 0, "training/00001": 1, "training/00002": 0,
                "evaluation/00000": 1, "evaluation/00001": 0}
    assert {k: int(v["hand_side"]) for k, v in examples.items()} == expected
    perm = DATASET_TO_CANONICAL["rhd"]
    for sample_id, ex in examples.items():
        anno, color, _, labels = _source(sample_id)
        left = ex["hand_side"] == 1
        offset = 0 if left else NUM_JOINTS
        xyz = to_canonical(anno["xyz"][offset:offset + NUM_JOINTS] * 1000.0, perm)
        uv = to_canonical(anno["uv_vis"][offset:offset + NUM_JOINTS, :2], perm)
        vis = to_canonical(anno["uv_vis"][offset:offset + NUM_JOINTS, 2:], perm)[:, 0] > 0.5
        width = color.shape[1]
        if left:
            xyz = xyz * np.array([-1.0, 1.0, 1.0])
            uv = np.stack([width - 1 - uv[:, 0], uv[:, 1]], -1)
            color, labels = color[:, ::-1], labels[:, ::-1]
        np.testing.assert_allclose(ex["keypoints_3d"], xyz, atol=1e-3)
        np.testing.assert_allclose(ex["keypoints_2d"], uv, atol=1e-3)
        np.testing.assert_array_equal(ex["visibility"], vis)
        np.testing.assert_array_equal(ex["image"], color)
        lo, hi = (2, 17) if left else (18, 33)
        np.testing.assert_array_equal(ex["mask"][..., 0], (labels >= lo) & (labels <= hi))
        assert not ex["visibility"].all()  # the dummy marks occluded joints
        box = ex["bbox"]
        assert box[0] == ex["keypoints_2d"][ex["visibility"], 0].min()
        assert box[3] == ex["keypoints_2d"][ex["visibility"], 1].max()


def test_mirrored_k_keeps_projection_consistent(examples):
    ex = examples["training/00001"]
    anno, color, _, _ = _source("training/00001")
    assert ex["K"][0, 2] == pytest.approx(color.shape[1] - 1 - anno["K"][0, 2], abs=1e-4)


def test_partial_manual_dir_names_the_missing_files(tmp_path):
    (tmp_path / "RHD_published_v2" / "training" / "color").mkdir(parents=True)
    builder = rhd.Rhd(data_dir=str(tmp_path / "data"))
    with pytest.raises(common.ManualDirError, match="anno_evaluation.pickle") as err:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path))
        )
    assert "lmb.informatik.uni-freiburg.de" in str(err.value)


def test_corrupt_image_names_the_file(tmp_path):
    import shutil

    shutil.copytree(DUMMY, tmp_path / "rhd")
    bad = tmp_path / "rhd" / "RHD_published_v2" / "evaluation" / "color" / "00001.png"
    bad.write_bytes(b"not a png")
    builder = rhd.Rhd(data_dir=str(tmp_path / "data"))
    with pytest.raises(common.CorruptFileError, match="00001.png"):
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "rhd"))
        )
