"""Builds the network and the initial train state from the config (no input pipeline needed)."""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from hpe_jax.models.conv import check_conv_grad
from hpe_jax.models.convert import load_pretrained_encoders
from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.runtime.cpu import host_has_avx512
from hpe_jax.training import config_checks
from hpe_jax.training.state import TrainState


def resolve_conv_grad(choice: str, backend: str | None = None,
                      avx512: bool | None = None) -> str:
    """`model.conv_grad`: 'auto' -> 'stored' on the CPU backend of an x86 CPU without AVX-512
    (where it was measured faster, docs/benchmarks.md), else 'xla'; other choices are checked."""
    if choice != "auto":
        return check_conv_grad(choice)
    if (backend or jax.default_backend()) != "cpu":
        return "xla"
    if avx512 is None:
        avx512 = host_has_avx512()
    return "stored" if avx512 is False else "xla"


def build_model(model_cfg: ml_collections.ConfigDict, axis_name: str | None) -> DualModalityNet:
    """The network from `config.model` (only the fields the constructor takes)."""
    return DualModalityNet(
        resnet_depth=model_cfg.resnet_depth,
        width=model_cfg.width,
        deconv_features=model_cfg.deconv_features,
        proj_hidden=model_cfg.proj_hidden,
        proj_dim=model_cfg.proj_dim,
        attention_eps=model_cfg.attention_eps,
        beta_init=model_cfg.beta_init,
        bn_axis_name=axis_name if model_cfg.bn_cross_device else None,
        deconv_impl=model_cfg.deconv_impl,
        stem_pool=model_cfg.stem_pool,
        num_deconv=model_cfg.num_deconv,
        scan_blocks=model_cfg.scan_blocks,
        conv_grad=resolve_conv_grad(model_cfg.conv_grad),
        dtype=jnp.dtype(model_cfg.dtype),
    )


@functools.lru_cache(maxsize=8)
def _jitted_init(model: DualModalityNet):
    # One compiled init per network (Linen modules compare by value): a second run in the same
    # process (a resume, an ablation's rows, the tests) reuses it instead of compiling it again
    # (10-13 s each on a 2-core CPU for the smallest network).
    return jax.jit(functools.partial(model.init, train=False))


def _init_args(config: ml_collections.ConfigDict) -> tuple:
    size = config.data.input_size
    # The first of two keys split from the seed: the weights a seed gives stay the same.
    init_rng = jax.random.split(jax.random.PRNGKey(config.seed))[0]
    return ({"params": init_rng}, jnp.zeros((1, size, size, 3), jnp.float32),
            jnp.zeros((1, size, size, 1), jnp.float32))


def variable_shapes(config: ml_collections.ConfigDict, model: DualModalityNet) -> dict:
    """{'params', 'batch_stats'} of every path of `model` as `jax.ShapeDtypeStruct`s (nothing
    is compiled or allocated)."""
    return jax.eval_shape(_jitted_init(model), *_init_args(config))


def initial_state(
    config: ml_collections.ConfigDict, model: DualModalityNet, tx: optax.GradientTransformation
) -> TrainState:
    """Initialises every path of the model (or loads converted encoders) and the optimizer."""
    config_checks.check_init(config)
    if config.model.init_variables:
        # Every leaf comes from the file: only the shapes of a fresh init are needed, so the
        # init is not compiled (10-13 s on a 2-core CPU), and a file of another network is
        # refused at once.
        like = variable_shapes(config, model)
        return TrainState.create(load_variables(config.model.init_variables, like), tx)
    variables = _jitted_init(model)(*_init_args(config))
    if init_from := config_checks.init_path(config):  # "" and "scratch": random init
        variables = load_pretrained_encoders(variables, init_from, config.model.resnet_depth)
    return TrainState.create(variables, tx)


VARIABLES_FILE = "variables.npz"
META_FILE = "meta.json"


def save_variables(directory: str, variables: dict, meta: dict) -> str:
    """Writes a whole network's variables (params + batch_stats, float32) as one .npz, keyed
    'params/rgb_encoder/conv1/kernel' etc., with meta.json beside it (config, provenance).

    A small, framework-free file the repository can ship (the demo's pre-trained start); the
    optimizer state is not in it. Written to a temporary name and renamed: never half-written.
    """
    os.makedirs(directory, exist_ok=True)
    flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
    tmp = os.path.join(directory, VARIABLES_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **{k: np.asarray(v, np.float32) for k, v in flat.items()})
    os.replace(tmp, os.path.join(directory, VARIABLES_FILE))
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=1, default=float)
    return directory


def load_variables(directory: str, like: dict) -> dict:
    """The variables `save_variables` wrote, checked leaf by leaf against `like` (the freshly
    initialised network of the config, or its `jax.eval_shape`: only shapes and dtypes are
    read): a missing, extra or reshaped leaf is a ValueError that
    names it (the config's model fields must match the ones the file was written with)."""
    path = os.path.join(directory, VARIABLES_FILE)
    if not os.path.exists(path):
        raise ValueError(f"model.init_variables={directory!r}: {path} does not exist; give a "
                         "directory written by `make reproduce` (e.g. assets/demo_pretrained) "
                         "or set model.init_variables='' to start from scratch")
    want = traverse_util.flatten_dict(like, sep="/")
    with np.load(path) as data:
        got = {k: data[k] for k in data.files}
    problems = sorted(set(want) ^ set(got)) + sorted(
        k for k in set(want) & set(got) if tuple(want[k].shape) != got[k].shape)
    if problems:
        raise ValueError(f"{path} does not fit this config's network ({len(problems)} leaves "
                         f"differ, e.g. {problems[:3]}); use the config it was written with "
                         f"(see {os.path.join(directory, META_FILE)})")
    return traverse_util.unflatten_dict(
        {k: jnp.asarray(got[k], want[k].dtype) for k in want}, sep="/")
