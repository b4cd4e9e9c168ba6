r"""Predicts hand keypoints on image files with an exported model; writes JSON and overlay PNGs.

    python -m tools.predict --model=runs/demo/export --images a.png b.jpg \
        [--boxes_json=boxes.json] [--K_json=K.json] [--scale_mm=44] --output_dir=runs/pred

--boxes_json: a JSON list (one [u_min, v_min, u_max, v_max] tight hand box per image, in order)
or an object mapping image paths or file names to boxes; images without a box are used whole
(pass hand crops then). --K_json: one 3x3 matrix for every image, a list of them, or an object
like the boxes'; with K the JSON also holds 3D joints in mm (root depth from Iqbal et al.'s
closed form times --scale_mm, default the export's hand scale).

For each image <name>.<ext> it writes <output_dir>/<name>.json (uv in image pixels, z, xyz mm,
the crop box, confidences) and <output_dir>/<name>_overlay.png, plus predictions.json with all
of them and the list of skipped images.

Hand score (`hand_score`, 0-1): the share of the crop the network's hand mask covers. It tells
a hand crop from a crop without one (AUROC 0.99+ on real hand photos against crops of their
backgrounds, flat colours, noise and rendered backgrounds: docs/results.md,
tools/measure_hand_score.py); hand crops score well above crops without a hand, so a threshold
taken from a few of your own crops of each kind separates them. Per joint, `confidence` is the
heatmap's probability mass within 1 output pixel of its peak (`hpe_jax.export.peak_mass`): how
sharply the joint is localised, not whether there is a hand.

An image that cannot be read, is smaller than the network input on either side, or whose box
lies mostly (more than half of its area) outside the image is skipped with a warning; the
others are still predicted and predictions.json is still written; the exit status is then 1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from absl import flags, logging

from hpe_jax.runtime import cli


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so that importing this module
    for `predict_files` never clashes with another tool's flags of the same name)."""
    flags.DEFINE_string("model", None, "Export directory (tools/export.py --output).")
    flags.DEFINE_list("images", [], "Image files (also taken from the positional args).")
    flags.DEFINE_string("boxes_json", None, "JSON file of hand boxes (see the doc).")
    flags.DEFINE_string("K_json", None, "JSON file of 3x3 intrinsics (see the doc).")
    flags.DEFINE_float("scale_mm", None, "Hand scale: reference-bone length in mm.")
    flags.DEFINE_string("output_dir", None, "Where the JSON and PNG files go.")
    flags.mark_flags_as_required(["model", "output_dir"])


