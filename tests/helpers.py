"""Shared builders for tests: a tiny network config and random batches in the pipeline's format."""

from __future__ import annotations

import ml_collections

from configs import smoke
from hpe_jax.benchmarking import synthetic_labelled_batch, synthetic_unlabelled_batch


def tiny_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """configs/smoke.py: a 32-px, width-1/8 ResNet-18 on the tiny synthetic_hands configs."""
    c = smoke.get_config()
    c.data.data_dir = data_dir
    return c


def labelled_batch(n: int, size: int = 32, seed: int = 0) -> dict:
    """A random labelled batch with the keys of `pipeline.labelled_dataset` (one device)."""
    return synthetic_labelled_batch(n, size, size // 4, seed=seed)


def unlabelled_batch(n: int, size: int = 32, seed: int = 1) -> dict:
    """A random unlabelled batch with the keys of `pipeline.unlabelled_dataset`."""
    return synthetic_unlabelled_batch(n, size, size // 4, seed=seed)


def shard(batch: dict, devices: int) -> dict:
    """[N, ...] -> [devices, N / devices, ...] as the pipeline delivers it."""
    return {k: v.reshape((devices, -1) + v.shape[1:]) for k, v in batch.items()}
