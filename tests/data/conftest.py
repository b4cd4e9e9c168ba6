"""Shared fixture: the tiny synthetic_hands configs built once per session into a tmp dir."""

import pytest
import tensorflow_datasets as tfds

import hpe_jax.data  # noqa: F401  (registers synthetic_hands)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("source_tiny", "target_tiny"):
        tfds.builder(f"synthetic_hands/{config}", data_dir=data_dir).download_and_prepare()
    return data_dir
