"""HO-3D v2 / v3 (Hampali et al. 2020): an extra target, right hands with objects, with depth.

Reads the official layout from `manual_dir` (the folder holding `train/` and `train.txt`):

    train.txt                        one `SEQ/id` per line: the frames to use
    train/<SEQ>/rgb/<id>.png|.jpg    640x480 (png in v2, jpg in v3)
    train/<SEQ>/depth/<id>.png       depth_m = (R + 256 G) * 0.00012498664727900177
    train/<SEQ>/meta/<id>.pkl        handJoints3D (21x3, metres, OpenGL camera), camMat (3x3)

Split: `train` = the frames of train.txt. The evaluation split is not built: its meta files hold
only the root joint and a box (the ground truth is kept on the challenge server), so it cannot
fill the keypoint features.

Labels: 3D = handJoints3D in mm, moved from HO-3D's OpenGL camera (hand at -z) to the OpenCV one
by diag(1, -1, -1); joints reordered with DATASET_TO_CANONICAL["ho3d"]; 2D = projection with
camMat; visibility = inside the image; bbox around the visible keypoints; right hands only.
Frames whose meta has no handJoints3D are skipped. Depth: decoded with the official formula, in
mm, kept because the sensor depth is registered to the colour image.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, NUM_JOINTS, to_canonical

DEPTH_SCALE_M = 0.00012498664727900177
OPENGL_TO_OPENCV = np.array([1.0, -1.0, -1.0])

INSTRUCTIONS = """\
HO-3D cannot be downloaded automatically. Get HO-3D v2 or v3 from
https://github.com/shreyashampali/ho3d (the dataset's download page), extract it and pass the
folder holding train/ and train.txt as --manual_dir. Expected files:
  train.txt, train/<SEQ>/{rgb/<id>.png or .jpg, depth/<id>.png, meta/<id>.pkl}
"""


def decode_depth(depth_png: np.ndarray) -> np.ndarray:
    """(H, W, >=2) uint8 HO-3D depth PNG -> (H, W) float32 depth in mm (official formula)."""
    rg = depth_png[..., :2].astype(np.float64)
    return (1000.0 * DEPTH_SCALE_M * (rg[..., 0] + 256.0 * rg[..., 1])).astype(np.float32)


class Ho3d(tfds.core.GeneratorBasedBuilder):
    """HO-3D training frames (train.txt) with canonical joints in mm and depth in mm."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "train.txt frames, OpenCV camera, depth in mm."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=True, with_mask=False),
            homepage="https://github.com/shreyashampali/ho3d",
            citation="Hampali et al., HOnnotate: A Method for 3D Annotation of Hand and Object "
            "Poses, CVPR 2020.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = epath.Path(dl_manager.manual_dir)
        common.check_layout(root, ["train.txt", "train"], INSTRUCTIONS)
        frames = [line.strip() for line in (root / "train.txt").read_text().splitlines()]
        return {"train": self._generate_examples(root / "train", [f for f in frames if f])}

    def _generate_examples(self, split_dir: epath.Path, frames: list[str]):
        perm = DATASET_TO_CANONICAL["ho3d"]
        for frame in frames:
            seq, fid = frame.split("/")
            meta = common.read_pickle(
                common.require_file(split_dir / seq / "meta" / f"{fid}.pkl", INSTRUCTIONS)
            )
            joints = meta.get("handJoints3D")
            if joints is None or np.asarray(joints).shape != (NUM_JOINTS, 3):
                continue  # Frame without a full hand annotation.
            rgb = split_dir / seq / "rgb" / f"{fid}.png"
            if not rgb.exists():
                rgb = rgb.with_suffix(".jpg")  # v3 ships JPEGs.
            image, image_bytes = common.read_image(common.require_file(rgb, INSTRUCTIONS))
            depth = common.read_raw_png(
                common.require_file(split_dir / seq / "depth" / f"{fid}.png", INSTRUCTIONS)
            )
            K = np.asarray(meta["camMat"], np.float64)
            xyz = to_canonical(np.asarray(joints, np.float64) * OPENGL_TO_OPENCV * 1000.0, perm)
            uv = common.project_points(xyz, K)
            yield frame, common.make_example(
                image=image,
                image_bytes=image_bytes,
                keypoints_2d=uv,
                keypoints_3d_mm=xyz,
                K=K,
                visibility=common.inside_image(uv, image.shape[1], image.shape[0]),
                hand_side="right",
                example_id=frame,
                depth_mm=decode_depth(depth),
            )
