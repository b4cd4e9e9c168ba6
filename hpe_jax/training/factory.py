"""Builds the network and the initial train state from the config (no input pipeline needed)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.training.state import TrainState


def build_model(model_cfg: ml_collections.ConfigDict, axis_name: str | None) -> DualModalityNet:
    """The network from `config.model` (only the fields the constructor takes)."""
    return DualModalityNet(
        resnet_depth=model_cfg.resnet_depth,
        width=model_cfg.width,
        deconv_features=model_cfg.deconv_features,
        proj_hidden=model_cfg.proj_hidden,
        proj_dim=model_cfg.proj_dim,
        attention_eps=model_cfg.attention_eps,
        beta_init=model_cfg.get("beta_init", 1.0),  # configs exported before the field: 1.0
        bn_axis_name=axis_name if model_cfg.bn_cross_device else None,
        dtype=jnp.dtype(model_cfg.dtype),
    )


def initial_state(
    config: ml_collections.ConfigDict, model: DualModalityNet, tx: optax.GradientTransformation
) -> TrainState:
    """Initialises every path of the model (or loads converted encoders) and the optimizer."""
    size = config.data.input_size
    rng = jax.random.PRNGKey(config.seed)
    init_rng, state_rng = jax.random.split(rng)
    rgb = jnp.zeros((1, size, size, 3), jnp.float32)
    depth = jnp.zeros((1, size, size, 1), jnp.float32)
    variables = jax.jit(functools.partial(model.init, train=False))({"params": init_rng}, rgb,
                                                                    depth)
    if config.model.init_from:
        from hpe_jax.models.convert import load_pretrained_encoders  # noqa: PLC0415

        variables = load_pretrained_encoders(variables, config.model.init_from,
                                             config.model.resnet_depth)
    return TrainState.create(variables, tx, state_rng)
