"""H3D builder: one-handed subset, TLlib's split, labels passed through in mm."""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from hpe_jax.data.builders import h3d

DUMMY = Path(h3d.__file__).parent / "dummy_data" / "h3d"


class H3dTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = h3d.H3d
    EXAMPLE_DIR = str(DUMMY)
    SPLITS = {"train": 8, "test": 2}  # 10 one-handed samples; 2 with objects are dropped


def test_split_is_tllibs_and_labels_kept(tmp_path):
    samples = json.loads((DUMMY / "H3D_crop" / "annotation.json").read_text())
    one = [s for s in samples if s["without_object"] == 1]
    random.seed(42)
    random.shuffle(one)
    builder = h3d.H3d(data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY))
    )
    test = {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="test"))}
    assert sorted(test) == sorted(s["name"] for s in one[:2])
    for s in one[:2]:
        ex = test[s["name"]]
        np.testing.assert_allclose(ex["keypoints_3d"], s["keypoint3d"], rtol=1e-5)
        np.testing.assert_allclose(ex["keypoints_2d"], s["keypoint2d"], rtol=1e-5)


@pytest.mark.parametrize("factor,expected", [(1.0, 1.0), (0.1, 10.0), (0.001, 1000.0)])
def test_units_are_read_from_the_hand_size(factor, expected):
    hand = np.zeros((3, 21, 3))
    hand[:, 9, 1] = 95.0 * factor  # wrist -> middle MCP of an adult hand
    assert h3d.mm_per_unit(hand) == expected
