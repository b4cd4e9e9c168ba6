"""`hgc_real`: real hand photographs in the layout of hand-graph-cnn's real-world test set.

583 photographs of one person's right hand (256x256 JPEG crops of 1280x720 frames) with 3D joints,
from the public repository 3d-hand-shape/hand-graph-cnn, folder `data/real_world_testset/`
(Ge et al., CVPR 2019; non-commercial licence, so it is never shipped with this project: get the
folder from that repository and pass it as --manual_dir, or `make real REAL_DIR=<folder>`).

Layout of `manual_dir` (the repository's own):

    images/00000.jpg ...   the crops, row i of the .mat files is images/%05d.jpg
    params.mat             cam_param (N, 4): fx, fy, u0, v0 of the full frame;
                           bbox (N, 4): x, y, w, h of the square crop in that frame
    pose_gt.mat            pose_gt (N, 21, 3): joints in cm, camera frame, canonical order;
                           rows whose labels are withheld are NaN

Splits (the protocol of unsupervised adaptation on a real target):
- `val`: rows with index % 4 == 0, labelled: for choosing settings and reporting progress;
  never trained on.
- `test`: the other rows that carry labels (none where the labels are withheld: the split is
  then left out, and the result is judged elsewhere on the full file).
- `pool`: the other rows *without* their labels (keypoints zeros, visibility all False): the
  unlabelled photos adaptation learns from. Never evaluate on it.

Labels: 3D in mm (cm x 10), K of the crop = the frame's K moved to the crop and scaled to its
size (fx * S / w, fy * S / h, (u0 - x) * S / w, (v0 - y) * S / h for an S-px crop), 2D = its
projection. The box of every example is the photo itself (shrunk by the pipeline's crop margin,
which grows it back): the crop was framed around the hand as a hand detector would, and labels
cannot frame the pool's photos, so val, test and pool are framed alike.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.camera import DEFAULT_CROP_MARGIN
from hpe_jax.hand.skeleton import NUM_JOINTS

VAL_EVERY = 4  # val = rows with index % VAL_EVERY == 0
CM_TO_MM = 10.0

INSTRUCTIONS = """\
hgc_real reads hand-graph-cnn's real-world test set (583 photographs, 3D joints; Snap Inc.'s
non-commercial licence). Get it from https://github.com/3d-hand-shape/hand-graph-cnn (folder
data/real_world_testset/) and pass that folder as --manual_dir (`make real REAL_DIR=<folder>`).
Expected files: images/00000.jpg ..., params.mat (cam_param, bbox), pose_gt.mat (pose_gt, cm).
"""


def split_of(index: int, labelled: bool) -> str:
    """The split a row belongs to: `val` (every VAL_EVERY-th), else `test` or the `pool`."""
    if index % VAL_EVERY == 0:
        return "val"
    return "test" if labelled else "pool"


def crop_intrinsics(cam_param: np.ndarray, bbox: np.ndarray, size: int) -> np.ndarray:
    """(3, 3) K of a `size`-px crop from the frame's (fx, fy, u0, v0) and the crop's (x, y, w, h).
    """
    fx, fy, u0, v0 = (float(v) for v in cam_param)
    x, y, w, h = (float(v) for v in bbox)
    return np.array([[fx * size / w, 0.0, (u0 - x) * size / w],
                     [0.0, fy * size / h, (v0 - y) * size / h],
                     [0.0, 0.0, 1.0]], np.float64)


def photo_box(width: int, height: int, margin: float = DEFAULT_CROP_MARGIN) -> np.ndarray:
    """(4,) box centred in the photo whose square crop with `margin` is the whole photo."""
    side = max(width, height) / (1.0 + 2.0 * margin)
    cu, cv = (width - 1) / 2.0, (height - 1) / 2.0
    return np.array([cu - side / 2, cv - side / 2, cu + side / 2, cv + side / 2], np.float32)


def read_rows(root: epath.Path) -> list[dict]:
    """The set's rows: {'index', 'image' (path), 'cam_param' (4,), 'bbox' (4,), 'xyz' (21, 3)
    mm or None where withheld, 'split'}; K of the crop needs the image size, read later."""
    from scipy import io as sio

    common.check_layout(root, ["images", "params.mat", "pose_gt.mat"], INSTRUCTIONS)
    params = sio.loadmat(str(root / "params.mat"))
    gt = sio.loadmat(str(root / "pose_gt.mat"))
    for name, mat in (("cam_param", params), ("bbox", params), ("pose_gt", gt)):
        if name not in mat:
            raise ValueError(f"{root}: {name} is missing from its .mat file; is this the "
                             f"hand-graph-cnn real-world test set?\n{INSTRUCTIONS}")
    cam, box, pose = params["cam_param"], params["bbox"], gt["pose_gt"]
    n = len(pose)
    if cam.shape != (n, 4) or box.shape != (n, 4) or pose.shape != (n, NUM_JOINTS, 3):
        raise ValueError(f"{root}: cam_param {cam.shape}, bbox {box.shape} and pose_gt "
                         f"{pose.shape} do not describe the same N rows ((N, 4), (N, 4), "
                         f"(N, {NUM_JOINTS}, 3))")
    rows = []
    for i in range(n):
        labelled = bool(np.all(np.isfinite(pose[i])))
        rows.append({"index": i, "image": root / "images" / f"{i:05d}.jpg",
                     "cam_param": cam[i], "bbox": box[i],
                     "xyz": pose[i] * CM_TO_MM if labelled else None,
                     "split": split_of(i, labelled)})
    return rows


class HgcReal(tfds.core.GeneratorBasedBuilder):
    """hand-graph-cnn's real-world photographs: val (labelled), test (labelled rows), pool."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "val / test / pool, the photo as the box, joints in mm."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=False, with_mask=False),
            homepage="https://github.com/3d-hand-shape/hand-graph-cnn",
            citation="Ge et al., 3D Hand Shape and Pose Estimation from a Single RGB Image, "
            "CVPR 2019.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        rows = read_rows(epath.Path(dl_manager.manual_dir))
        splits = {}
        for name in ("val", "test", "pool"):
            mine = [r for r in rows if r["split"] == name]
            if mine:  # test is empty where the labels are withheld
                splits[name] = self._generate_examples(mine)
        if "val" not in splits:
            raise ValueError(f"{dl_manager.manual_dir}: no labelled val row (index % "
                             f"{VAL_EVERY} == 0); the set needs its val labels")
        return splits

    def _generate_examples(self, rows: list[dict]):
        for r in rows:
            image, image_bytes = common.read_image(common.require_file(r["image"], INSTRUCTIONS))
            h, w = image.shape[:2]
            K = crop_intrinsics(r["cam_param"], r["bbox"], w)
            if r["xyz"] is None:
                xyz = np.zeros((NUM_JOINTS, 3))
                uv = np.zeros((NUM_JOINTS, 2))
                visibility = np.zeros(NUM_JOINTS, bool)
            else:
                xyz = r["xyz"]
                uv = common.project_points(xyz, K)
                visibility = common.inside_image(uv, w, h)
            key = f"{r['index']:05d}"
            example = common.make_example(
                image=image, image_bytes=image_bytes, keypoints_2d=uv, keypoints_3d_mm=xyz,
                K=K, visibility=visibility, hand_side="right", example_id=key)
            example["bbox"] = photo_box(w, h)
            yield key, example
