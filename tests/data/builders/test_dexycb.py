"""DexYCB builder: s0 splits, frames without a hand skipped, left hands mirrored with depth."""

import io
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hpe_jax.data.builders import dexycb

DUMMY = Path(dexycb.__file__).parent / "dummy_data" / "dexycb"


class DexycbTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = dexycb.Dexycb
    EXAMPLE_DIR = str(DUMMY)
    # train: subjects 1 and 3 give sequences 0-3 (5 and 4 valid frames: one frame has no hand),
    # the 8 others one sequence each; validation: subject 1 seq 4; test: subject 3 seq 4.
    SPLITS = {"train": 17, "validation": 2, "test": 2}


def test_left_hand_mirrored_with_depth(tmp_path):
    builder = dexycb.Dexycb(data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY))
    )
    test = list(tfds.as_numpy(builder.as_dataset(split="test")))
    assert all(ex["hand_side"] == 1 for ex in test)  # the dummy's test sequence is left-handed
    ex = min(test, key=lambda e: e["id"])
    subject, seq, serial, frame = ex["id"].decode().split("/")
    cam = DUMMY / subject / seq / serial
    depth = np.asarray(Image.open(cam / f"aligned_depth_to_color_{frame}.png"))
    np.testing.assert_array_equal(ex["depth"], depth[:, ::-1].astype(np.float32))
    with np.load(io.BytesIO((cam / f"labels_{frame}.npz").read_bytes())) as npz:
        xyz = npz["joint_3d"][0] * 1000.0
    np.testing.assert_allclose(ex["keypoints_3d"], xyz * np.array([-1.0, 1.0, 1.0]), atol=1e-3)
