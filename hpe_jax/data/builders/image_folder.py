"""`image_folder`: your own unlabelled hand photos as the target domain, plus an optional test set.

The method adapts to a real domain from *unlabelled* images; this builder turns a plain folder of
photos into that domain. Build it with `--manual_dir` pointing at the folder (tools.train does it
for you when `config.data.target == "image_folder"` and `config.data.image_folder` names the
folder, see configs/adapt_folder.py).

Layout of `manual_dir`:

    **/*.jpg|*.jpeg|*.png  the photos, anywhere below the folder -> split "train" (unlabelled)
    boxes.json | boxes.csv optional hand boxes; without a box file every photo is one example
                           whose crop is the whole image (the pipeline squares it and adds its
                           margin), so photos should then be framed around one hand
    <split>.json           optional labelled splits, e.g. test.json, in the `hand_folder` schema
                           (hpe_jax/data/builders/hand_folder.py) -> split "<split>"; the photos
                           they name are left out of "train" so that no test photo is trained on

boxes.json maps an image path (relative to the folder, "/" separators) to one box, a list of
boxes (one example each: several hands in one photo), or an object with the box and side:

    {"img_001.jpg": [u_min, v_min, u_max, v_max],
     "group/img_002.jpg": [[10, 20, 110, 140], [200, 40, 300, 160]],
     "img_003.jpg": {"box": [5, 5, 90, 100], "hand_side": "left"}}

boxes.csv has a header row and one row per box: `image,u_min,v_min,u_max,v_max[,hand_side]`.
Boxes are in pixels of the stored image (pixel centres at integers); a box is clipped to the image,
and one with no area inside it is an error naming the entry. With a box file, photos it does not
list are skipped (the number is logged): they are taken to show no usable hand. `hand_side` is
"right" (default) or "left"; left hands are mirrored to right ones, as in every builder. Files
that cannot be decoded are skipped with a warning naming them.

Features: the shared spec of `hpe_jax.data.features` without depth and mask. The "train" split has
no labels: keypoints are zeros and visibility is all False (the unlabelled pipeline drops them on
reading); never evaluate on it. K is a guess, because a photo folder rarely comes with its
intrinsics: fx = fy = max(W, H) (a field of view of about 53 degrees across the longer side, a
typical phone camera), principal point at the image centre. The guess only affects the pseudo-label
correction, which works on 2.5D poses (uv in pixels, z relative to the root and divided by a bone
length): uv does not depend on K, and a wrong focal length only scales the depth ratios slightly.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath

from hpe_jax.data.builders import common, hand_folder
from hpe_jax.data.features import HAND_SIDES, hand_features
from hpe_jax.hand.skeleton import NUM_JOINTS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BOX_FILES = ("boxes.json", "boxes.csv")
UNLABELLED_SPLIT = "train"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")

INSTRUCTIONS = """\
image_folder reads a folder of your own hand photos (JPEG/PNG, any subfolders) as unlabelled
target images, with optional hand boxes in boxes.json or boxes.csv and optional labelled splits
(e.g. test.json in the hand_folder schema). The layout is in the docstring of
hpe_jax/data/builders/image_folder.py. Pass the folder as --manual_dir.
"""


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """(3, 3) float32 guess of a photo's K: fx = fy = max(W, H), principal point at the centre.

    Pixel centres are at integers, so the centre of a W-wide image is at u = (W - 1) / 2.
    """
    f = float(max(width, height))
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]],
                    np.float32)


def _box(value: Any, where: str) -> np.ndarray:
    try:
        box = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        box = np.zeros(0)
    if box.shape != (4,) or not np.all(np.isfinite(box)):
        raise common.CorruptFileError(
            f"{where}: a box is 4 numbers [u_min, v_min, u_max, v_max], got {value!r}")
    return box


def read_boxes(root: epath.Path) -> dict[str, list[tuple[np.ndarray, str]]] | None:
    """{image path: [(box (4,), hand_side), ...]} from boxes.json or boxes.csv; None if neither."""
    present = [name for name in BOX_FILES if (root / name).exists()]
    if not present:
        return None
    if len(present) > 1:
        raise common.CorruptFileError(
            f"{root} holds both boxes.json and boxes.csv; keep one of them")
    path = root / present[0]
    boxes: dict[str, list[tuple[np.ndarray, str]]] = {}
    if path.name.endswith(".json"):
        spec = common.read_json(path)
        if not isinstance(spec, dict):
            raise common.CorruptFileError(f"{path}: expected an object {{image path: box}}")
        for image, value in spec.items():
            where = f"{path} entry {image!r}"
            if isinstance(value, dict):
                if "box" not in value:
                    raise common.CorruptFileError(f"{where}: missing key 'box'")
                entries = [(value["box"], value.get("hand_side", "right"))]
            elif value and isinstance(value[0], (list, tuple)):
                entries = [(b, "right") for b in value]
            else:
                entries = [(value, "right")]
            boxes[image] = [(_box(b, where), side) for b, side in entries]
    else:
        rows = list(csv.DictReader(io.StringIO(path.read_text())))
        need = ("image", "u_min", "v_min", "u_max", "v_max")
        if rows and any(k not in rows[0] for k in need):
            raise common.CorruptFileError(
                f"{path}: the header must be image,u_min,v_min,u_max,v_max[,hand_side], got "
                f"{','.join(rows[0])}")
        for i, row in enumerate(rows):
            where = f"{path} row {i + 2}"  # row 1 is the header
            try:
                values = [float(row[k]) for k in need[1:]]
            except (TypeError, ValueError):
                values = [row.get(k) for k in need[1:]]
            side = (row.get("hand_side") or "right").strip()
            boxes.setdefault(row["image"].strip(), []).append((_box(values, where), side))
    for image, entries in boxes.items():
        for _, side in entries:
            if side not in HAND_SIDES:
                raise common.CorruptFileError(
                    f"{path} entry {image!r}: hand_side must be one of {HAND_SIDES}, got {side!r}")
    return boxes


def clip_box(box: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
    """The box clipped to the image's pixel area; CorruptFileError when nothing is left."""
    lo = np.array([-0.5, -0.5, -0.5, -0.5])
    hi = np.array([width - 0.5, height - 0.5, width - 0.5, height - 0.5])
    clipped = np.clip(box, lo, hi)
    if clipped[2] - clipped[0] < 1.0 or clipped[3] - clipped[1] < 1.0:
        raise common.CorruptFileError(
            f"{where}: box {box.tolist()} has no area inside the {width}x{height} image")
    return clipped.astype(np.float32)


