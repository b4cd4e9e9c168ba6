"""A small folder in the layout of hand-graph-cnn's real-world test set (the hgc_real builder's
input): JPEG photos, params.mat, pose_gt.mat in cm with withheld rows NaN."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image
from scipy import io as sio

#: The real set, where this machine has it (tests that need it skip elsewhere).
REAL_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "hgc_real")


def write_hgc_fixture(root, n: int = 12, withheld=(), size: int = 64, seed: int = 0
                      ) -> list[dict]:
    """Writes n rows (photos `size` px) under root; rows in `withheld` get NaN labels.

    Returns each row's {'cam', 'bbox', 'pose_cm'} (pose_cm NaN where withheld)."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    cams, boxes, poses = [], [], []
    for i in range(n):
        pixels = rng.integers(0, 255, (size, size, 3), np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, "images", f"{i:05d}.jpg"), quality=90)
        cam = np.array([920.0, 921.0, 640.0, 360.0])
        side = float(rng.integers(100, 200))
        centre = rng.uniform([500, 250], [780, 470])
        bbox = np.array([centre[0] - side / 2, centre[1] - side / 2, side, side]).round()
        # A hand-sized point cloud around the crop centre's ray, 40 cm away (cm).
        ray = np.array([(centre[0] - cam[2]) / cam[0], (centre[1] - cam[3]) / cam[1], 1.0])
        pose = ray * 40.0 + rng.normal(0.0, 3.0, (21, 3))
        if i in withheld:
            pose = np.full((21, 3), np.nan)
        cams.append(cam)
        boxes.append(bbox)
        poses.append(pose)
    sio.savemat(os.path.join(root, "params.mat"), {
        "cam_param": np.stack(cams), "bbox": np.stack(boxes).astype(np.int32),
        "image_path": np.array([f"images/{i:05d}.jpg" for i in range(n)])})
    sio.savemat(os.path.join(root, "pose_gt.mat"), {"pose_gt": np.stack(poses)})
    return [{"cam": c, "bbox": b, "pose_cm": p} for c, b, p in zip(cams, boxes, poses,
                                                                    strict=True)]
