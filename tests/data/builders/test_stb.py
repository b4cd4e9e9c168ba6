"""STB builder: TFDS contract on dummy data, colour-frame labels, palm/wrist configs, mirroring."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import tensorflow_datasets as tfds

from hpe_jax.data.builders import stb
from hpe_jax.hand.camera import project
from hpe_jax.hand.skeleton import ROOT

DUMMY = Path(stb.__file__).parent / "dummy_data" / "stb"


class StbTest(tfds.testing.DatasetBuilderTestCase):
    DATASET_CLASS = stb.Stb
    EXAMPLE_DIR = str(DUMMY)
    SPLITS = {"train": 10, "test": 4}  # 10 sequences x 1 frame; B1Counting/B1Random x 2 frames


def _build(config, tmp_path):
    builder = stb.Stb(config=config, data_dir=str(tmp_path))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(DUMMY))
    )
    return {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="test"))}


def test_labels_in_colour_frame_mirrored_and_palm_or_wrist(tmp_path):
    palm = _build("palm", tmp_path / "p")
    wrist = _build("wrist", tmp_path / "w")
    assert sorted(palm) == ["B1Counting/SK_color_0", "B1Counting/SK_color_1",
                            "B1Random/SK_color_0", "B1Random/SK_color_1"]
    para = scipy.io.loadmat(DUMMY / "labels" / "B1Counting_SK.mat")["handPara"][:, :, 0].T
    ex = palm["B1Counting/SK_color_0"]
    assert ex["hand_side"] == 1  # STB shows left hands
    # Source palm (STB index 0) in the colour frame, then mirrored: x negated.
    expected_palm = stb.depth_to_color(para[0]) * np.array([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(ex["keypoints_3d"][0], expected_palm, atol=1e-3)
    # The dummy was written in the colour frame with the palm halfway wrist -> middle MCP, so the
    # README's transform must bring its labels back there: palm - mid_MCP is 0.5 (wrist - mid).
    np.testing.assert_allclose(np.asarray(project(ex["keypoints_3d"], ex["K"])),
                               ex["keypoints_2d"], atol=1e-2)
    w = wrist["B1Counting/SK_color_0"]["keypoints_3d"]
    p = ex["keypoints_3d"]
    np.testing.assert_allclose(w[0], p[ROOT] + 2.2 * (p[0] - p[ROOT]), atol=1e-3)
    np.testing.assert_allclose(w[1:], p[1:], atol=1e-4)
    assert ex["image"].shape == (480, 640, 3)
    assert ex["K"][0, 2] == pytest.approx(639 - 314.78337, abs=1e-3)


def test_depth_to_color_inverts_the_readme_transform():
    x = np.array([[10.0, -20.0, 500.0]])
    rot = stb.Rotation.from_rotvec(stb.SK_ROTVEC).as_matrix()
    np.testing.assert_allclose(stb.depth_to_color(x @ rot.T + stb.SK_T_MM), x, atol=1e-9)
