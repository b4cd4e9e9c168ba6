"""Shared test set-up: helpers on the path, a persistent XLA cache, the tiny datasets."""

import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Many tests compile the same tiny networks: cache the executables of this process. Only this
# process: the tests' subprocesses run other XLA configurations (4 host devices, tools that split
# the CPU into 2), set by XLA_FLAGS, which JAX's cache key does not include. A test run of
# 2026-11-27 aborted (SIGABRT) inside the cache read while every process shared one directory;
# keeping the configurations apart is the fix (the exact cause was not isolated).
CACHE_DIR = os.path.join(os.path.dirname(__file__), "..", ".jax_cache")
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
os.environ["HPE_JAX_COMPILE_CACHE"] = "off"  # the tools' own cache, in subprocesses


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """synthetic_hands/source_tiny and target_tiny (64 train / 32 test) built once per session."""
    import tensorflow_datasets as tfds

    import hpe_jax.data  # noqa: F401  (registers synthetic_hands)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("source_tiny", "target_tiny"):
        tfds.builder(f"synthetic_hands/{config}", data_dir=data_dir).download_and_prepare()
    return data_dir
