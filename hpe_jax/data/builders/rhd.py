"""Rendered Hand Pose Dataset (RHD v1.1, Zimmermann & Brox 2017): the labelled synthetic source.

Reads the official layout from `manual_dir` (either the folder holding `RHD_published_v2/` or that
folder itself):

    RHD_published_v2/{training,evaluation}/color/%05d.png   320x320 RGB
    RHD_published_v2/{training,evaluation}/depth/%05d.png   R = high byte, G = low byte
    RHD_published_v2/{training,evaluation}/mask/%05d.png    part labels
    RHD_published_v2/{training,evaluation}/anno_{training,evaluation}.pickle

Splits: `train` = training (41,258), `test` = evaluation (2,728).

Per frame (documented choices):
- Hand: the dominant hand, i.e. the one with more mask pixels (left labels 2-17, right 18-33), as
  lmb-freiburg/hand3d does; ties keep the right hand. `hand_side` is that hand's side; left hands
  are mirrored to right ones (image, depth and mask columns flipped; u, x and K adjusted).
- Keypoints: the chosen hand's 21 joints of `xyz` (metres -> mm) and `uv_vis` (pixels), reordered
  with DATASET_TO_CANONICAL["rhd"]; `visibility` = the dataset's visible flag.
- Depth: the official decoding depth_m = 5.0 * (R * 256 + G) / 65535, stored in mm.
- Mask: 1 on the chosen hand's labels, 0 elsewhere (the other hand is background).
- bbox: tight box around the visible keypoints (common.keypoint_box).
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, NUM_JOINTS, to_canonical

ROOT_FOLDER = "RHD_published_v2"
_SPLITS = {"train": "training", "test": "evaluation"}
# Mask label ranges of each hand (inclusive), from the RHD README.
LEFT_LABELS = (2, 17)
RIGHT_LABELS = (18, 33)
DEPTH_SCALE_M = 5.0 / 65535.0
HOMEPAGE = (
    "https://lmb.informatik.uni-freiburg.de/resources/datasets/RenderedHandposeDataset.en.html"
)

INSTRUCTIONS = """\
RHD (Rendered Hand Pose Dataset v1.1) cannot be downloaded automatically.
Get RHD_v1-1.zip from
https://lmb.informatik.uni-freiburg.de/resources/datasets/RenderedHandposeDataset.en.html,
extract it and pass the folder holding RHD_published_v2/ (or RHD_published_v2/ itself) as
--manual_dir. Expected files:
  RHD_published_v2/training/{color,depth,mask}/%05d.png,
  RHD_published_v2/training/anno_training.pickle
  RHD_published_v2/evaluation/{color,depth,mask}/%05d.png,
  RHD_published_v2/evaluation/anno_evaluation.pickle
"""


def decode_depth(depth_png: np.ndarray) -> np.ndarray:
    """(H, W, >=2) uint8 RHD depth PNG -> (H, W) float32 depth in mm (official formula)."""
    rg = depth_png[..., :2].astype(np.float64)
    metres = DEPTH_SCALE_M * (rg[..., 0] * 256.0 + rg[..., 1])
    return (1000.0 * metres).astype(np.float32)


def dominant_hand(mask_labels: np.ndarray) -> str:
    """"left" or "right": the hand with more pixels in an RHD part-label mask (ties: right)."""
    left = np.count_nonzero((mask_labels >= LEFT_LABELS[0]) & (mask_labels <= LEFT_LABELS[1]))
    right = np.count_nonzero((mask_labels >= RIGHT_LABELS[0]) & (mask_labels <= RIGHT_LABELS[1]))
    return "left" if left > right else "right"


def hand_mask(mask_labels: np.ndarray, side: str) -> np.ndarray:
    """(H, W) uint8 {0, 1}: pixels of one hand's part labels."""
    lo, hi = LEFT_LABELS if side == "left" else RIGHT_LABELS
    return ((mask_labels >= lo) & (mask_labels <= hi)).astype(np.uint8)


class Rhd(tfds.core.GeneratorBasedBuilder):
    """RHD with the dominant hand per frame, mirrored to a right hand, with depth and mask."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Dominant hand, canonical joints, depth in mm, left hands mirrored."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=True, with_mask=True),
            homepage=HOMEPAGE,
            citation="Zimmermann and Brox, Learning to Estimate 3D Hand Pose from Single RGB "
            "Images, ICCV 2017.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = common.dataset_root(dl_manager.manual_dir, ROOT_FOLDER)
        required = []
        for folder in _SPLITS.values():
            required += [f"{folder}/{sub}" for sub in ("color", "depth", "mask")]
            required.append(f"{folder}/anno_{folder}.pickle")
        common.check_layout(root, required, INSTRUCTIONS)
        return {split: self._generate_examples(root / folder) for split, folder in _SPLITS.items()}

    def _generate_examples(self, split_dir: epath.Path):
        annos = common.read_pickle(split_dir / f"anno_{split_dir.name}.pickle")
        perm = DATASET_TO_CANONICAL["rhd"]
        for sample_id in sorted(annos):
            anno = annos[sample_id]
            name = f"{int(sample_id):05d}.png"
            paths = {k: common.require_file(split_dir / k / name, INSTRUCTIONS)
                     for k in ("color", "depth", "mask")}
            image, image_bytes = common.read_image(paths["color"])
            depth_png = common.read_raw_png(paths["depth"])
            labels = common.read_raw_png(paths["mask"])
            if labels.ndim == 3:  # Some readers save the label map as RGB; labels are in R.
                labels = labels[..., 0]
            if depth_png.ndim != 3 or depth_png.shape[:2] != image.shape[:2]:
                raise common.CorruptFileError(
                    f"{paths['depth']}: expected an RGB depth image of {image.shape[:2]}, "
                    f"got shape {depth_png.shape}"
                )
            side = dominant_hand(labels)
            offset = 0 if side == "left" else NUM_JOINTS  # Left joints 0-20, right 21-41.
            xyz = np.asarray(anno["xyz"], np.float64)[offset:offset + NUM_JOINTS] * 1000.0
            uv_vis = np.asarray(anno["uv_vis"], np.float64)[offset:offset + NUM_JOINTS]
            yield f"{split_dir.name}/{int(sample_id):05d}", common.make_example(
                image=image,
                image_bytes=image_bytes,
                keypoints_2d=to_canonical(uv_vis[:, :2], perm),
                keypoints_3d_mm=to_canonical(xyz, perm),
                K=np.asarray(anno["K"], np.float64),
                visibility=to_canonical(uv_vis[:, 2:3], perm)[:, 0] > 0.5,
                hand_side=side,
                example_id=f"{split_dir.name}/{int(sample_id):05d}",
                depth_mm=decode_depth(depth_png),
                mask=hand_mask(labels, side),
            )
