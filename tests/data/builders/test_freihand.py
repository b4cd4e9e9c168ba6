"""FreiHAND builder: official and TLlib splits, the STB-sized subset, labels in mm."""

import json
import random
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from hpe_jax.data.builders import freihand
from hpe_jax.hand.camera import project

DUMMY = Path(freihand.__file__).parent / "dummy_data" / "freihand"


class FreihandOfficialTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = freihand.Freihand
    EXAMPLE_DIR = str(DUMMY)
    BUILDER_CONFIG_NAMES_TO_TEST = ["official"]
    SPLITS = {"train": 16, "test": 2}  # 4 poses x 4 versions; evaluation_xyz.json has 2


class FreihandTllibTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = freihand.Freihand
    EXAMPLE_DIR = str(DUMMY)
    BUILDER_CONFIG_NAMES_TO_TEST = ["tllib"]
    SPLITS = {"train": 13, "test": 3}  # test = min(int(0.2 * 16), 3200)


def test_tllib_split_matches_seeded_global_shuffle():
    # TLlib: samples = gs + auto + sample + hom; random.seed(42); random.shuffle(samples).
    n = 32560
    samples = [(k, i) for k in (0, 3, 2, 1) for i in range(n)]
    random.seed(42)
    random.shuffle(samples)
    train, test = freihand.common.tllib_split(len(samples))
    items = [(k, i) for k in freihand.TLLIB_VERSION_ORDER for i in range(n)]
    assert len(test) == 3200
    assert [items[p] for p in test] == samples[:3200]
    assert [items[p] for p in train] == samples[3200:]


def test_subset_is_seeded_ordered_and_sized():
    items = list(range(100))
    sub = freihand.subset(items, 15)
    assert len(sub) == 15 and sub == sorted(sub)
    assert sub == freihand.subset(items, 15)
    assert freihand.subset(items, None) == items and freihand.subset(items, 500) == items
    assert freihand.Freihand.builder_configs["tllib_stb_size"].train_subset == 15000


def test_subset_config_and_labels(tmp_path):
    config = freihand.FreihandConfig(name="small", train_subset=5)
    builder = freihand.Freihand(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY))
    )
    train = list(tfds.as_numpy(builder.as_dataset(split="train")))
    assert len(train) == 5
    xyz = np.array(json.loads((DUMMY / "training_xyz.json").read_text()))
    for ex in train:
        idx = int(ex["id"].decode().split("/")[1]) % 4
        np.testing.assert_allclose(ex["keypoints_3d"], xyz[idx] * 1000.0, rtol=1e-5)
        np.testing.assert_allclose(np.asarray(project(ex["keypoints_3d"], ex["K"])),
                                   ex["keypoints_2d"], atol=1e-2)
        assert ex["hand_side"] == 0 and ex["visibility"].all()
