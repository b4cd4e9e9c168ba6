"""HO-3D builder: OpenGL -> OpenCV, joint order, depth formula in mm."""

import pickle
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from hpe_jax.data.builders import ho3d
from hpe_jax.hand.camera import project
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, to_canonical

DUMMY = Path(ho3d.__file__).parent / "dummy_data" / "ho3d"


class Ho3dTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = ho3d.Ho3d
    EXAMPLE_DIR = str(DUMMY)
    SPLITS = {"train": 3}


def test_camera_convention_order_and_depth(tmp_path):
    builder = ho3d.Ho3d(data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY))
    )
    examples = tfds.as_numpy(builder.as_dataset(split="train"))
    ex = {e["id"].decode(): e for e in examples}["ABF10/0001"]
    meta = pickle.loads((DUMMY / "train" / "ABF10" / "meta" / "0001.pkl").read_bytes())
    xyz = to_canonical(meta["handJoints3D"] * np.array([1.0, -1.0, -1.0]) * 1000.0,
                       DATASET_TO_CANONICAL["ho3d"])
    np.testing.assert_allclose(ex["keypoints_3d"], xyz, atol=1e-3)
    assert (ex["keypoints_3d"][:, 2] > 0).all()  # in front of the OpenCV camera
    np.testing.assert_allclose(np.asarray(project(ex["keypoints_3d"], ex["K"])),
                               ex["keypoints_2d"], atol=1e-2)
    png = np.asarray(Image.open(DUMMY / "train" / "ABF10" / "depth" / "0001.png")).astype(float)
    expected = (png[..., 0] + 256.0 * png[..., 1]) * 0.00012498664727900177 * 1000.0
    np.testing.assert_allclose(ex["depth"], expected, rtol=1e-6)
