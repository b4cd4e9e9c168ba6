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

from hpe_jax.hand.camera import apply_affine
from hpe_jax.objectives.contrastive import nt_xent
from hpe_jax.objectives.heatmap import heatmap_kl
from hpe_jax.objectives.pose import multimodal_loss
from hpe_jax.objectives.pseudo_labels import make_pseudo_labels
from hpe_jax.training.state import TrainState, check_teacher, ema_update

Batch = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]


def _targets(batch: Batch, with_maps: bool, use_visibility: bool = False) -> Batch:
    """The labelled targets of M; with `use_visibility` (config.loss.use_visibility) the pose
    term is weighted per joint by the batch's visibility (0 for joints that are occluded or
    that augmentation pushed off the crop, where the soft-argmax cannot reach)."""
    keys = ("uv", "z", "mask", "depth_target") if with_maps else ("uv", "z")
    out = {k: batch[k] for k in keys if k in batch}
    if use_visibility:
        out["joint_weights"] = batch["visibility"]
    return out


def _m_loss(pred: dict, target: Batch, loss: ml_collections.ConfigDict,
            labelled: bool = False) -> dict:
    """M(y, target); on labelled targets plus the optional auxiliary heatmap term."""
    m = multimodal_loss(pred, target, lambda_z=loss.lambda_z, lambda_m=loss.lambda_m,
                        lambda_dm=loss.lambda_dm, uv_scale=loss.uv_scale)
    weight = loss.get("heatmap_weight", 0.0)
    if labelled and weight > 0:
        m["heatmap"] = heatmap_kl(pred["heatmaps"], target["uv"], loss.heatmap_sigma)
        m["total"] = m["total"] + weight * m["heatmap"]
    return m


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
    targets = _targets(batch, with_maps=True,
                       use_visibility=loss.get("use_visibility", False))
    metrics: Metrics = {}
    view, pos = _split(outputs, n)
    total = 0.0
    for name, enabled in (("rgb", True), ("depth", loss.use_depth), ("fused", loss.use_fused)):
        if not enabled:
            continue
        m = _m_loss(view[name], targets, loss, labelled=True)
        total = total + m["total"]
        metrics.update({f"M_{name}/{k}": v for k, v in m.items()})
    metrics["L_s"] = total
    if loss.use_contrast:
        terms = contrastive_terms(view, pos, loss, axis_name)
        l_c = sum(terms.values())
        metrics.update({f"L_c/{k}": v for k, v in terms.items()})
        metrics["L_c"] = l_c
        total = total + loss.lambda_c * l_c
    metrics["loss"] = total
    return total, metrics


def contrastive_terms(
    view: dict, pos: dict, loss: ml_collections.ConfigDict, axis_name: str | None
) -> dict[str, jnp.ndarray]:
    """The terms of L_c for `loss.contrast_mode` (Table 3 of the paper).

    'ours' (Eq. 7): eta(z_R, z_R+) + eta(z_D, z_D+) + eta(z_R, z_F) + eta(z_R+, z_F+); RGB and
    depth features are never paired directly. 'intra': the two intra-modal terms only.
    'intra_cross': intra-modal plus direct RGB-depth contrast eta(z_R, z_D) + eta(z_R+, z_D+).
    'l1_align': mean |z_R - z_D|_1 feature alignment (no negatives). Terms that need the depth
    path are dropped when `loss.use_depth` is off; the fused ones when `loss.use_fused` is off.
    """
    def eta(a: str, b: str, first: dict, second: dict) -> jnp.ndarray:
        return nt_xent(first[a]["projection"], second[b]["projection"], loss.temperature,
                       axis_name, loss.contrast_variant,
                       loss.get("contrast_reduction", "mean"))

    mode = loss.contrast_mode
    if mode not in ("ours", "intra", "intra_cross", "l1_align"):
        raise ValueError(f"unknown loss.contrast_mode {mode!r}; use ours, intra, intra_cross "
                         "or l1_align")
    if mode == "l1_align":
        return {"l1_rgb_depth": jnp.mean(jnp.abs(view["rgb"]["projection"]
                                                 - view["depth"]["projection"]))}
    terms = {"rgb": eta("rgb", "rgb", view, pos)}
    if loss.use_depth:
        terms["depth"] = eta("depth", "depth", view, pos)
    if mode == "ours" and loss.use_fused:
        terms["rgb_fused"] = eta("rgb", "fused", view, view)
        terms["rgb_fused_pos"] = eta("rgb", "fused", pos, pos)
    if mode == "intra_cross" and loss.use_depth:
        terms["rgb_depth"] = eta("rgb", "depth", view, view)
        terms["rgb_depth_pos"] = eta("rgb", "depth", pos, pos)
    return terms


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


