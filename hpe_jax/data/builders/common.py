"""Shared pieces of the real-dataset builders: layout checks, file readers, labels -> example.

Every real builder (rhd, stb, freihand, h3d, hand_folder, dexycb, ho3d) turns one source sample into
the features of `hpe_jax.data.features.hand_features` through `make_example`, which applies the
project's conventions in one place:

- keypoints in the canonical order (the caller reorders with `skeleton.to_canonical`), 3D in mm in
  the camera frame (+z forward), 2D in pixels of the stored image;
- left hands are mirrored to right ones with `camera.mirror_horizontally` (image, depth and mask
  columns flipped, u, x and K adjusted); `hand_side` keeps the side the source showed;
- `bbox` is the tight box [u_min, v_min, u_max, v_max] (pixels, no margin) around the visible
  keypoints, or around all keypoints when fewer than two are visible; the input pipeline adds its
  own margin.

File access goes through `epath` so the builders work on any filesystem TFDS supports.
"""

from __future__ import annotations

import io
import json
import pickle
import random
import re
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image

from hpe_jax.data.features import HAND_SIDES
from hpe_jax.hand.camera import mirror_horizontally, project
from hpe_jax.hand.skeleton import NUM_JOINTS


class ManualDirError(FileNotFoundError):
    """The manual directory misses files of the dataset's official layout."""


class CorruptFileError(ValueError):
    """A dataset file exists but cannot be decoded."""


def dataset_root(manual_dir: epath.PathLike, folder: str | None) -> epath.Path:
    """The dataset's root: `manual_dir/folder` if that exists, else `manual_dir` itself.

    Users may point `--manual_dir` either at the folder that holds the extracted archive or at the
    archive's top folder (e.g. `RHD_published_v2`); both work.
    """
    manual_dir = epath.Path(manual_dir)
    if folder and (manual_dir / folder).is_dir():
        return manual_dir / folder
    return manual_dir


def check_layout(root: epath.Path, required: Sequence[str], instructions: str) -> None:
    """Raises one ManualDirError listing every missing path of `required` (relative to root)."""
    missing = [p for p in required if not (root / p).exists()]
    if missing:
        raise ManualDirError(
            f"{root} is missing {len(missing)} of the dataset's files or folders: "
            f"{', '.join(missing)}.\n{instructions}"
        )


def require_file(path: epath.Path, instructions: str) -> epath.Path:
    """Returns `path`, or raises ManualDirError naming it when it does not exist."""
    if not path.exists():
        raise ManualDirError(f"missing dataset file {path}.\n{instructions}")
    return path


def read_image(path: epath.Path) -> tuple[np.ndarray, bytes]:
    """Decodes an image file into (H, W, 3) uint8 RGB; also returns the file's bytes.

    Raises CorruptFileError naming the file when it cannot be decoded.
    """
    data = path.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except Exception as err:  # PIL raises several unrelated types for bad files.
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", " (not an image)", str(err))
        raise CorruptFileError(f"cannot decode image {path}: {reason}") from err
    return rgb, data


def read_raw_png(path: epath.Path) -> np.ndarray:
    """Decodes a PNG without colour conversion: (H, W) or (H, W, C), its stored dtype."""
    try:
        with Image.open(io.BytesIO(path.read_bytes())) as img:
            return np.asarray(img)
    except Exception as err:
        raise CorruptFileError(f"cannot decode image {path}: {err}") from err


def read_json(path: epath.Path) -> Any:
    """Parses a JSON file; a syntax error names the file."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"cannot parse JSON file {path}: {err}") from err


def read_pickle(path: epath.Path) -> Any:
    """Loads a pickle (latin1 so that Python 2 pickles with numpy arrays load too).

    Only use on the dataset files the user downloaded: unpickling runs code from the file.
    """
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError) as err:
        raise CorruptFileError(f"cannot unpickle {path}: {err}") from err


def project_points(xyz: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(21, 3) camera-frame points -> (21, 2) float32 pixels with camera.project."""
    return np.asarray(project(jnp.asarray(xyz, jnp.float32), jnp.asarray(K, jnp.float32)))


