"""Shared builders for tests: a tiny network config and random batches in the pipeline's format."""

from __future__ import annotations

import ml_collections
import numpy as np

from configs import smoke


def tiny_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """configs/smoke.py: a 32-px, width-1/8 ResNet-18 on the tiny synthetic_hands configs."""
    c = smoke.get_config()
    c.data.data_dir = data_dir
    return c


def labelled_batch(n: int, size: int = 32, seed: int = 0, joints: int = 21) -> dict:
    """A random labelled batch with the keys of `pipeline.labelled_dataset` (one device)."""
    rng = np.random.default_rng(seed)
    s = size // 4
    f = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    return {
        "image": f(n, size, size, 3), "image_pos": f(n, size, size, 3),
        "depth": np.tanh(f(n, size, size, 1)), "depth_pos": np.tanh(f(n, size, size, 1)),
        "uv": rng.uniform(0, s - 1, (n, joints, 2)).astype(np.float32),
        "z": 0.5 * f(n, joints),
        "visibility": np.ones((n, joints), np.float32),
        "mask": (rng.uniform(size=(n, s, s, 1)) > 0.5).astype(np.float32),
        "depth_target": np.tanh(f(n, s, s, 1)),
    }


def unlabelled_batch(n: int, size: int = 32, seed: int = 1) -> dict:
    """A random unlabelled batch with the keys of `pipeline.unlabelled_dataset`."""
    rng = np.random.default_rng(seed)
    s = size // 4
    K = np.tile(np.array([[20.0, 0, (s - 1) / 2], [0, 20.0, (s - 1) / 2], [0, 0, 1]],
                         np.float32), (n, 1, 1))
    return {
        "image_weak": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "image_strong": rng.normal(size=(n, size, size, 3)).astype(np.float32),
        "weak_to_strong": np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
        "K_weak": K,
    }


def shard(batch: dict, devices: int) -> dict:
    """[N, ...] -> [devices, N / devices, ...] as the pipeline delivers it."""
    return {k: v.reshape((devices, -1) + v.shape[1:]) for k, v in batch.items()}
