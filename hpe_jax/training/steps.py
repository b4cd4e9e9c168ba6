"""Pure, pmappable train steps: `(state, batch, rng) -> (state, metrics)`.

Each step is a module-level function whose dependencies (the model, the `LossConfig`, the
fine-tuning options) are keyword-only arguments; `bind_pretrain`, `bind_finetune` and
`bind_teacher_confidence` are the one place they are bound and `pmap(axis_name='batch')` wraps
the result. The losses themselves are assembled in `objectives/losses.py`.
Gradients are averaged over the device axis; BatchNorm statistics are averaged by the model itself
(its `bn_axis_name`) and once more here, which is a no-op when they are already in sync.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import jax_utils

from hpe_jax.hand.camera import apply_affine
from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.objectives.losses import (
    Batch,
    LossConfig,
    Metrics,
    distillation_loss,
    pretrain_losses,
    pseudo_label_loss,
    supervised_loss,
)
from hpe_jax.objectives.pseudo_labels import make_pseudo_labels
from hpe_jax.training.phases import phase_loss
from hpe_jax.training.state import TrainState, check_teacher, ema_update


def pretrain_step(
    state: TrainState,
    batch: Batch,
    rng: jax.Array,
    *,
    model: nn.Module,
    loss: LossConfig,
    fused_depth: str,
    axis_name: str | None = "batch",
) -> tuple[TrainState, Metrics]:
    """One pre-training step on a labelled multimodal batch (pipeline keys, per device).

    fused_depth: the depth map behind the fused way's attention. 'measured' (the paper): the
      batch's depth, the same input as the depth way. 'predicted': the RGB way's own predicted
      depth map (upsampled, stop-gradient), exactly the input the teacher's second pass gets in
      fine-tuning (`two_pass`); the depth encoder then runs twice (measured for the depth way,
      predicted for the fused way). Fine-tuning's labelled pass follows the same setting.
    """
    del rng  # the model is deterministic; augmentation randomness lives in the input pipeline
    if fused_depth not in FUSED_DEPTH_MODES:
        raise ValueError(f"pretrain.fused_depth={fused_depth!r} is not one of "
                         f"{FUSED_DEPTH_MODES}.")
    two_views = loss.use_contrast
    rgb = batch["image"]
    depth = batch.get("depth") if loss.needs_depth else None
    if two_views:
        rgb = jnp.concatenate([rgb, batch["image_pos"]], 0)
        if depth is not None:
            depth = jnp.concatenate([depth, batch["depth_pos"]], 0)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, updated = apply_labelled(model, variables, rgb, depth, loss, fused_depth)
        total, metrics = pretrain_losses(outputs, batch, loss, axis_name)
        return total, (metrics, updated["batch_stats"])

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(state.params)
    new_state, metrics = _finish_step(state, grads, batch_stats, metrics, axis_name)
    return new_state.teacher_follows(), metrics  # the teacher is the student until the switch


def apply_labelled(model: nn.Module, variables: dict, rgb: jnp.ndarray,
                   depth: jnp.ndarray | None, loss: LossConfig, fused_depth: str
                   ) -> tuple[dict, dict]:
    """The network on a labelled batch in training mode: (outputs of every way, updated
    variables), with the fused way fed the depth `fused_depth` names ('measured': `depth`, as
    the depth way; 'predicted': the RGB way's own predicted map, upsampled, stop-gradient, the
    input the teacher's second pass gets on target images). Pre-training and fine-tuning's L_s
    both run it, so the fused way sees the same input in both phases."""
    if not (fused_depth == "predicted" and loss.use_fused):
        return model.apply(variables, rgb=rgb, depth=depth, train=True, mutable=["batch_stats"])
    ways = ("rgb", "depth") if loss.use_depth else ("rgb",)
    outputs, updated = model.apply(variables, rgb=rgb, depth=depth, train=True, ways=ways,
                                   mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
    fused, updated = model.apply(variables, rgb, outputs["rgb"], train=True,
                                 method=DualModalityNet.fused_pass, mutable=["batch_stats"])
    return {**outputs, "fused": fused}, updated


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


def bind_pretrain(model: nn.Module, config: ml_collections.ConfigDict) -> Callable:
    """`pretrain_step` for `config`, pmapped over the 'batch' axis: `(state, batch, rng)` with
    a leading device axis on each, donating the old state."""
    return _pmapped(pretrain_step, model, phase_loss(config, "pretrain"),
                    fused_depth=config.pretrain.fused_depth)


def bind_finetune(model: nn.Module, config: ml_collections.ConfigDict, template: Any,
                  epsilon: float | None = None) -> Callable:
    """`finetune_step` for `config` (its loss, `finetune.teacher`, `ema_decay`, `bn_stats`)
    with rho's (21, 3) `template`, pmapped like `bind_pretrain`; `epsilon` (a calibrated one)
    replaces `loss.epsilon`."""
    loss = phase_loss(config, "finetune")
    if epsilon is not None:
        loss = dataclasses.replace(loss, epsilon=float(epsilon))
    ft = config.finetune
    return _pmapped(finetune_step, model, loss, template=_hashable(template),
                    teacher=ft.teacher, ema_decay=float(ft.ema_decay),
                    bn_stats=ft.bn_stats,
                    fused_depth=config.pretrain.fused_depth)


def bind_teacher_confidence(model: nn.Module, config: ml_collections.ConfigDict,
                            template: Any) -> Callable:
    """`teacher_confidence` pmapped: `(variables, images, K)` -> C per image, (devices, N)."""
    return _pmapped(teacher_confidence, model, LossConfig.from_config(config.loss),
                    donate=False, template=_hashable(template))


def bind_target_batch_stats(model: nn.Module, config: ml_collections.ConfigDict) -> Callable:
    """`target_batch_stats` pmapped: `(variables, images)` -> BatchNorm statistics."""
    return _pmapped(target_batch_stats, model, LossConfig.from_config(config.loss),
                    donate=False)


def _hashable(template: Any) -> tuple:
    return tuple(map(tuple, np.asarray(template, np.float32).tolist()))


# Bound steps are cached on (step, model, loss, options): a Linen module and a LossConfig
# compare by value, so a second run of the same configuration in one process (an ablation's
# rows, a resume, the tests) reuses the compiled program instead of compiling it again.
@functools.lru_cache(maxsize=16)
def _pmapped(step: Callable, model: nn.Module, loss: LossConfig, donate: bool = True,
             **options: Any) -> Callable:
    if "template" in options:
        options["template"] = jnp.asarray(options["template"], jnp.float32)
    options["axis_name"] = "batch"
    return jax.pmap(functools.partial(step, model=model, loss=loss, **options),
                    axis_name="batch", donate_argnums=(0,) if donate else ())


def replicate(tree: Any, devices: list | None = None) -> Any:
    """`tree` copied onto each local device (a leading device axis on every leaf), placed as the
    bound steps return their state.

    Why not `flax.jax_utils.replicate` alone: its arrays carry a sharding over another mesh than
    a pmapped step's outputs, and pmap's cache compares input shardings, so the step's second
    call (fed the first call's output) traced and compiled the whole program a second time
    (seen in `make demo` with JAX_LOG_COMPILES=1: two identical 8-15 s compilations of the
    fine-tuning step). An identity pmap over the same axis puts the copy where the steps do.
    """
    copied = jax_utils.replicate(tree, devices)
    return jax.pmap(lambda x: x, axis_name="batch", devices=devices)(copied)


BN_STATS_MODES = ("shared", "target")
FUSED_DEPTH_MODES = ("measured", "predicted")


def check_options(config: ml_collections.ConfigDict) -> None:
    """Refuses an unknown name in the steps' string switches at start-up, before pre-training
    runs (the steps themselves check them only when they are traced)."""
    for field, value, allowed in (
            ("pretrain.fused_depth", config.pretrain.fused_depth,
             FUSED_DEPTH_MODES),
            ("finetune.bn_stats", config.finetune.bn_stats, BN_STATS_MODES)):
        if value not in allowed:
            raise ValueError(f"{field}={value!r} is not one of {allowed}.")


def two_pass(
    model: nn.Module, variables: dict, image: jnp.ndarray, *, train: bool,
    bn_stats: str | None = None,
) -> tuple[dict, dict, Any]:
    """`DualModalityNet.two_pass` on `image` (N, S, S, 3): returns (y_R, y_F, batch_stats).

    In training mode both passes normalise with their own batch statistics; `bn_stats` only
    chooses which running statistics come back (what inference-mode BatchNorm later uses):
    'shared' threads them through both passes (the RGB encoder and the decoder end up averaging
    plain and attention-fused features); 'target' keeps pass 1's for the RGB encoder, the decoder
    and the projections (the statistics of the deployed RGB-only path) and takes only the depth
    encoder's from pass 2 (its only pass). In inference mode the variables' own come back (and
    `bn_stats` is not read).
    """
    if not train:
        y_r, y_f = model.apply(variables, image, method=DualModalityNet.two_pass)
        return y_r, y_f, variables["batch_stats"]
    if bn_stats not in BN_STATS_MODES:
        raise ValueError(f"finetune.bn_stats={bn_stats!r} is not one of {BN_STATS_MODES}.")
    keep_first = bn_stats == "target"
    (y_r, y_f), updated = model.apply(
        variables, image, train=True, keep_first_pass_stats=keep_first,
        method=DualModalityNet.two_pass, mutable=["batch_stats", "first_pass"])
    final = updated["batch_stats"]
    if keep_first:
        first = updated["first_pass"]["batch_stats"][0]
        final = {**first, "depth_encoder": final["depth_encoder"]}
    return y_r, y_f, final


def teacher_confidence(
    variables: dict, images: jnp.ndarray, K: jnp.ndarray, *, model: nn.Module,
    loss: LossConfig, template: jnp.ndarray, axis_name: str | None = None,
) -> jnp.ndarray:
    """C(r) of the pseudo-labels `variables` would give unlabelled `images` (N, S, S, 3) with
    output-resolution intrinsics K (N, 3, 3): (N,), as the fine-tuning step computes it (the
    same two passes in inference mode). Used to calibrate epsilon before fine-tuning.
    `axis_name` is unused: per-image values need no reduction over devices (it is there so that
    every bound step takes the same options)."""
    del axis_name
    t_r, t_f, _ = two_pass(model, variables, images, train=False)
    labels = make_pseudo_labels((t_r["uv"], t_r["z"]), (t_f["uv"], t_f["z"]), K, template,
                                lambda_z=loss.lambda_z, epsilon=loss.epsilon,
                                uv_scale=loss.uv_scale, passes=loss.pseudo_label_passes)
    return labels["confidence"]


def target_batch_stats(
    variables: dict, images: jnp.ndarray, *, model: nn.Module, loss: LossConfig,
    axis_name: str | None = None,
) -> Any:
    """The BatchNorm statistics of unlabelled `images` (N, S, S, 3): the two fine-tuning passes
    in training mode with momentum 0, kept per `two_pass`'s 'target' mode (the RGB pass's for
    the RGB encoder, decoder and projections; the fused pass's for the depth encoder). Averaged
    over batches they are AdaBN's statistics (`finetune.adabn_batches`). `loss` and
    `axis_name` are unused (every bound step takes them); the model's own `bn_axis_name`
    already reduces over devices."""
    del loss, axis_name
    fresh = model.clone(bn_momentum=0.0)
    _, _, stats = two_pass(fresh, variables, images, train=True, bn_stats="target")
    return stats


def finetune_step(
    state: TrainState,
    batch: dict[str, Batch],
    rng: jax.Array,
    *,
    model: nn.Module,
    loss: LossConfig,
    template: jnp.ndarray,
    teacher: str,
    ema_decay: float,
    bn_stats: str,
    fused_depth: str,
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
      fused_depth: the fused way's depth input in L_s's labelled pass, as in pre-training
        (`pretrain.fused_depth`, `apply_labelled`).
    """
    del rng
    check_teacher(teacher)  # at trace time: "EMA" must not silently mean "online"
    src, tgt = batch["source"], batch["target"]
    # Pseudo-labels from the teacher on the weak view (inference mode, no gradient).
    t_vars = state.teacher_variables if teacher == "ema" else state.variables
    t_vars = jax.lax.stop_gradient(t_vars)
    t_r, t_f, _ = two_pass(model, t_vars, tgt["image_weak"], train=False)
    labels = make_pseudo_labels((t_r["uv"], t_r["z"]), (t_f["uv"], t_f["z"]), tgt["K_weak"],
                                template, lambda_z=loss.lambda_z, epsilon=loss.epsilon,
                                uv_scale=loss.uv_scale, passes=loss.pseudo_label_passes)
    labels = jax.lax.stop_gradient(labels)
    # Carry r into the student's strong view by the known affine (z is scale-free: unchanged).
    r_uv = apply_affine(tgt["weak_to_strong"], labels["uv"])
    pseudo = {"uv": r_uv, "z": labels["z"], "weights": labels["keep"]}
    src_depth = src.get("depth") if loss.needs_depth else None

    def loss_fn(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        out, upd = apply_labelled(model, variables, src["image"], src_depth, loss, fused_depth)
        l_s, metrics = supervised_loss(out, src, loss)
        start = upd["batch_stats"] if bn_stats == "shared" else state.batch_stats
        variables = {"params": params, "batch_stats": start}
        y_r, y_f, stats = two_pass(model, variables, tgt["image_strong"], train=True,
                                   bn_stats=bn_stats)
        total = l_s
        if loss.use_pseudo:
            l_l, l_metrics = pseudo_label_loss(y_r, y_f, pseudo, loss)
            metrics.update(l_metrics)
            total = total + loss.lambda_l * l_l
        if loss.use_distill:
            metrics["L_d"] = distillation_loss(y_r, y_f, loss)
            total = total + loss.lambda_dist * metrics["L_d"]
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
    if teacher == "online":  # the teacher stays the model to deploy: the student
        return new_state.teacher_follows(), metrics
    new_state = new_state.replace(
        teacher_params=ema_update(new_state.teacher_params, new_state.params, ema_decay),
        teacher_batch_stats=ema_update(new_state.teacher_batch_stats, new_state.batch_stats,
                                       ema_decay),
    )
    return new_state, metrics