def read_image(path: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB of an image file (grayscale and RGBA are converted)."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise ValueError(f"{path!r}: no such file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise ValueError(f"cannot read image {path!r} ({e}); pass PNG or JPEG files") from e


def _per_image(spec: Any, paths: Sequence[str], what: str, shape: tuple[int, ...],
               shared_ok: bool) -> list[np.ndarray | None]:
    """A JSON value (list in image order, {path or file name: value}, or one shared value)
    -> one array of `shape` or None per image."""
    if spec is None:
        return [None] * len(paths)
    if isinstance(spec, Mapping):
        values = [spec.get(p, spec.get(os.path.basename(p))) for p in paths]
    elif shared_ok and np.shape(spec) == shape:
        values = [spec] * len(paths)
    elif isinstance(spec, list) and len(spec) == len(paths):
        values = spec
    else:
        raise ValueError(f"{what} must be a list with one entry per image ({len(paths)}), an "
                         f"object keyed by image path or file name"
                         + (", or one value for all images" if shared_ok else ""))
    out = []
    for p, v in zip(paths, values, strict=True):
        if v is None:
            out.append(None)
            continue
        try:
            a = np.asarray(v, np.float32)
        except (ValueError, TypeError):
            raise ValueError(f"{what} for {p!r} must hold numbers of shape {shape}, got "
                             f"{v!r}") from None
        if a.shape != shape:
            raise ValueError(f"{what} for {p!r} must have shape {shape}, got {a.shape}")
        out.append(a)
    return out


def unmatched_keys(spec: Any, paths: Sequence[str]) -> list[str]:
    """The keys of a JSON object of boxes or K that name none of the images (a typo, or a
    photo not passed); [] for a list or a shared value."""
    if not isinstance(spec, Mapping):
        return []
    names = set(paths) | {os.path.basename(p) for p in paths}
    return sorted(k for k in spec if k not in names)


def _load_json(path: str | None, what: str) -> Any:
    if path is None:
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {what} file {path!r}: {e}") from e


#: One colour per finger (thumb .. little) in overlays; the palm's bones in the wrist's colour.
FINGER_COLOURS = ((230, 25, 75), (245, 130, 48), (255, 225, 25), (60, 180, 75), (0, 130, 200))
WRIST_COLOUR = (240, 240, 240)
MAX_OVERLAY_SIDE = 1024


def draw_overlay(path: str, image: np.ndarray, uv: np.ndarray, box: np.ndarray | None) -> None:
    """Writes the image with the predicted skeleton (one colour per finger, a legend) and the
    crop box as a PNG, scaled down to at most MAX_OVERLAY_SIDE pixels on its long side."""
    from PIL import Image, ImageDraw

    from hpe_jax.hand.skeleton import FINGER_JOINTS, FINGERS

    im = Image.fromarray(image)
    f = min(1.0, MAX_OVERLAY_SIDE / max(image.shape[:2]))
    if f < 1.0:
        im = im.resize((max(1, round(image.shape[1] * f)), max(1, round(image.shape[0] * f))),
                       Image.BILINEAR)
    uv = (np.asarray(uv, np.float64) + 0.5) * f - 0.5  # pixel centres at integers
    draw = ImageDraw.Draw(im)
    r = max(1.5, min(im.size) / 100.0)
    for finger, joints in enumerate(FINGER_JOINTS):
        colour = FINGER_COLOURS[finger]
        chain = (0,) + tuple(joints)  # wrist -> base -> ... -> tip
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            draw.line([tuple(uv[a]), tuple(uv[b])],
                      fill=WRIST_COLOUR if a == 0 else colour, width=max(1, int(r)))
        for j in joints:
            u, v = uv[j]
            draw.ellipse([u - r, v - r, u + r, v + r], fill=colour)
    u, v = uv[0]
    draw.ellipse([u - r, v - r, u + r, v + r], fill=WRIST_COLOUR)
    if box is not None:
        draw.rectangle([float(x) * f for x in box], outline=(255, 255, 255))
    for i, name in enumerate(FINGERS):  # the legend, top left
        draw.rectangle([4, 4 + 12 * i, 14, 14 + 12 * i], fill=FINGER_COLOURS[i])
        draw.text((18, 3 + 12 * i), name, fill=FINGER_COLOURS[i])
    im.save(path)


class SkippedImage(ValueError):
    """One image cannot be predicted (unreadable, too small, box outside); the others can."""


def check_image(path: str, image: np.ndarray, box: np.ndarray | None, input_size: int) -> None:
    """Raises SkippedImage when the network cannot see a hand in `image` (module doc)."""
    h, w = image.shape[:2]
    if min(h, w) < input_size:
        raise SkippedImage(f"{path!r} is {w}x{h} pixels, smaller than the network input "
                           f"({input_size}x{input_size}); pass a larger image")
    if box is not None:
        inside_u = max(0.0, min(box[2], w - 0.5) - max(box[0], -0.5))
        inside_v = max(0.0, min(box[3], h - 0.5) - max(box[1], -0.5))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise SkippedImage(f"the box {[round(float(x), 1) for x in box]} of {path!r} is "
                               "empty or inverted (u_max <= u_min or v_max <= v_min); boxes are "
                               "[u_min, v_min, u_max, v_max] in pixels of that image")
        area = float((box[2] - box[0]) * (box[3] - box[1]))
        if inside_u * inside_v < 0.5 * area:
            raise SkippedImage(f"the box {[round(float(x), 1) for x in box]} of {path!r} lies "
                               f"mostly outside the {w}x{h} image; boxes are [u_min, v_min, "
                               "u_max, v_max] in pixels of that image")


def predict_files(
    model_dir: str, image_paths: Sequence[str], output_dir: str, *, boxes: Any = None,
    K: Any = None, scale_mm: float | None = None,
) -> list[dict[str, Any]]:
    """Runs an exported model on image files and writes <name>.json, <name>_overlay.png and
    predictions.json into output_dir.

    Args:
      boxes, K: parsed JSON as described in the module doc (or None).
    Returns:
      The per-image records written (uv (J, 2) image px, z (J,), xyz (J, 3) mm with K,
      confidence (J,) and hand_score). Images that cannot be predicted (`check_image`,
      unreadable files) are skipped with a warning and listed in predictions.json's "skipped";
      `predict_files.skipped` holds them as (path, reason) after the call.
    """
    from hpe_jax import export

    if not image_paths:
        raise ValueError("no images given; pass --images a.png b.jpg")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise NotADirectoryError(f"--output_dir={output_dir} is a file; pass a directory (it is "
                                 "created if missing)")
    predictor = export.load(model_dir)
    box_list = _per_image(boxes, image_paths, "boxes_json", (4,), shared_ok=False)
    for spec, what in ((boxes, "--boxes_json"), (K, "--K_json")):
        unused = unmatched_keys(spec, image_paths)
        if unused:
            logging.warning("tools.predict: %s names %d file(s) that are not among the images "
                            "(their entries are not used), e.g. %s; keys are image paths or file "
                            "names", what, len(unused), unused[0])
    if boxes is not None:
        unboxed = [p for p, b in zip(image_paths, box_list, strict=True) if b is None]
        if unboxed:
            logging.warning("tools.predict: %d image(s) have no box in --boxes_json and are "
                            "used whole (pass hand crops then), e.g. %s", len(unboxed),
                            unboxed[0])
    k_list = _per_image(K, image_paths, "K_json", (3, 3), shared_ok=True)
    os.makedirs(output_dir, exist_ok=True)
    records, used, skipped = [], set(), []
    for path, box, k in zip(image_paths, box_list, k_list, strict=True):
        try:
            image = read_image(path)
            check_image(path, image, box, predictor.input_size)
        except (ValueError, OSError) as e:
            logging.warning("tools.predict: skipped: %s", e)
            skipped.append({"image": path, "reason": str(e)})
            continue
        out = predictor.predict(image[None], None if box is None else box[None],
                                None if k is None else k[None], scale_mm)
        stem = os.path.splitext(os.path.basename(path))[0]
        name, i = stem, 1
        while name in used:  # same file name in different folders
            name, i = f"{stem}_{i}", i + 1
        used.add(name)
        rec: dict[str, Any] = {
            "image": path, "width": image.shape[1], "height": image.shape[0],
            "hand_box": None if box is None else box.tolist(),
            "crop_box": out["box"][0].tolist(),
            "joint_names": list(predictor.joint_names),
            "uv": out["uv"][0].tolist(), "z": out["z"][0].tolist(),
            "confidence": out["confidence"][0].tolist(),
            "hand_score": float(out["hand_score"][0]),
            "units": {"uv": "image pixels, pixel centres at integers",
                      "z": "root-relative depth / reference-bone length",
                      "confidence": "heatmap mass within 1 output px of the peak, 0-1",
                      "hand_score": "share of the crop the hand mask covers, 0-1"},
        }
        if k is not None:
            rec["xyz"] = out["xyz"][0].tolist()
            rec["root_depth_mm"] = float(out["root_depth_mm"][0])
            rec["scale_mm"] = float(predictor.scale_mm if scale_mm is None else scale_mm)
            rec["units"]["xyz"] = "mm, camera frame"
        with open(os.path.join(output_dir, f"{name}.json"), "w") as f:
            json.dump(rec, f, indent=2)
        draw_overlay(os.path.join(output_dir, f"{name}_overlay.png"), image, out["uv"][0],
                     out["box"][0] if box is not None else None)
        records.append(rec)
    with open(os.path.join(output_dir, "predictions.json"), "w") as f:
        json.dump({"predictions": records, "skipped": skipped}, f, indent=2)
    predict_files.skipped = [(s["image"], s["reason"]) for s in skipped]
    return records


def main(argv: list[str]) -> None:
    f = flags.FLAGS
    paths = list(f.images) + list(argv[1:])
    cli.check_directory("output_dir", f.output_dir)
    if not paths:
        raise cli.UsageError("no images given; pass --images a.png,b.jpg (or list them after "
                             "the flags)")
    records = predict_files(f.model, paths, f.output_dir,
                            boxes=_load_json(f.boxes_json, "--boxes_json"),
                            K=_load_json(f.K_json, "--K_json"), scale_mm=f.scale_mm)
    print(f"Wrote keypoints and overlays of {len(records)} images to {f.output_dir}")
    skipped = predict_files.skipped
    if skipped:
        cli.fail("predict", f"{len(skipped)} of {len(paths)} images skipped (warnings above: "
                 f"first {skipped[0][1]}); predictions.json holds the other {len(records)}", 1)


if __name__ == "__main__":
    define_flags()
    cli.run(main, "predict")