def unlabelled_example(image: np.ndarray, image_bytes: bytes | None, box: np.ndarray,
                       hand_side: str, example_id: str) -> dict[str, Any]:
    """One example of the shared spec without labels (module docstring).

    Args:
      image: (H, W, 3) uint8; image_bytes: the encoded file, stored as is unless mirrored.
      box: (4,) [u_min, v_min, u_max, v_max] pixels inside the image.
      hand_side: "right" or "left"; a left hand's image, box and K are mirrored.
    """
    height, width = image.shape[:2]
    K = default_intrinsics(width, height)
    encoded: np.ndarray | bytes = image if image_bytes is None else image_bytes
    box = np.asarray(box, np.float32)
    if hand_side == "left":
        # u -> (W - 1) - u maps pixel centres onto each other (see camera.mirror_horizontally).
        encoded = np.ascontiguousarray(image[:, ::-1])
        box = np.array([width - 1 - box[2], box[1], width - 1 - box[0], box[3]], np.float32)
        K[0, 2] = width - 1 - K[0, 2]
    return {
        "image": encoded,
        "keypoints_2d": np.zeros((NUM_JOINTS, 2), np.float32),
        "keypoints_3d": np.zeros((NUM_JOINTS, 3), np.float32),
        "visibility": np.zeros((NUM_JOINTS,), bool),
        "K": K,
        "bbox": box,
        "hand_side": hand_side,
        "id": example_id,
    }


def _files_below(root: epath.Path, prefix: str = ""):
    """Paths ("/"-separated, relative to root) of every file below root; epath has no rglob
    on every filesystem TFDS supports, so walk the folders one by one."""
    for child in sorted(root.iterdir()):
        rel = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _files_below(child, rel + "/")
        else:
            yield rel


