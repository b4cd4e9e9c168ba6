r"""Writes a PNG grid of synthetic hands of both styles: RGB with skeleton, depth, mask.

    .venv/bin/python -m tools.visualize_data --out runs/synthetic_hands.png --num 6

Each row is one sample: [RGB + skeleton (visible joints filled, hidden ones hollow), depth, mask];
the left half of the grid shows the labelled `render` style, the right half the `capture` style.
Samples are rendered directly (no dataset build needed), with the same seeding as the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import flags

from hpe_jax.runtime import cli

_OUT = flags.DEFINE_string("out", "runs/synthetic_hands.png", "Output PNG path.")
_NUM = flags.DEFINE_integer("num", 6, "Samples per style.")
_SIZE = flags.DEFINE_integer("image_size", 128, "Rendered image size (pixels).")
_SEED = flags.DEFINE_integer("seed", 0, "Dataset seed.")
_STYLES = flags.DEFINE_list("styles", ["render", "capture"], "Styles to show (styles.STYLES).")

_FINGER_COLOURS = ("#ff4040", "#ffb000", "#40d040", "#30a0ff", "#d040ff")


def draw_grid(path: str, styles: Sequence[str], num: int, image_size: int, seed: int) -> None:
    """Renders `num` samples of each style and saves the grid to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hpe_jax.data import render
    from hpe_jax.data.styles import STYLES
    from hpe_jax.hand.skeleton import FINGER_JOINTS

    unknown = [s for s in styles if s not in STYLES]
    if unknown:
        raise cli.UsageError(f"unknown --styles {unknown}; choose from {sorted(STYLES)}")
    fig, axes = plt.subplots(num, 3 * len(styles), figsize=(2.0 * 3 * len(styles), 2.0 * num),
                             squeeze=False)
    for c, name in enumerate(styles):
        for i in range(num):
            ex = render.render_example(STYLES[name], seed, i, image_size)
            ax_rgb, ax_d, ax_m = axes[i, 3 * c: 3 * c + 3]
            ax_rgb.imshow(ex["image"])
            uv, vis = ex["keypoints_2d"], ex["visibility"]
            for f, joints in enumerate(FINGER_JOINTS):
                chain = [0, *joints]
                ax_rgb.plot(uv[chain, 0], uv[chain, 1], "-", color=_FINGER_COLOURS[f], lw=1)
            ax_rgb.scatter(uv[vis, 0], uv[vis, 1], s=6, c="w", edgecolors="k", linewidths=0.3)
            ax_rgb.scatter(uv[~vis, 0], uv[~vis, 1], s=6, facecolors="none", edgecolors="k",
                           linewidths=0.5)
            b = ex["bbox"]
            ax_rgb.plot([b[0], b[2], b[2], b[0], b[0]], [b[1], b[1], b[3], b[3], b[1]], "y-",
                        lw=0.5)
            d = np.where(ex["depth"] > 0, ex["depth"], np.nan)
            ax_d.imshow(d, cmap="viridis")
            ax_m.imshow(ex["mask"][..., 0], cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax_rgb.set_title(f"{name}: RGB", fontsize=8)
                ax_d.set_title("depth (mm)", fontsize=8)
                ax_m.set_title("hand mask", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_flags(num: int, image_size: int, styles: Sequence[str]) -> None:
    """Usage errors for flag values the renderer or matplotlib would reject obscurely."""
    if num < 1:
        raise cli.UsageError(f"--num={num}: give at least 1 sample per style")
    if image_size < 1:
        raise cli.UsageError(f"--image_size={image_size}: give a positive size in pixels")
    if not styles:
        raise cli.UsageError("--styles is empty; e.g. --styles=render,capture")


def main(argv: Sequence[str]) -> None:
    del argv
    cli.check_directory("out", _OUT.value, file=True)
    check_flags(_NUM.value, _SIZE.value, _STYLES.value)
    draw_grid(_OUT.value, _STYLES.value, _NUM.value, _SIZE.value, _SEED.value)
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main, "visualize_data")