def _upsample_depth(depth_map: jnp.ndarray, size: int) -> jnp.ndarray:
    """(N, s, s, 1) predicted depth map -> (N, size, size, 1) depth-encoder input (clipped)."""
    n = depth_map.shape[0]
    up = jax.image.resize(depth_map, (n, size, size, 1), method="bilinear")
    return jnp.clip(up, -1.0, 1.0)


BN_STATS_MODES = ("shared", "target")


def two_pass(
    model: nn.Module, variables: dict, image: jnp.ndarray, *, train: bool,
    bn_stats: str = "shared",
) -> tuple[dict, dict, Any]:
    """Pass 1 (RGB alone -> y_R with depth map d_R), pass 2 (RGB with d_R -> y_F).

    The depth map fed to pass 2 is a stop-gradient input: pass 2 refines, it does not train
    pass 1's depth head through the depth encoder. Returns (y_R, y_F, batch_stats).

    In training mode both passes normalise with their own batch statistics; `bn_stats` only
    chooses which running statistics come back (what inference-mode BatchNorm later uses):
    'shared' threads them through both passes (the RGB encoder and the decoder end up averaging
    plain and attention-fused features); 'target' keeps pass 1's for the RGB encoder, the decoder
    and the projections (the statistics of the deployed RGB-only path) and takes only the depth
    encoder's from pass 2 (its only pass).
    """
    if bn_stats not in BN_STATS_MODES:
        raise ValueError(f"finetune.bn_stats={bn_stats!r} is not one of {BN_STATS_MODES}.")
    kwargs = {"mutable": ["batch_stats"]} if train else {}
    out = model.apply(variables, rgb=image, depth=None, train=train, **kwargs)
    out, stats = out if train else (out, {"batch_stats": variables["batch_stats"]})
    y_r = out["rgb"]
    first = stats["batch_stats"]
    depth_in = jax.lax.stop_gradient(_upsample_depth(y_r["depth_map"], image.shape[1]))
    variables = {"params": variables["params"], "batch_stats": first}
    out = model.apply(variables, rgb=image, depth=depth_in, train=train, ways=("fused",),
                      **kwargs)
    out, stats = out if train else (out, stats)
    final = stats["batch_stats"]
    if bn_stats == "target":
        final = {**first, "depth_encoder": final["depth_encoder"]}
    return y_r, out["fused"], final


def teacher_confidence(
    variables: dict, images: jnp.ndarray, K: jnp.ndarray, *, model: nn.Module,
    loss: ml_collections.ConfigDict, template: jnp.ndarray,
) -> jnp.ndarray:
    """C(r) of the pseudo-labels `variables` would give unlabelled `images` (N, S, S, 3) with
    output-resolution intrinsics K (N, 3, 3): (N,), as the fine-tuning step computes it (the
    same two passes in inference mode). Used to calibrate epsilon before fine-tuning."""
    t_r, t_f, _ = two_pass(model, variables, images, train=False)
    labels = make_pseudo_labels((t_r["uv"], t_r["z"]), (t_f["uv"], t_f["z"]), K, template,
                                lambda_z=loss.lambda_z, epsilon=loss.epsilon,
                                uv_scale=loss.uv_scale)
    return labels["confidence"]