def tllib_split(num_examples: int) -> tuple[list[int], list[int]]:
    """(train, test) positions of the Transfer-Learning-Library's split of `num_examples` items.

    TLlib calls `random.seed(42); random.shuffle(samples)` on CPython and takes the first
    min(int(0.2 N), 3200) as test. A shuffle's permutation depends only on the list's length, so
    shuffling positions with a generator seeded the same way reproduces it without touching the
    global generator. Both lists are in shuffled order.
    """
    order = list(range(num_examples))
    random.Random(42).shuffle(order)
    k = min(int(num_examples * 0.2), 3200)
    return order[k:], order[:k]


def inside_image(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """(21,) bool: keypoint centre inside the image (pixel centres at integers)."""
    u, v = uv[:, 0], uv[:, 1]
    return (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)


def keypoint_box(uv: np.ndarray, visibility: np.ndarray) -> np.ndarray:
    """Tight (4,) [u_min, v_min, u_max, v_max] around the visible keypoints (all if < 2 visible)."""
    pts = uv[visibility] if np.count_nonzero(visibility) >= 2 else uv
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)]).astype(np.float32)


def make_example(
    *,
    image: np.ndarray,
    image_bytes: bytes | None,
    keypoints_2d: np.ndarray,
    keypoints_3d_mm: np.ndarray,
    K: np.ndarray,
    visibility: np.ndarray,
    hand_side: str,
    example_id: str,
    depth_mm: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> dict[str, Any]:
    """One example of the shared feature spec, mirroring a left hand to a right one.

    Args:
      image: (H, W, 3) uint8 as stored by the dataset.
      image_bytes: the encoded file; stored as is when the image is not flipped (no re-encoding),
        None to always encode `image`.
      keypoints_2d: (21, 2) pixels; keypoints_3d_mm: (21, 3) mm camera frame; K: (3, 3); all in
        the canonical joint order and for the unflipped image.
      visibility: (21,) bool.
      hand_side: "right" or "left", the side shown in the source image.
      depth_mm: optional (H, W) float depth in mm; mask: optional (H, W) {0, 1} hand mask.
    """
    if hand_side not in HAND_SIDES:
        raise ValueError(f"hand_side must be one of {HAND_SIDES}, got {hand_side!r}")
    uv = np.asarray(keypoints_2d, np.float32).reshape(NUM_JOINTS, 2)
    xyz = np.asarray(keypoints_3d_mm, np.float32).reshape(NUM_JOINTS, 3)
    K = np.asarray(K, np.float32).reshape(3, 3)
    visibility = np.asarray(visibility, bool).reshape(NUM_JOINTS)
    encoded: np.ndarray | bytes = image if image_bytes is None else image_bytes
    if hand_side == "left":
        width = image.shape[1]
        uv, xyz, K = (
            np.asarray(a, np.float32)
            for a in mirror_horizontally(jnp.asarray(uv), jnp.asarray(xyz), jnp.asarray(K), width)
        )
        encoded = np.ascontiguousarray(image[:, ::-1])
        if depth_mm is not None:
            depth_mm = depth_mm[:, ::-1]
        if mask is not None:
            mask = mask[:, ::-1]
    example = {
        "image": encoded,
        "keypoints_2d": uv,
        "keypoints_3d": xyz,
        "visibility": visibility,
        "K": K,
        "bbox": keypoint_box(uv, visibility),
        "hand_side": hand_side,
        "id": example_id,
    }
    if depth_mm is not None:
        example["depth"] = np.ascontiguousarray(depth_mm, np.float32)
    if mask is not None:
        example["mask"] = np.ascontiguousarray(mask, np.uint8).reshape(mask.shape[:2] + (1,))
    return example
