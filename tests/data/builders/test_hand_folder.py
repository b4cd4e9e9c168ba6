"""hand_folder builder: the documented JSON schema, joint reordering, defaults, mirroring."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpe_jax.data.builders import common, hand_folder
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, to_canonical

DUMMY = Path(hand_folder.__file__).parent / "dummy_data" / "hand_folder"


class HandFolderTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = hand_folder.HandFolder
    EXAMPLE_DIR = str(DUMMY)
    SPLITS = {"train": 3, "test": 2}


def _build(manual_dir, data_dir, split):
    builder = hand_folder.HandFolder(data_dir=str(data_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
    )
    return {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_joint_order_defaults_and_mirroring(tmp_path):
    spec = json.loads((DUMMY / "train.json").read_text())
    out = _build(DUMMY, tmp_path, "train")
    perm = DATASET_TO_CANONICAL[spec["joint_order"]]
    for sample in spec["samples"]:
        ex = out[sample["id"]]
        xyz = to_canonical(np.array(sample["keypoints_3d"]), perm)
        if sample["hand_side"] == "left":
            xyz = xyz * np.array([-1.0, 1.0, 1.0])
        np.testing.assert_allclose(ex["keypoints_3d"], xyz, atol=1e-3)
        assert ex["hand_side"] == (sample["hand_side"] == "left")
    # Sample 0 gives its own visibility (last source joint hidden); the others default to in-image.
    vis = to_canonical(np.array(spec["samples"][0]["visibility"])[:, None], perm)[:, 0]
    np.testing.assert_array_equal(out["train/0"]["visibility"], vis)
    assert out["train/1"]["visibility"].all()


def test_bad_sample_names_file_and_key(tmp_path):
    spec = json.loads((DUMMY / "test.json").read_text())
    del spec["samples"][1]["K"]
    (tmp_path / "images").symlink_to(DUMMY / "images")
    (tmp_path / "test.json").write_text(json.dumps(spec))
    with pytest.raises(common.CorruptFileError, match=r"test.json sample 1: missing .*'K'"):
        _build(tmp_path, tmp_path / "data", "test")


def test_empty_folder_explains_the_format(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(common.ManualDirError, match="<split>.json"):
        _build(tmp_path, tmp_path / "data", "train")
