"""FreiHAND v2 (Zimmermann et al. 2019): a real target, right hands only.

Reads the official layout from `manual_dir` (the folder holding `training/` and the JSON files,
e.g. the extracted FreiHAND_pub_v2/):

    training/rgb/%08d.jpg       224x224, 4 x 32,560 = 130,240 (id = idx + 32560 * k, k over the
                                versions green screen, homogenised, sample, auto colourisation)
    training_K.json, training_xyz.json       per idx: 3x3 K, 21x3 xyz in metres (camera frame)
    evaluation/rgb/%08d.jpg, evaluation_K.json   3,960 green-screen samples
    evaluation_xyz.json         evaluation ground truth, a separate later download (optional)

Configs (splits):
- `official` (default): `train` = all four versions of training (130,240); `test` = evaluation,
  present only when evaluation_xyz.json is in manual_dir.
- `tllib`: Transfer-Learning-Library's (RegDA) split of training only: the versions concatenated
  in TLlib's order (green screen, auto, sample, homogenised), CPython `random.seed(42)` then
  `random.shuffle`, `test` = the first min(int(0.2 N), 3200), `train` = the rest. The same pose
  appears in several versions, so poses leak across this split (as in the papers using it).
- `official_stb_size`, `tllib_stb_size`: the same, with `train` reduced to a random subset of
  15,000 examples (the paper matches FreiHAND's training size to STB's), drawn with
  `random.Random(0).sample` and kept in source order. `test` is unchanged.

Labels: xyz in metres -> mm; uv = projection with K (FreiHAND ships no 2D labels); visibility =
inside the image; bbox around the visible keypoints; joint order is already canonical.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from hpe_jax.data.builders import common
from hpe_jax.data.features import hand_features
from hpe_jax.hand.skeleton import DATASET_TO_CANONICAL, to_canonical

NUM_VERSIONS = 4
# TLlib concatenates the versions as gs, auto, sample, hom; the file offsets k are gs=0, hom=1,
# sample=2, auto=3.
TLLIB_VERSION_ORDER = (0, 3, 2, 1)
STB_TRAIN_SIZE = 15000
SUBSET_SEED = 0
HOMEPAGE = "https://lmb.informatik.uni-freiburg.de/resources/datasets/FreihandDataset.en.html"

INSTRUCTIONS = """\
FreiHAND cannot be downloaded automatically here. Get FreiHAND_pub_v2.zip (and, for the
evaluation split, FreiHAND_pub_v2_eval.zip with evaluation_xyz.json) from
https://lmb.informatik.uni-freiburg.de/resources/datasets/FreihandDataset.en.html, extract them
into one folder and pass it as --manual_dir. Expected files:
  training/rgb/%08d.jpg, training_K.json, training_xyz.json
  evaluation/rgb/%08d.jpg, evaluation_K.json and (optional) evaluation_xyz.json
"""


@dataclasses.dataclass
class FreihandConfig(tfds.core.BuilderConfig):
    """protocol: "official" or "tllib"; train_subset: size of the train subset (None: all)."""

    protocol: str = "official"
    train_subset: int | None = None


def subset(items: list, size: int | None, seed: int = SUBSET_SEED) -> list:
    """A seeded random subset of `size` items kept in their original order (all if None)."""
    if size is None or size >= len(items):
        return items
    keep = sorted(random.Random(seed).sample(range(len(items)), size))
    return [items[i] for i in keep]


class Freihand(tfds.core.GeneratorBasedBuilder):
    """FreiHAND training (all colour versions) and evaluation, or TLlib's split."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Official and TLlib splits, optional STB-sized training subset."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS
    BUILDER_CONFIGS = [
        FreihandConfig(name="official", description="training (4 versions) / evaluation"),
        FreihandConfig(name="tllib", protocol="tllib", description="TLlib split of training"),
        FreihandConfig(name="official_stb_size", train_subset=STB_TRAIN_SIZE,
                       description="official, train reduced to 15,000"),
        FreihandConfig(name="tllib_stb_size", protocol="tllib", train_subset=STB_TRAIN_SIZE,
                       description="tllib, train reduced to 15,000"),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=False, with_mask=False),
            homepage=HOMEPAGE,
            citation="Zimmermann et al., FreiHAND: A Dataset for Markerless Capture of Hand Pose "
            "and Shape from Single RGB Images, ICCV 2019.",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = common.dataset_root(dl_manager.manual_dir, "FreiHAND_pub_v2")
        common.check_layout(root, ["training/rgb", "training_K.json", "training_xyz.json"],
                            INSTRUCTIONS)
        Ks = common.read_json(root / "training_K.json")
        xyzs = common.read_json(root / "training_xyz.json")
        if len(Ks) != len(xyzs):
            raise common.CorruptFileError(
                f"training_K.json has {len(Ks)} entries but training_xyz.json {len(xyzs)}"
            )
        n = len(Ks)
        cfg = self.builder_config
        # One item per image: (split folder, image id, annotation index).
        if cfg.protocol == "tllib":
            items = [("training", idx + n * k, idx)
                     for k in TLLIB_VERSION_ORDER for idx in range(n)]
            train_pos, test_pos = common.tllib_split(len(items))
            train = [items[i] for i in sorted(train_pos)]
            test = [items[i] for i in test_pos]
            splits = {"train": (train, Ks, xyzs), "test": (test, Ks, xyzs)}
        elif cfg.protocol == "official":
            train = [("training", idx + n * k, idx)
                     for k in range(NUM_VERSIONS) for idx in range(n)]
            splits = {"train": (train, Ks, xyzs)}
            if (root / "evaluation_xyz.json").exists():
                common.check_layout(root, ["evaluation/rgb", "evaluation_K.json"], INSTRUCTIONS)
                eval_K = common.read_json(root / "evaluation_K.json")
                eval_xyz = common.read_json(root / "evaluation_xyz.json")
                test = [("evaluation", idx, idx) for idx in range(len(eval_xyz))]
                splits["test"] = (test, eval_K, eval_xyz)
        else:
            raise ValueError(f"unknown FreiHAND protocol {cfg.protocol!r}: official or tllib")
        train_items, train_K, train_xyz = splits["train"]
        splits["train"] = (subset(train_items, cfg.train_subset), train_K, train_xyz)
        return {name: self._generate_examples(root, *args) for name, args in splits.items()}

    def _generate_examples(self, root: epath.Path, items: list, Ks: list, xyzs: list):
        perm = DATASET_TO_CANONICAL["freihand"]
        for folder, image_id, idx in items:
            path = root / folder / "rgb" / f"{image_id:08d}.jpg"
            common.require_file(path, INSTRUCTIONS)
            image, image_bytes = common.read_image(path)
            K = np.asarray(Ks[idx], np.float64)
            xyz = to_canonical(np.asarray(xyzs[idx], np.float64) * 1000.0, perm)
            uv = common.project_points(xyz, K)
            key = f"{folder}/{image_id:08d}"
            yield key, common.make_example(
                image=image,
                image_bytes=image_bytes,
                keypoints_2d=uv,
                keypoints_3d_mm=xyz,
                K=K,
                visibility=common.inside_image(uv, image.shape[1], image.shape[0]),
                hand_side="right",
                example_id=key,
            )
