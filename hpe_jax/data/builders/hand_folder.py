"""`hand_folder`: a generic on-disk format any labelled hand dataset can be converted into.

MVHand (which has no packaged split) and any other dataset enter the project through it: write the
images and one JSON per split, then build with `--manual_dir` pointing at the folder.

Layout of `manual_dir`:

    <split>.json      one file per split, directly in the folder; the file name without .json is
                      the TFDS split name (letters, digits, underscores), e.g. train.json, test.json
    ...               the images, anywhere below the folder (JPEG or PNG, RGB)

Schema of `<split>.json` (keys marked optional may be left out):

    {
      "joint_order": "canonical",  # optional: "canonical" (default) or a key of
                                   #   hpe_jax.hand.skeleton.DATASET_TO_CANONICAL, e.g. "mvhand"
      "units": "mm",               # optional: unit of keypoints_3d, "mm" (default) or "m"
      "samples": [
        {
          "image": "images/7-14-1-2/00012_0.jpg",  # path relative to the folder
          "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],  # intrinsics of that image
          "keypoints_3d": [[x, y, z], ...],  # 21 joints, camera frame (OpenCV: +x right,
                                             #   +y down, +z forward), in `units`
          "keypoints_2d": [[u, v], ...],     # optional, pixels (pixel centres at integers);
                                             #   default: the projection of keypoints_3d with K
          "visibility": [true, ...],         # optional, 21 booleans; default: inside the image
          "hand_side": "right",              # optional, "right" (default) or "left"; left
                                             #   hands are mirrored to right ones
          "id": "7-14-1-2/00012_0"           # optional, unique; default: the image path
        }
      ]
    }

The builder reorders joints with `to_canonical(x, DATASET_TO_CANONICAL[joint_order])`, converts 3D
to mm, mirrors left hands (image flipped, u, x and K adjusted) and puts a box around the visible
keypoints, like every other builder.

Converting MVHand (github.com/ShichengChen/multiviewDataset): for each
sequence, frame f and view v, the 3D joints in view v's camera are inv(pose_v) @ X with X the
homogeneous row f of `mlresults/<seq>-joints.npy` (mm, reference-camera frame) and pose_v from
`calib.pkl`; K is the view's published intrinsics (fx, fy, cx, cy); the image is
`rgb/%05d_%d.jpg` % (f, v); `joint_order` is "mvhand", `units` "mm", hand side right. MVHand has
no published split: split by sequence (e.g. hold out whole sequences for test) so that no frame of
a test sequence is seen in training.
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import HAND_SIDES, hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, NUM_JOINTS, to_canonical

_UNITS_TO_MM = {"mm": 1.0, "m": 1000.0}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

INSTRUCTIONS = """\
hand_folder reads a folder you prepare: one <split>.json per split (e.g. train.json, test.json)
plus the images they name, relative to the folder. The JSON schema is in the docstring of
hpe_jax/data/builders/hand_folder.py. Pass the folder as --manual_dir.
"""


def _field(sample: dict, key: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """A sample's array field, checked for shape; errors say which sample and field."""
    try:
        value = np.asarray(sample[key], np.float64)
    except KeyError:
        raise common.CorruptFileError(f"{where}: missing required key {key!r}") from None
    if value.shape != shape:
        raise common.CorruptFileError(f"{where}: {key!r} has shape {value.shape}, want {shape}")
    return value


class HandFolder(tfds.core.GeneratorBasedBuilder):
    """Images plus one JSON of keypoints and K per split (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Generic images + per-split JSON format."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=False, with_mask=False),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = epath.Path(dl_manager.manual_dir)
        files = sorted(root.glob("*.json"))
        if not files:
            raise common.ManualDirError(f"{root} holds no <split>.json file.\n{INSTRUCTIONS}")
        splits = {}
        for path in files:
            name = path.name[: -len(".json")]
            if not _SPLIT_NAME.match(name):
                raise common.CorruptFileError(
                    f"{path}: split names may only use letters, digits and underscores"
                )
            splits[name] = self._generate_examples(root, path)
        return splits

    def _generate_examples(self, root: epath.Path, path: epath.Path):
        yield from labelled_examples(root, path)


def labelled_examples(root: epath.Path, path: epath.Path):
    """(id, example) pairs of one `<split>.json` (module docstring) whose images lie below root.

    Also used by the `image_folder` builder for its optional labelled splits.
    """
    spec = common.read_json(path)
    order = spec.get("joint_order", "canonical")
    if order == "canonical":
        perm = tuple(range(NUM_JOINTS))
    elif order in DATASET_TO_CANONICAL:
        perm = DATASET_TO_CANONICAL[order]
    else:
        raise common.CorruptFileError(
            f"{path}: unknown joint_order {order!r}; use 'canonical' or one of "
            f"{sorted(DATASET_TO_CANONICAL)}"
        )
    units = spec.get("units", "mm")
    if units not in _UNITS_TO_MM:
        raise common.CorruptFileError(f"{path}: units must be 'mm' or 'm', got {units!r}")
    for i, sample in enumerate(spec["samples"]):
        where = f"{path} sample {i}"
        if "image" not in sample:
            raise common.CorruptFileError(f"{where}: missing required key 'image'")
        image, image_bytes = common.read_image(
            common.require_file(root / sample["image"], INSTRUCTIONS)
        )
        K = _field(sample, "K", (3, 3), where)
        xyz = to_canonical(_field(sample, "keypoints_3d", (NUM_JOINTS, 3), where), perm)
        xyz = xyz * _UNITS_TO_MM[units]
        if "keypoints_2d" in sample:
            uv = to_canonical(_field(sample, "keypoints_2d", (NUM_JOINTS, 2), where), perm)
        else:
            uv = common.project_points(xyz, K)
        if "visibility" in sample:
            vis = to_canonical(_field(sample, "visibility", (NUM_JOINTS,), where)[:, None],
                               perm)[:, 0] > 0.5
        else:
            vis = common.inside_image(uv, image.shape[1], image.shape[0])
        side = sample.get("hand_side", "right")
        if side not in HAND_SIDES:
            raise common.CorruptFileError(f"{where}: hand_side must be one of {HAND_SIDES}")
        example_id = str(sample.get("id", sample["image"]))
        yield example_id, common.make_example(
            image=image,
            image_bytes=image_bytes,
            keypoints_2d=uv,
            keypoints_3d_mm=xyz,
            K=K,
            visibility=vis,
            hand_side=side,
            example_id=example_id,
        )
