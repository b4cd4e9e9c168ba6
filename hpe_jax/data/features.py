"""The feature spec every hand dataset builder in this project produces.

All builders (`synthetic_hands`, RHD, STB, FreiHAND, ...) share these keys, so one input pipeline
reads any of them:

=============== =========================== ==================================================
key             shape / dtype               meaning
=============== =========================== ==================================================
image           (H, W, 3) uint8             RGB image.
depth           (H, W) float32              metric depth in millimetres along the camera z axis;
                                            0.0 where there is no measurement (background of the
                                            synthetic renderer, holes of a sensor). Optional.
mask            (H, W, 1) uint8             hand mask, 1 on the hand, 0 elsewhere. Optional.
keypoints_2d    (21, 2) float32             u, v in pixels of `image` (pixel centres at integer
                                            coordinates, OpenCV convention), canonical order.
keypoints_3d    (21, 3) float32             x, y, z in millimetres, camera frame (+z forward).
visibility      (21,) bool                  joint visible in the image (not occluded, in frame).
K               (3, 3) float32              camera intrinsics of `image`.
bbox            (4,) float32                hand box [u_min, v_min, u_max, v_max] in pixels.
hand_side       ClassLabel right/left       the hand's side in the source; left hands are
                                            mirrored to right ones (image flipped, u and K
                                            adjusted) so every example is a right hand.
id              Text                        stable example id within the dataset.
=============== =========================== ==================================================
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from hpe_jax.hand.skeleton import NUM_JOINTS

HAND_SIDES = ("right", "left")
# Keys an unlabelled pipeline must drop: pose labels and the privileged modalities. K and the box
# stay: they describe the camera and the crop (the papers assume the hand box is given).
LABEL_KEYS = ("keypoints_2d", "keypoints_3d", "visibility", "depth", "mask")


def hand_features(with_depth: bool, with_mask: bool) -> tfds.features.FeaturesDict:
    """Builds the shared FeaturesDict; depth and mask only where the dataset has them."""
    spec = {
        "image": tfds.features.Image(shape=(None, None, 3)),
        "keypoints_2d": tfds.features.Tensor(shape=(NUM_JOINTS, 2), dtype=np.float32),
        "keypoints_3d": tfds.features.Tensor(shape=(NUM_JOINTS, 3), dtype=np.float32),
        "visibility": tfds.features.Tensor(shape=(NUM_JOINTS,), dtype=np.bool_),
        "K": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
        "bbox": tfds.features.Tensor(shape=(4,), dtype=np.float32),
        "hand_side": tfds.features.ClassLabel(names=list(HAND_SIDES)),
        "id": tfds.features.Text(),
    }
    if with_depth:
        spec["depth"] = tfds.features.Tensor(shape=(None, None), dtype=np.float32, encoding="zlib")
    if with_mask:
        spec["mask"] = tfds.features.Image(shape=(None, None, 1))
    return tfds.features.FeaturesDict(spec)
