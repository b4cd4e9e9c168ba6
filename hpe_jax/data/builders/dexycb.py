"""DexYCB (Chao et al. 2021), setup s0: an extra target, with aligned depth.

Reads the official layout (NVlabs/dex-ycb-toolkit) from `manual_dir` (the DEX_YCB_DIR root):

    calibration/intrinsics/<serial>_640x480.yml      `color: {fx, fy, ppx, ppy}`
    <date>-subject-XX/<sequence>/meta.yml            serials, num_frames, mano_sides, ...
    <date>-subject-XX/<sequence>/<serial>/color_%06d.jpg
    <date>-subject-XX/<sequence>/<serial>/aligned_depth_to_color_%06d.png   uint16, mm
    <date>-subject-XX/<sequence>/<serial>/labels_%06d.npz
                                         joint_3d [1, 21, 3] metres, joint_2d [1, 21, 2] pixels

Splits (the toolkit's s0, "seen subjects, views and objects"): with the sequences of each subject
sorted by name and indexed i, `train` = all 10 subjects, i % 5 != 4; `validation` = subjects 1-2
(indices 0-1), i % 5 == 4; `test` = subjects 3-10, i % 5 == 4; all cameras listed in the
sequence's meta.yml (the toolkit's 8 serials when meta.yml has no `serials`) and all frames.

Labels: joint order canonical; 3D metres -> mm; 2D = the dataset's joint_2d; visibility = inside
the image (no occlusion labels); bbox around the visible keypoints. Frames without a hand
(joint_3d all -1, as the toolkit marks them) are skipped. Left hands (meta.yml `mano_sides`) are
mirrored to right ones, depth included. Depth: the aligned depth in mm (0 = no measurement), kept
because DexYCB, unlike the paper's real targets, has metric depth registered to colour.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds
import yaml
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, to_canonical

SUBJECTS = (
    "20200709-subject-01", "20200813-subject-02", "20200820-subject-03", "20200903-subject-04",
    "20200908-subject-05", "20200918-subject-06", "20200928-subject-07", "20201002-subject-08",
    "20201015-subject-09", "20201022-subject-10",
)
SERIALS = (
    "836212060125", "839512060362", "840412060917", "841412060263",
    "932122060857", "932122060861", "932122061900", "932122062010",
)
# s0: (subject indices, predicate on the sequence index).
S0_SPLITS = {
    "train": (range(10), lambda i: i % 5 != 4),
    "validation": ((0, 1), lambda i: i % 5 == 4),
    "test": (range(2, 10), lambda i: i % 5 == 4),
}

INSTRUCTIONS = """\
DexYCB cannot be downloaded automatically. Get the archives from https://dex-ycb.github.io/,
extract them into one folder (the toolkit's DEX_YCB_DIR) and pass it as --manual_dir. Expected:
  calibration/intrinsics/<serial>_640x480.yml
  the 10 subject folders 20200709-subject-01 .. 20201022-subject-10, each with sequence folders
  holding meta.yml and <serial>/{color_%06d.jpg, aligned_depth_to_color_%06d.png, labels_%06d.npz}
"""


def _read_yaml(path: epath.Path) -> dict:
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise common.CorruptFileError(f"cannot parse YAML file {path}: {err}") from err


def _read_labels(path: epath.Path) -> dict[str, np.ndarray]:
    try:
        with path.open("rb") as f, np.load(f) as npz:
            return {k: npz[k] for k in ("joint_3d", "joint_2d")}
    except (ValueError, KeyError, OSError) as err:
        raise common.CorruptFileError(f"cannot read joint_3d/joint_2d from {path}: {err}") from err


class Dexycb(tfds.core.GeneratorBasedBuilder):
    """DexYCB s0 train/validation/test, left hands mirrored, with aligned depth in mm."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Setup s0, canonical joints, depth in mm, left hands mirrored."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=True, with_mask=False),
            homepage="https://dex-ycb.github.io/",
            citation="Chao et al., DexYCB: A Benchmark for Capturing Hand Grasping of Objects, "
            "CVPR 2021.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = epath.Path(dl_manager.manual_dir)
        common.check_layout(root, ["calibration/intrinsics", *SUBJECTS], INSTRUCTIONS)
        return {
            name: self._generate_examples(root, subjects, keep)
            for name, (subjects, keep) in S0_SPLITS.items()
        }

    def _intrinsics(self, root: epath.Path, serial: str) -> np.ndarray:
        path = root / "calibration" / "intrinsics" / f"{serial}_640x480.yml"
        c = _read_yaml(common.require_file(path, INSTRUCTIONS))["color"]
        return np.array([[c["fx"], 0.0, c["ppx"]], [0.0, c["fy"], c["ppy"]], [0.0, 0.0, 1.0]])

    def _generate_examples(self, root: epath.Path, subjects, keep):
        perm = DATASET_TO_CANONICAL["dexycb"]
        for s in subjects:
            sequences = sorted(p for p in (root / SUBJECTS[s]).iterdir() if p.is_dir())
            for seq in (q for i, q in enumerate(sequences) if keep(i)):
                meta = _read_yaml(common.require_file(seq / "meta.yml", INSTRUCTIONS))
                side = meta["mano_sides"][0]
                for serial in meta.get("serials", SERIALS):
                    K = self._intrinsics(root, serial)
                    for f in range(int(meta["num_frames"])):
                        cam = seq / serial
                        labels = _read_labels(
                            common.require_file(cam / f"labels_{f:06d}.npz", INSTRUCTIONS)
                        )
                        if np.all(labels["joint_3d"] == -1):
                            continue  # No hand annotated in this frame.
                        image, image_bytes = common.read_image(
                            common.require_file(cam / f"color_{f:06d}.jpg", INSTRUCTIONS)
                        )
                        depth = common.read_raw_png(common.require_file(
                            cam / f"aligned_depth_to_color_{f:06d}.png", INSTRUCTIONS
                        ))
                        uv = to_canonical(labels["joint_2d"][0], perm)
                        key = f"{SUBJECTS[s]}/{seq.name}/{serial}/{f:06d}"
                        yield key, common.make_example(
                            image=image,
                            image_bytes=image_bytes,
                            keypoints_2d=uv,
                            keypoints_3d_mm=to_canonical(labels["joint_3d"][0], perm) * 1000.0,
                            K=K,
                            visibility=common.inside_image(uv, image.shape[1], image.shape[0]),
                            hand_side=side,
                            example_id=key,
                            depth_mm=depth.astype(np.float32),
                        )
