"""`synthetic_hands`: the embedded, offline benchmark rendered by `hpe_jax.data.render`.

Configs (name: style, image size, train / test examples; every config has a val split as large
as its test split, rendered from other seeds, for choosing settings):
  source       render style, 128 px, 4000 / 500: labelled, RGB + depth + mask.
  target       capture style, 128 px, 4000 / 500: RGB only; its labels exist for oracle
               experiments and evaluation, and the unlabelled input pipeline drops them.
  source_large render style, 128 px, 12000 / 500: more labelled images for `make reproduce`
               (its test split is `source`'s: the same style, seed and indices).
  randomized, randomized_large: the randomized style (styles.RANDOMIZED, generic domain
               randomisation), 4000 / 500 and 12000 / 500: the labelled source of
               `make reproduce` and `make real`.
  randomized_fresh_large: the randomized style from seed 1, 12000 / 500: new images of the
               same distribution, the control when a source variant is compared.
  source_tiny, target_tiny, randomized_tiny: 64 / 32 examples, for tests and smoke runs.

A config for any `Style` comes from `config_from_style(style, ...)`; pass it as
`tfds.builder('synthetic_hands', config=cfg, data_dir=...)`.

Example `i` of split `s` is rendered from the seed (style name, config seed, s, i), so a build
gives the same bytes on every machine, in any order, with any number of workers.

Images: PNG for lossless styles; a style that ends in JPEG (capture) keeps the JPEG the renderer
wrote. `pipeline.decode_image` (the input pipelines' decoder) reads those with libjpeg's accurate
IDCT and gets exactly `render`'s pixels; TFDS's default decoder uses TF's fast IDCT (up to 3 levels
off).

    tfds build hpe_jax/data/builders/synthetic_hands.py --config source_tiny --data_dir /tmp/tfds
or  tfds.builder('synthetic_hands/source', data_dir=...).download_and_prepare()
(after `import hpe_jax.data`, which registers the builder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import multiprocessing
import os
import time

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from hpe_jax.data import features, render, styles

SPLIT_IDS = {"train": 0, "test": 1, "val": 2}


def _png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W, 3) or (H, W) image. PIL encodes several times faster than
    TFDS's default TF-graph encoder, which would otherwise dominate the build time; level 1
    takes 0.45 ms less than level 3 on a 128-px capture image for files ~1% larger."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclasses.dataclass(eq=False)
class SyntheticHandsConfig(tfds.core.BuilderConfig):
    """A style, an image size, split sizes and a seed.

    Attributes:
      style: the appearance and pose/camera distribution (`styles.Style`).
      image_size: rendered image side in pixels.
      num_train, num_test, num_val: examples per split (val: rendered apart from test, from
        its own seeds, for choosing settings; test only reports).
      seed: dataset seed; with the style name, split and index it fixes each example.
    """

    style: styles.Style = styles.RENDER
    image_size: int = 128
    num_train: int = 4000
    num_test: int = 500
    num_val: int = 500
    seed: int = 0


def config_from_style(
    style: styles.Style, *, name: str | None = None, image_size: int = 128,
    num_train: int = 4000, num_test: int = 500, num_val: int | None = None, seed: int = 0,
) -> SyntheticHandsConfig:
    """A builder config rendering `style` (its name defaults to the style's name)."""
    if image_size < 32:
        raise ValueError(f"image_size={image_size} is too small to render a hand; use >= 32")
    num_val = num_test if num_val is None else num_val
    if num_train < 1 or num_test < 1 or num_val < 1:
        raise ValueError(f"split sizes must be positive, got train={num_train}, test={num_test}"
                         f", val={num_val}")
    return SyntheticHandsConfig(
        name=name or style.name,
        description=(f"style {style.name!r}, {image_size}px, {num_train} train / {num_val} val"
                     f" / {num_test} "
                     f"test, seed {seed}"),
        style=style, image_size=image_size, num_train=num_train, num_test=num_test, num_val=num_val,
        seed=seed,
    )


class SyntheticHands(tfds.core.GeneratorBasedBuilder):
    """Procedurally rendered right hands: a labelled source and a captured-looking target."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release.",
        "1.1.0": "JPEG styles store the camera's JPEG instead of a PNG of its decode; faster "
                 "background shapes (different random shapes for the same seed).",
        "1.2.0": "A val split (its own seeds, apart from test) in every config; the "
                 "randomized style's configs. train and test keep their bytes.",
    }
    BUILDER_CONFIGS = [
        config_from_style(styles.RENDER, name="source"),
        config_from_style(styles.CAPTURE, name="target"),
        config_from_style(styles.RENDER, name="source_large", num_train=12000),
        config_from_style(styles.RENDER, name="source_tiny", num_train=64, num_test=32),
        config_from_style(styles.CAPTURE, name="target_tiny", num_train=64, num_test=32),
        config_from_style(styles.RANDOMIZED, name="randomized"),
        config_from_style(styles.RANDOMIZED, name="randomized_large", num_train=12000),
        config_from_style(styles.RANDOMIZED, name="randomized_tiny", num_train=64, num_test=32),
        # randomized_large's style rendered from another seed: new images of the same
        # distribution, the control when a source variant is compared (docs/results.md).
        config_from_style(styles.RANDOMIZED, name="randomized_fresh_large", num_train=12000,
                          seed=1),
    ]
    DEFAULT_CONFIG_NAME = "source"

    def _info(self) -> tfds.core.DatasetInfo:
        style = self.builder_config.style
        return self.dataset_info_from_configs(
            features=features.hand_features(style.with_depth, style.with_mask),
            supervised_keys=None,
            homepage="https://github.com/",  # rendered locally; nothing to download
            description=__doc__,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # everything is rendered: works offline
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.num_train),
            "test": self._generate_examples("test", cfg.num_test),
            "val": self._generate_examples("val", cfg.num_val),
        }

    def _generate_examples(self, split: str, num: int):
        cfg = self.builder_config
        jobs = [(cfg.style, cfg.seed, index, cfg.image_size, SPLIT_IDS[split], split)
                for index in range(num)]
        workers = _num_workers(num)
        if workers <= 1:
            yield from _with_progress(map(_render_encoded, jobs), f"{cfg.name} {split}", num)
            return
        # Rendering is CPU-bound numpy: one process per core. 'spawn', because the renderer
        # uses JAX, whose runtime threads do not survive a fork. imap keeps the order, and every
        # example depends only on (style, seed, split, index): the bytes equal a serial build.
        ctx = multiprocessing.get_context("spawn")
        with _single_threaded_blas():  # the workers start here, with that environment
            pool = ctx.Pool(workers)
        with pool:
            yield from _with_progress(pool.imap(_render_encoded, jobs, chunksize=16),
                                      f"{cfg.name} {split}", num)


def _with_progress(items, what: str, num: int, parts: int = 4):
    """Yields `items`, logging every `parts`-th of `num` with the time left (large splits
    only: a render takes half a minute or more, and TFDS's own progress bars are off on the
    console; four lines a split keep `make demo`'s console short)."""
    every = max(1, num // parts) if num >= 1000 else 0
    start = time.time()
    for i, item in enumerate(items, 1):
        yield item
        if every and (i % every == 0 or i == num):
            spent = time.time() - start
            left = f", about {spent * (num - i) / i:.0f} s left" if i < num else ""
            logging.warning("Rendering %s: %d/%d (%.0f s%s)", what, i, num, spent, left)


@contextlib.contextmanager
def _single_threaded_blas():
    """One BLAS/OpenMP thread in processes spawned inside (they inherit the environment).

    The texture noise is a few small matrix products; with one OpenBLAS thread pool per worker,
    N workers on N cores oversubscribed the machine and the capture style rendered 2-4x slower
    than one worker alone.
    """
    names = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _num_workers(num: int) -> int:
    """Render worker processes, from HPE_JAX_RENDER_WORKERS (default 1: render in-process).

    Opt-in, because 'spawn' re-imports the caller's main module: a script must guard its entry
    point with `if __name__ == "__main__":` (tools/ do). Small splits always render in-process,
    since starting a worker costs seconds.
    """
    workers = int(os.environ.get("HPE_JAX_RENDER_WORKERS", "1"))
    return 1 if num < 512 else max(1, workers)


def _render_encoded(job: tuple) -> tuple[str, dict]:
    """Renders one example and encodes it into the feature dict (runs in worker processes)."""
    style, seed, index, image_size, split_id, split = job
    ex = render.render_example(style, seed, index, image_size, split_id)
    key = f"{split}_{index:06d}"
    out = {
        # A style that ends in JPEG keeps the camera's own JPEG (exactly what `render` decoded);
        # the others are stored losslessly.
        "image": ex["image_jpeg"] if "image_jpeg" in ex else _png(ex["image"]),
        "keypoints_2d": ex["keypoints_2d"],
        "keypoints_3d": ex["keypoints_3d"],
        "visibility": ex["visibility"],
        "K": ex["K"],
        "bbox": ex["bbox"],
        "hand_side": "right",
        "id": key,
    }
    if style.with_depth:
        out["depth"] = ex["depth"]
    if style.with_mask:
        out["mask"] = _png(ex["mask"][..., 0])
    return key, out
