"""Shared builders for tests: a tiny network config and random batches in the pipeline's format."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from configs import smoke
from hpe_jax.experiments.benchmarking import synthetic_labelled_batch, synthetic_unlabelled_batch
from hpe_jax.training import config_checks


def tiny_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """configs/smoke.py: a 32-px, width-1/8 ResNet-18 on the tiny synthetic_hands configs, its
    derived sizes filled (output_size 8, uv_scale 8: tests call the pipeline, losses and steps
    directly, without the start-up that training runs)."""
    c = smoke.get_config()
    c.data.data_dir = data_dir
    return config_checks.resolve(c)


def tiny_run_config(data_dir: str = "") -> ml_collections.ConfigDict:
    """`tiny_config` as the end-to-end tests train it: the heatmap loss on, epsilon calibrated at
    the switch (median of 2 batches), target-only BatchNorm statistics in fine-tuning (the
    reproduce config's choices). The tests that train it share one xdist group
    (`TRAINING_GROUP`): in one worker process, loop.train's bound-step cache then compiles its
    steps once for all of them."""
    c = tiny_config(data_dir)
    c.keep_checkpoints = 10
    c.loss.heatmap_weight = 1.0
    c.loss.epsilon_quantile = 0.5
    c.loss.epsilon_calibration_batches = 2
    c.finetune.bn_stats = "target"
    return c


TRAINING_GROUP = "tiny_training"


def labelled_batch(n: int, size: int = 32, seed: int = 0) -> dict:
    """A random labelled batch with the keys of `pipeline.labelled_dataset` (one device)."""
    return synthetic_labelled_batch(n, size, size // 4, seed=seed)


def unlabelled_batch(n: int, size: int = 32, seed: int = 1) -> dict:
    """A random unlabelled batch with the keys of `pipeline.unlabelled_dataset`."""
    return synthetic_unlabelled_batch(n, size, size // 4, seed=seed)


def shard(batch: dict, devices: int) -> dict:
    """[N, ...] -> [devices, N / devices, ...] as the pipeline delivers it."""
    return {k: v.reshape((devices, -1) + v.shape[1:]) for k, v in batch.items()}


def random_params(model, size: int, seed: int) -> dict:
    """RGB-path variables {'params', 'batch_stats'} of `model` (a DualModalityNet on size-px
    crops) with random values of the usual scale (real `init` compiles for tens of seconds on
    CPU; the values only need to differ between teacher and student)."""
    abstract = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                              jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    rng = np.random.default_rng(seed)
    out = {}
    for col, tree in abstract.items():
        flat = {}
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            if path[-1] == "kernel":
                value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
            elif path[-1] in ("scale", "var", "beta"):
                value = rng.uniform(0.8, 1.2, leaf.shape)
            else:
                value = 0.05 * rng.normal(size=leaf.shape)
            flat[path] = np.asarray(value, leaf.dtype)
        out[col] = traverse_util.unflatten_dict(flat)
    return out
