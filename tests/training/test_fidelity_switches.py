"""The method's documented switches (config.loss.pseudo_on, config.loss.contrast_reduction): both
settings run and differ the way they should."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils
from helpers import labelled_batch, shard, tiny_config, unlabelled_batch

from hpe_jax.objectives.contrastive import nt_xent
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.training import factory, optim, steps


def _finetune_metrics(pseudo_on):
    config = tiny_config()
    config.loss.pseudo_on = pseudo_on
    config.loss.epsilon = 1e9  # keep every label: L_l is then non-zero
    config.loss.use_distill = False
    model = factory.build_model(config.model, "batch")
    tx = optim.make_optimizer(optim.pretrain_schedule(1e-3, [], 0.1))
    state = factory.initial_state(config, model, tx)
    step = jax.pmap(functools.partial(
        steps.finetune_step, model=model, loss=config.loss,
        template=jnp.asarray(normalized_template()), teacher="online"), axis_name="batch")
    batch = {"source": shard(labelled_batch(2), 1), "target": shard(unlabelled_batch(2), 1)}
    _, metrics = step(jax_utils.replicate(state), batch, jax.random.split(jax.random.PRNGKey(0), 1))
    return {k: float(v[0]) for k, v in metrics.items()}


def test_pseudo_on_both_and_rgb_run_and_rgb_drops_the_fused_term():
    both, rgb = _finetune_metrics("both"), _finetune_metrics("rgb")
    assert np.isfinite(both["L_l"]) and np.isfinite(rgb["L_l"])
    # Same weights, same batch: "both" adds l(p_F, r) > 0 to the same l(p_R, r).
    assert 0.0 < rgb["L_l"] < both["L_l"]
    with pytest.raises(ValueError, match="'both' or 'rgb'"):
        _finetune_metrics("fused")


def test_contrast_reduction_sum_is_the_mean_times_the_batch():
    rng = np.random.default_rng(0)
    z, zp = rng.normal(size=(2, 12, 16)).astype(np.float32)
    mean = float(nt_xent(z, zp, 0.5))
    np.testing.assert_allclose(float(nt_xent(z, zp, 0.5, reduction="sum")), 12 * mean, rtol=1e-5)
    np.testing.assert_allclose(float(nt_xent(z, zp, 0.5, variant="simclr", reduction="sum")),
                               12 * float(nt_xent(z, zp, 0.5, variant="simclr")), rtol=1e-5)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        nt_xent(z, zp, 0.5, reduction="none")