def finetune_step(
    state: TrainState,
    batch: dict[str, Batch],
    rng: jax.Array,
    *,
    model: nn.Module,
    loss: ml_collections.ConfigDict,
    template: jnp.ndarray,
    teacher: str = "ema",
    ema_decay: float = 0.999,
    bn_stats: str = "shared",
    axis_name: str | None = "batch",
) -> tuple[TrainState, Metrics]:
    """One fine-tuning step: L_finetune = L_s + lambda_dist L_d + lambda_l L_l (Eq. 8-11).

    Args:
      batch: {'source': labelled multimodal batch, 'target': unlabelled batch with 'image_weak',
        'image_strong', 'weak_to_strong' (3, 3) output-pixel affine, 'K_weak'}.
      template: (21, 3) hand with a unit reference bone (the correction's bone lengths).
      teacher: 'ema' (pseudo-labels from the EMA teacher, updated after the optimizer step) or
        'online' (the paper: the current student, no averaging).
      bn_stats: which passes write BatchNorm running statistics (every pass normalises with its
        own batch in training). 'shared': the labelled source pass, then both target passes, in
        that order, as one sequence. 'target': only the target passes, per `two_pass`'s
        'target' mode, so the statistics that inference (the teacher, evaluation, export) uses
        are those of the RGB path on target images (AdaBN's observation: a domain's own
        normalisation statistics remove much of an appearance shift).
    """
    del rng
    check_teacher(teacher)  # at trace time: "EMA" must not silently mean "online"
    pseudo_on = loss.get("pseudo_on", "both")
    if pseudo_on not in ("both", "rgb"):
        raise ValueError(f"unknown loss.pseudo_on {pseudo_on!r}; use 'both' or 'rgb'")
    src, tgt = batch["source"], batch["target"]
    # Pseudo-labels from the teacher on the weak view (inference mode, no gradient).
    t_vars = state.teacher_variables if teacher == "ema" else state.variables
    t_vars = jax.lax.stop_gradient(t_vars)
    t_r, t_f, _ = two_pass(model, t_vars, tgt["image_weak"], train=False)
    labels = make_pseudo_labels((t_r["uv"], t_r["z"]), (t_f["uv"], t_f["z"]), tgt["K_weak"],
                                template, lambda_z=loss.lambda_z, epsilon=loss.epsilon,
                                uv_scale=loss.uv_scale)
    labels = jax.lax.stop_gradient(labels)
    # Carry r into the student's strong view by the known affine (z is scale-free: unchanged).
    r_uv = apply_affine(tgt["weak_to_strong"], labels["uv"])
    pseudo = {"uv": r_uv, "z": labels["z"], "weights": labels["keep"]}
    src_depth = src.get("depth") if _needs_depth(loss) else None

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        out, upd = model.apply(variables, rgb=src["image"], depth=src_depth, train=True,
                               mutable=["batch_stats"])
        metrics: Metrics = {}
        targets = _targets(src, with_maps=True,
                           use_visibility=loss.get("use_visibility", False))
        l_s = 0.0
        for name, enabled in (("rgb", True), ("depth", loss.use_depth),
                              ("fused", loss.use_fused)):
            if enabled:
                m = _m_loss(out[name], targets, loss, labelled=True)
                l_s = l_s + m["total"]
                metrics[f"M_{name}/total"] = m["total"]
        metrics["L_s"] = l_s
        start = upd["batch_stats"] if bn_stats == "shared" else state.batch_stats
        variables = {"params": params, "batch_stats": start}
        y_r, y_f, stats = two_pass(model, variables, tgt["image_strong"], train=True,
                                   bn_stats=bn_stats)
        total = l_s
        if loss.use_pseudo:
            # loss.pseudo_on: "both" supervises p_R and p_F with r (summed), "rgb" p_R only.
            l_l = _m_loss(y_r, pseudo, loss)["pose"]
            if pseudo_on == "both":
                l_l = l_l + _m_loss(y_f, pseudo, loss)["pose"]
            # The auxiliary heatmap term on kept pseudo-labels, for the reason it exists on
            # labels: the soft-argmax alone moves the logits too little (off by default).
            heat_weight = loss.get("heatmap_pseudo_weight", 0.0)
            if heat_weight > 0:
                heat = heatmap_kl(y_r["heatmaps"], r_uv, loss.heatmap_sigma, pseudo["weights"])
                if pseudo_on == "both":
                    heat = heat + heatmap_kl(y_f["heatmaps"], r_uv, loss.heatmap_sigma,
                                             pseudo["weights"])
                metrics["L_l/heatmap"] = heat
                l_l = l_l + heat_weight * heat
            metrics["L_l"] = l_l
            total = total + loss.lambda_l * l_l
        if loss.use_distill:
            fixed = jax.lax.stop_gradient(y_f) if loss.distill_stop_gradient else y_f
            target = {"uv": fixed["uv"], "z": fixed["z"], "mask": fixed["mask"],
                      "depth_target": fixed["depth_map"]}
            l_d = _m_loss(y_r, target, loss)["total"]
            metrics["L_d"] = l_d
            total = total + loss.lambda_dist * l_d
        metrics["loss"] = total
        agreement = jnp.mean(jnp.linalg.norm(y_r["uv"] - r_uv, axis=-1))
        metrics["pseudo/student_teacher_px"] = agreement
        return total, (metrics, stats)

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    metrics["pseudo/kept"] = jnp.mean(labels["keep"])
    # Mean over the finite confidences: a degenerate label (rejected) must not make the log NaN.
    finite = labels["finite"]
    metrics["pseudo/confidence"] = (
        jnp.sum(jnp.where(finite > 0, labels["confidence"], 0.0)) / jnp.maximum(jnp.sum(finite), 1))
    metrics["pseudo/non_finite"] = 1.0 - jnp.mean(finite)
    new_state, metrics = _finish_step(state, grads, batch_stats, metrics, axis_name)
    if teacher == "ema" and new_state.teacher_params is not None:
        new_state = new_state.replace(
            teacher_params=ema_update(new_state.teacher_params, new_state.params, ema_decay),
            teacher_batch_stats=ema_update(new_state.teacher_batch_stats, new_state.batch_stats,
                                           ema_decay),
        )
    return new_state, metrics
