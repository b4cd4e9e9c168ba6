"""Stereo Hand Pose Tracking Benchmark (STB, Zhang et al. 2016), SK colour camera: a real target.

Reads the official layout from `manual_dir` (the folder holding `images/` and `labels/`):

    images/<seq>/SK_color_<i>.png      640x480 RGB, i = 0..1499
    labels/<seq>_SK.mat                MATLAB `handPara`, 3 x 21 x 1500, mm, depth-camera frame

for the 12 sequences B1..B6 x {Counting, Random}.

Splits (as bihand and the papers quoting 15,000 / 3,000): `test` = B1Counting + B1Random,
`train` = the other ten sequences.

Per frame (documented choices):
- 3D: the SK labels are in the depth camera's frame; they are moved to the colour camera's frame
  with the README's MATLAB convention X_color = R^T (X_depth - T), R = Rodrigues(r). 2D is the
  projection with the SK colour intrinsics (the dataset has no 2D labels).
- Joint 0: STB annotates the palm centre, not the wrist. The config picks what joint 0 holds:
  `palm` (default) keeps the palm centre as labelled, like lmb-freiburg/hand3d (whose 3D protocol
  compares palms: use 0.5 * (wrist + middle MCP) for predictions); `wrist` extrapolates a wrist
  as bihand does, mid_MCP + 2.2 * (palm - mid_MCP). Root-relative evaluation at the middle MCP
  (skeleton.ROOT) is the same for both.
- Hand side: STB shows left hands only; every frame is mirrored to a right hand and
  `hand_side` = left.
- Visibility: inside the image (STB has no occlusion labels). bbox: around the visible keypoints.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.io
import tensorflow_datasets as tfds
from etils import epath
from scipy.spatial.transform import Rotation

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, ROOT, to_canonical

SEQUENCES = tuple(f"B{b}{kind}" for b in range(1, 7) for kind in ("Counting", "Random"))
TEST_SEQUENCES = ("B1Counting", "B1Random")
# SK colour intrinsics and the depth -> colour extrinsics, from the STB README.
SK_COLOR_K = np.array(
    [[607.92271, 0.0, 314.78337], [0.0, 607.88192, 236.42484], [0.0, 0.0, 1.0]]
)
SK_ROTVEC = np.array([0.00531, -0.01196, 0.00301])
SK_T_MM = np.array([-24.0381, -0.4563, -1.2326])
WRIST_FROM_PALM = 2.2  # bihand: wrist = mid_MCP + 2.2 * (palm - mid_MCP)

INSTRUCTIONS = """\
STB (Stereo Hand Pose Tracking Benchmark) cannot be downloaded automatically.
Get it from https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset (images and labels),
extract it and pass the folder holding images/ and labels/ as --manual_dir. Expected files, for
each of the 12 sequences <seq> in B1..B6 x {Counting, Random}:
  images/<seq>/SK_color_<i>.png  (i = 0..1499)
  labels/<seq>_SK.mat            (variable handPara, 3 x 21 x 1500, mm)
"""


def depth_to_color(xyz_depth: np.ndarray) -> np.ndarray:
    """(..., 3) mm in the SK depth camera's frame -> the SK colour camera's frame."""
    rot = Rotation.from_rotvec(SK_ROTVEC).as_matrix()
    # X_color = R^T (X - T), written for row vectors: (X - T) @ R.
    return (np.asarray(xyz_depth) - SK_T_MM) @ rot


@dataclasses.dataclass
class StbConfig(tfds.core.BuilderConfig):
    """joint0: "palm" keeps STB's palm centre as joint 0; "wrist" extrapolates a wrist."""

    joint0: str = "palm"


class Stb(tfds.core.GeneratorBasedBuilder):
    """STB SK colour frames, left hands mirrored to right ones, 3D in the colour camera's frame."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "SK colour camera, canonical joints, mirrored to right hands."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    BUILDER_CONFIGS = [
        StbConfig(name="palm", description="Joint 0 = STB's palm centre (hand3d)."),
        StbConfig(name="wrist", joint0="wrist",
                  description="Joint 0 = mid_MCP + 2.2 (palm - mid_MCP) (bihand)."),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=False, with_mask=False),
            homepage="https://github.com/zhjwustc/icip17_stereo_hand_pose_dataset",
            citation="Zhang et al., 3D Hand Pose Tracking and Estimation Using Stereo Matching, "
            "arXiv:1610.07214, 2016.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = common.dataset_root(dl_manager.manual_dir, None)
        required = [f"labels/{s}_SK.mat" for s in SEQUENCES] + [f"images/{s}" for s in SEQUENCES]
        common.check_layout(root, required, INSTRUCTIONS)
        train = [s for s in SEQUENCES if s not in TEST_SEQUENCES]
        return {
            "train": self._generate_examples(root, train),
            "test": self._generate_examples(root, list(TEST_SEQUENCES)),
        }

    def _generate_examples(self, root: epath.Path, sequences: list[str]):
        perm = DATASET_TO_CANONICAL["stb"]
        for seq in sequences:
            mat_path = root / "labels" / f"{seq}_SK.mat"
            with mat_path.open("rb") as f:
                try:
                    para = scipy.io.loadmat(f)["handPara"]
                except (ValueError, KeyError, TypeError) as err:
                    raise common.CorruptFileError(
                        f"cannot read handPara from {mat_path}: {err}"
                    ) from err
            for i in range(para.shape[-1]):
                xyz = to_canonical(depth_to_color(para[:, :, i].T), perm)
                if self.builder_config.joint0 == "wrist":
                    xyz[0] = xyz[ROOT] + WRIST_FROM_PALM * (xyz[0] - xyz[ROOT])
                path = common.require_file(root / "images" / seq / f"SK_color_{i}.png",
                                           INSTRUCTIONS)
                image, image_bytes = common.read_image(path)
                uv = common.project_points(xyz, SK_COLOR_K)
                key = f"{seq}/SK_color_{i}"
                yield key, common.make_example(
                    image=image,
                    image_bytes=image_bytes,
                    keypoints_2d=uv,
                    keypoints_3d_mm=xyz,
                    K=SK_COLOR_K,
                    visibility=common.inside_image(uv, image.shape[1], image.shape[0]),
                    hand_side="left",
                    example_id=key,
                )
