"""Pure, pmappable train steps: `(state, batch, rng) -> (state, metrics)`.

Each step is a module-level function whose dependencies (the model, the loss weights) are bound
with `functools.partial` as keyword-only arguments; `pmap(axis_name='batch')` wraps the result.
Gradients are averaged over the device axis; BatchNorm statistics are averaged by the model itself
(its `bn_axis_name`) and once more here, which is a no-op when they are already in sync.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from hpe_jax.objectives.contrastive import nt_xent
from hpe_jax.objectives.pose import multimodal_loss
from hpe_jax.training.state import TrainState

Batch = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


def _targets(batch: Batch, with_maps: bool) -> Batch:
    keys = ("uv", "z", "mask", "depth_target") if with_maps else ("uv", "z")
    return {k: batch[k] for k in keys if k in batch}


def _m_loss(pred: dict, target: Batch, loss: ml_collections.ConfigDict) -> dict:
    return multimodal_loss(pred, target, lambda_z=loss.lambda_z, lambda_m=loss.lambda_m,
                           lambda_dm=loss.lambda_dm)


def _split(tree: Any, n: int) -> tuple[Any, Any]:
    return (jax.tree_util.tree_map(lambda x: x[:n], tree),
            jax.tree_util.tree_map(lambda x: x[n:], tree))


def pretrain_losses(
    outputs: dict, batch: Batch, loss: ml_collections.ConfigDict, axis_name: str | None
) -> tuple[jnp.ndarray, Metrics]:
    """L_pretrain = L_s + lambda_c L_c (Eq. 2-7) from the model's outputs on both views.

    `outputs` come from one apply on the two views stacked along the batch axis (first half: the
    geometric view G(x), G(d); second half: the texture-augmented positives). L_s supervises the
    first half; the switches `loss.use_depth`, `loss.use_fused`, `loss.use_contrast` give the
    ablations of Table 4.
    """
    n = batch["image"].shape[0]
    targets = _targets(batch, with_maps=True)
    metrics: Metrics = {}
    view, pos = _split(outputs, n)
    total = 0.0
    for name, enabled in (("rgb", True), ("depth", loss.use_depth), ("fused", loss.use_fused)):
        if not enabled:
            continue
        m = _m_loss(view[name], targets, loss)
        total = total + m["total"]
        metrics.update({f"M_{name}/{k}": v for k, v in m.items()})
    metrics["L_s"] = total
    if loss.use_contrast:
        eta = lambda a, b: nt_xent(a, b, loss.temperature, axis_name, loss.contrast_variant)  # noqa: E731
        terms = {"rgb": eta(view["rgb"]["projection"], pos["rgb"]["projection"])}
        if loss.use_depth:
            terms["depth"] = eta(view["depth"]["projection"], pos["depth"]["projection"])
        if loss.use_fused:
            terms["rgb_fused"] = eta(view["rgb"]["projection"], view["fused"]["projection"])
            terms["rgb_fused_pos"] = eta(pos["rgb"]["projection"], pos["fused"]["projection"])
        l_c = sum(terms.values())
        metrics.update({f"L_c/{k}": v for k, v in terms.items()})
        metrics["L_c"] = l_c
        total = total + loss.lambda_c * l_c
    metrics["loss"] = total
    return total, metrics


def _needs_depth(loss: ml_collections.ConfigDict) -> bool:
    return bool(loss.use_depth or loss.use_fused)


def pretrain_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    loss: ml_collections.ConfigDict,
    axis_name: str | None = "batch",
) -> tuple[TrainState, Metrics]:
    """One pre-training step on a labelled multimodal batch (pipeline keys, per device)."""
    del rng  # the model is deterministic; augmentation randomness lives in the input pipeline
    two_views = loss.use_contrast
    rgb = batch["image"]
    depth = batch.get("depth") if _needs_depth(loss) else None
    if two_views:
        rgb = jnp.concatenate([rgb, batch["image_pos"]], 0)
        if depth is not None:
            depth = jnp.concatenate([depth, batch["depth_pos"]], 0)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, updated = model.apply(variables, rgb=rgb, depth=depth, train=True,
                                       mutable=["batch_stats"])
        total, metrics = pretrain_losses(outputs, batch, loss, axis_name)
        return total, (metrics, updated["batch_stats"])

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    return _finish_step(state, grads, batch_stats, metrics, axis_name)


def _finish_step(
    state: TrainState, grads: Any, batch_stats: Any, metrics: Metrics, axis_name: str | None
) -> tuple[TrainState, Metrics]:
    """Averages over devices, applies the update and adds the norms to the metrics."""
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        batch_stats = jax.lax.pmean(batch_stats, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)
    new_state, updates = state.apply_gradients(grads, batch_stats)
    metrics = dict(metrics)
    metrics["norm/grad"] = optax.global_norm(grads)
    metrics["norm/param"] = optax.global_norm(new_state.params)
    metrics["norm/update"] = optax.global_norm(updates)
    return new_state, metrics


def make_pmapped(step: Callable, **kwargs) -> Callable:
    """pmap(partial(step, **kwargs)) over the 'batch' axis, donating the old state."""
    return jax.pmap(functools.partial(step, axis_name="batch", **kwargs), axis_name="batch",
                    donate_argnums=(0,))
