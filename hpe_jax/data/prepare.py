"""Builds the datasets a config names that need no download (the rendered `synthetic_hands`)."""

from __future__ import annotations

import os

import ml_collections
from absl import logging


def prepare_datasets(config: ml_collections.ConfigDict) -> None:
    """Builds (once) the rendered datasets the config names, with parallel rendering.

    Only `synthetic_hands` is built here: it needs no download. Real datasets are built by the
    user with tools/tfds_build.py from their own download (the pipeline says so if one is
    missing).
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415

    import hpe_jax.data  # noqa: F401, PLC0415  (registers the builders)

    os.environ.setdefault("HPE_JAX_RENDER_WORKERS", str(os.cpu_count() or 1))
    for name in (config.data.source, config.data.target):
        if not name.startswith("synthetic_hands"):
            continue
        builder = tfds.builder(name, data_dir=config.data.data_dir or None)
        if not builder.is_prepared():
            logging.warning("Rendering %s into %s (once)", name, builder.data_dir)
            builder.download_and_prepare()