class ImageFolder(tfds.core.GeneratorBasedBuilder):
    """A folder of unlabelled photos (+ optional boxes and labelled splits); module docstring."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Unlabelled photos with optional boxes and labelled splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = INSTRUCTIONS

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=hand_features(with_depth=False, with_mask=False),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = epath.Path(dl_manager.manual_dir)
        if not root.is_dir():
            raise common.ManualDirError(f"{root} is not a folder.\n{INSTRUCTIONS}")
        labelled = sorted(p for p in root.glob("*.json") if p.name not in BOX_FILES)
        splits, taken = {}, set()
        for path in labelled:
            name = path.name[: -len(".json")]
            if name == UNLABELLED_SPLIT or not _SPLIT_NAME.match(name):
                raise common.CorruptFileError(
                    f"{path}: a labelled split's name uses letters, digits and underscores and "
                    f"is not {UNLABELLED_SPLIT!r} (the unlabelled photos' split); rename it, "
                    "e.g. test.json")
            spec = common.read_json(path)
            taken.update(str(s.get("image")) for s in spec.get("samples", []))
            splits[name] = hand_folder.labelled_examples(root, path)
        photos = sorted(p for p in _files_below(root) if p.lower().endswith(IMAGE_SUFFIXES))
        photos = [p for p in photos if p not in taken]
        if not photos:
            raise common.ManualDirError(
                f"{root} holds no unlabelled .jpg/.jpeg/.png photo.\n{INSTRUCTIONS}")
        splits[UNLABELLED_SPLIT] = self._generate_examples(root, photos, read_boxes(root))
        return splits

    def _generate_examples(self, root: epath.Path, photos: list[str],
                           boxes: dict[str, list[tuple[np.ndarray, str]]] | None):
        if boxes is not None:
            unknown = sorted(set(boxes) - set(photos))
            if unknown:
                raise common.CorruptFileError(
                    f"the box file names {len(unknown)} image(s) not in the folder's unlabelled "
                    f"photos, e.g. {unknown[0]!r} (paths are relative to {root})")
            skipped = [p for p in photos if p not in boxes]
            if skipped:
                logging.warning("image_folder: %d photo(s) have no box and are skipped, e.g. %s",
                                len(skipped), skipped[0])
            photos = [p for p in photos if p in boxes]
        unreadable = 0
        for n, rel in enumerate(photos, 1):
            try:
                image, image_bytes = common.read_image(root / rel)
            except common.CorruptFileError as err:
                logging.warning("image_folder: skipping %s", err)
                unreadable += 1
                if unreadable == n == len(photos):  # else TFDS's 'No examples were yielded'
                    raise common.CorruptFileError(
                        f"none of the {n} photo(s) in {root} can be read (e.g. {err}); pass a "
                        "folder of .jpg/.jpeg/.png photos as --config.data.image_folder"
                        ) from None
                continue
            height, width = image.shape[:2]
            if boxes is None:
                entries = [(np.array([-0.5, -0.5, width - 0.5, height - 0.5]), "right")]
            else:
                entries = boxes[rel]
            for i, (box, side) in enumerate(entries):
                where = f"box {i} of {rel}"
                example_id = rel if len(entries) == 1 else f"{rel}#{i}"
                yield example_id, unlabelled_example(
                    image, image_bytes, clip_box(box, width, height, where), side, example_id)


def prepare(manual_dir: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The `image_folder` builder of `data_dir`, built from `manual_dir` if not yet prepared, and
    rebuilt when it was built from another folder or the folder's files changed since."""
    builder = ImageFolder(data_dir=data_dir)
    if not manual_dir:
        if builder.is_prepared():
            return builder
        raise common.ManualDirError(
            "dataset 'image_folder' is not prepared in data_dir="
            f"{data_dir!r}; pass the folder of your photos as --config.data.image_folder=DIR "
            "(or build it: python -m tools.tfds_build image_folder --manual_dir=DIR "
            "--data_dir=DATA_DIR)")
    from hpe_jax.data.prepare import prepare_folder_target  # imports builders

    prepare_folder_target("image_folder", str(manual_dir), data_dir)
    return ImageFolder(data_dir=data_dir)
