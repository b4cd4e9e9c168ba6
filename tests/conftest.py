"""Shared test set-up: helpers on the path, no persistent XLA cache, the tiny datasets."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# No persistent XLA cache in the tests: two fresh-clone runs of 2026-11-27 crashed (SIGABRT,
# then SIGSEGV) inside JAX's persistent-cache read in this process, the second time with the
# cache kept to this process alone. Every test compiles afresh; the tools' cache is off in the
# tests' subprocesses too.
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
os.environ["HPE_JAX_COMPILE_CACHE"] = "off"


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """synthetic_hands/source_tiny and target_tiny (64 train / 32 test) built once per session."""
    import tensorflow_datasets as tfds

    import hpe_jax.data  # noqa: F401  (registers synthetic_hands)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("source_tiny", "target_tiny"):
        tfds.builder(f"synthetic_hands/{config}", data_dir=data_dir).download_and_prepare()
    return data_dir
