r"""Measures how well a network's per-image hand score tells hands from crops without a hand.

    python -m tools.measure_hand_score --model=assets/demo_pretrained \
        --real_dir=<hand-graph-cnn's data/real_world_testset> [--output=hand_score.json]

Positives: the labelled val photos of the set (index % 4 == 0), each whole photo the crop.
Negatives (`hpe_jax.evaluation.hand_score`): windows of the same photos away from the hand, flat
colours, pixel and smooth noise, and the source renderer's backgrounds without the hand. Prints
and writes the AUROC of each candidate score (`export.HAND_SCORES`) against every negative kind
and against all of them together.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from hpe_jax.runtime import cli

_MODEL = flags.DEFINE_string("model", None, "Export directory or network file directory.")
_REAL = flags.DEFINE_string("real_dir", None, "The hgc_real folder (images/, *.mat).")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file for the results (optional).")
_N = flags.DEFINE_integer("num_synthetic", 100, "Flat, noise and render negatives of each kind.")
flags.mark_flags_as_required(["model", "real_dir"])


def check_real_dir(real_dir: str) -> None:
    """UsageError naming --real_dir when it is not hand-graph-cnn's real-world test set folder
    (the builder's own message names --manual_dir, tools.tfds_build's flag)."""
    from hpe_jax.data.prepare import FOLDER_TARGETS

    if not os.path.isdir(real_dir):
        raise cli.UsageError(f"--real_dir={real_dir}: no such folder")
    missing = [f for f in FOLDER_TARGETS["hgc_real"]
               if not os.path.exists(os.path.join(real_dir, f))]
    if missing:
        raise cli.UsageError(f"--real_dir={real_dir} lacks {', '.join(missing)}; pass "
                             "hand-graph-cnn's data/real_world_testset folder (images/, "
                             "params.mat, pose_gt.mat; https://github.com/3d-hand-shape/"
                             "hand-graph-cnn)")


def val_photos(real_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """The labelled val photos (N, H, W, 3) uint8 and their 2D keypoints (N, 21, 2) px."""
    from etils import epath
    from PIL import Image

    from hpe_jax.data.builders import common, hgc_real

    images, uvs = [], []
    for row in hgc_real.read_rows(epath.Path(real_dir)):
        if row["split"] != "val":
            continue
        image = np.asarray(Image.open(row["image"]).convert("RGB"))
        K = hgc_real.crop_intrinsics(row["cam_param"], row["bbox"], image.shape[1])
        images.append(image)
        uvs.append(common.project_points(row["xyz"], K))
    return np.stack(images), np.stack(uvs)


def measure(model: str, real_dir: str, num_synthetic: int = 100) -> dict:
    """{'auroc': {score: {negative kind: AUROC, 'all': AUROC}}, 'counts': {...}}."""
    from hpe_jax import export
    from hpe_jax.data import styles
    from hpe_jax.evaluation import hand_score as hs

    predictor = export.load(model)
    photos, uv = val_photos(real_dir)
    size = photos.shape[1]
    negatives = {
        "background_crops": hs.background_crops(photos, uv, size),
        "flat": hs.flat_images(num_synthetic, size),
        "noise": hs.noise_images(num_synthetic, size),
        "render_backgrounds": hs.render_backgrounds(styles.RANDOMIZED, num_synthetic, size),
    }

    def scores(images: np.ndarray) -> dict[str, np.ndarray]:
        out = [predictor.predict(images[i:i + 32]) for i in range(0, len(images), 32)]
        return {k: np.concatenate([o[k] for o in out]) for k in export.HAND_SCORES}

    pos = scores(photos)
    neg = {kind: scores(x) for kind, x in negatives.items() if len(x)}
    result: dict = {"auroc": {}, "counts": {"hand_photos": len(photos),
                                            **{k: len(v) for k, v in negatives.items()}}}
    for name in export.HAND_SCORES:
        row = {kind: hs.auroc(pos[name], s[name]) for kind, s in neg.items()}
        row["all"] = hs.auroc(pos[name], np.concatenate([s[name] for s in neg.values()]))
        result["auroc"][name] = row
    return result


def main(argv: list[str]) -> None:
    del argv
    check_real_dir(_REAL.value)
    cli.check_directory("output", _OUTPUT.value, file=True)
    result = measure(_MODEL.value, _REAL.value, _N.value)
    for name, row in result["auroc"].items():
        print(f"{name:>18}: " + "  ".join(f"{k} {v:.3f}" for k, v in row.items()))
    if _OUTPUT.value:
        with open(_OUTPUT.value, "w") as f:
            json.dump(result, f, indent=2)
        print(f"Wrote {_OUTPUT.value}")


if __name__ == "__main__":
    cli.run(main, "measure_hand_score")
