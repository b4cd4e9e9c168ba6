"""Hand-3D-Studio in Transfer-Learning-Library's packaging (`H3D_crop`, Zhao et al. 2020): a target.

Reads the layout TLlib distributes, from `manual_dir` (the folder holding `H3D_crop/` or that
folder itself):

    H3D_crop/annotation.json     list of {name, keypoint3d 21x3, keypoint2d 21x2 (pixels),
                                 intrinsic_matrix 3x3, without_object 0/1}
    H3D_crop/part1/ .. part5/    images, pre-cropped to 1.5x the hand box (K belongs to the crop)

Split (TLlib's, the papers' subset): keep `without_object == 1` (one hand, no object) in the JSON's
order, CPython `random.seed(42)` + `random.shuffle`, k = min(int(0.2 N), 3200); `test` = the
first k, `train` = the rest.

Labels: the joint order is canonical (TLlib applies no reindexing); 2D = the JSON's keypoint2d;
visibility = inside the image; bbox around the visible keypoints. The 3D units are not
documented: the builder reads them from the data, once per file, from the median wrist -> middle
MCP distance (about 90 mm on an adult hand): below 1 means metres, below 30 centimetres, else
millimetres; 3D is then stored in mm. The hand side is not annotated either; hands are stored as
right hands (`hand_side` = right) and nothing is mirrored.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, ROOT, WRIST, to_canonical

ROOT_FOLDER = "H3D_crop"
INSTRUCTIONS = """\
H3D_crop (Hand-3D-Studio as packaged by the Transfer-Learning-Library) cannot be downloaded
automatically here. Get H3D_crop.tar from the link in TLlib's
tllib/vision/datasets/keypoint_detection/hand_3d_studio.py (https://github.com/thuml/
Transfer-Learning-Library), extract it and pass the folder holding H3D_crop/ as --manual_dir.
Expected files: H3D_crop/annotation.json and the images it names under H3D_crop/part1..part5/.
"""


def mm_per_unit(keypoints_3d: np.ndarray) -> float:
    """Factor to mm for (N, 21, 3) canonical hands, from the median wrist -> middle MCP length."""
    bone = np.linalg.norm(keypoints_3d[:, ROOT] - keypoints_3d[:, WRIST], axis=-1)
    length = float(np.median(bone))
    if length < 1.0:
        return 1000.0
    if length < 30.0:
        return 10.0
    return 1.0


class H3d(tfds.core.GeneratorBasedBuilder):
    """H3D_crop one-handed subset with TLlib's train/test split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One-handed subset, TLlib split, 3D in mm."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=False, with_mask=False),
            homepage="https://www.yangangwang.com/papers/ZHAO-H3S-2020-02.html",
            citation="Zhao et al., Hand-3D-Studio: A New Multi-View System for 3D Hand "
            "Reconstruction, ICASSP 2020.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = common.dataset_root(dl_manager.manual_dir, ROOT_FOLDER)
        common.check_layout(root, ["annotation.json"], INSTRUCTIONS)
        samples = common.read_json(root / "annotation.json")
        one_handed = [s for s in samples if int(s["without_object"]) == 1]
        if not one_handed:
            raise common.CorruptFileError(
                f"{root / 'annotation.json'} has no sample with without_object == 1"
            )
        perm = DATASET_TO_CANONICAL["h3d"]
        scale = mm_per_unit(to_canonical(np.array([s["keypoint3d"] for s in one_handed]), perm))
        train, test = common.tllib_split(len(one_handed))
        return {
            "train": self._generate_examples(root, [one_handed[i] for i in train], scale),
            "test": self._generate_examples(root, [one_handed[i] for i in test], scale),
        }

    def _generate_examples(self, root: epath.Path, samples: list, scale: float):
        perm = DATASET_TO_CANONICAL["h3d"]
        for sample in samples:
            path = common.require_file(root / sample["name"], INSTRUCTIONS)
            image, image_bytes = common.read_image(path)
            uv = to_canonical(np.asarray(sample["keypoint2d"], np.float64), perm)
            yield sample["name"], common.make_example(
                image=image,
                image_bytes=image_bytes,
                keypoints_2d=uv,
                keypoints_3d_mm=to_canonical(np.asarray(sample["keypoint3d"]), perm) * scale,
                K=np.asarray(sample["intrinsic_matrix"], np.float64),
                visibility=common.inside_image(uv, image.shape[1], image.shape[0]),
                hand_side="right",
                example_id=sample["name"],
            )
