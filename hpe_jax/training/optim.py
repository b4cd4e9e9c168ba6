"""The optax optimizer and the learning-rate schedule that joins pre-training and fine-tuning.

Paper (DM-HPE): Adam, betas (0.9, 0.99); pre-training lr 2.5e-4, x0.1 after epoch 40
and after epoch 50; fine-tuning a constant 2.5e-5 (one optimizer for the whole run: Adam's
moments carry over the switch). Epochs are converted to steps by the caller
(`steps_per_epoch`). Warm-up and global-norm clipping are options (off by default, as in the
paper).
"""

from __future__ import annotations

import math

import optax


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Optimizer steps in one pass over `num_examples` (the last partial batch counts)."""
    if num_examples <= 0 or global_batch_size <= 0:
        raise ValueError(
            f"cannot size an epoch from {num_examples} examples and batch {global_batch_size}; "
            "check the dataset split and the batch size in the config"
        )
    return math.ceil(num_examples / global_batch_size)


PRETRAIN_DECAYS = ("step", "cosine", "linear")


def pretrain_schedule(
    lr: float, boundaries: list[int], factor: float, warmup_steps: int = 0,
    decay: str = "step", total_steps: int = 0, final_factor: float = 0.0,
) -> optax.Schedule:
    """The pre-training lr, with an optional linear warm-up from 0 (the rest then counts from its
    end).

    decay='step' (the paper): piecewise constant, `lr` times `factor` at each step boundary.
    decay='cosine' / 'linear': from `lr` down to `lr * final_factor` over the `total_steps`
    pre-training steps (warm-up included), `boundaries` and `factor` unused: a short budget
    spends fewer steps at the peak and none at a floor (the CPU configs' choice).
    """
    if decay not in PRETRAIN_DECAYS:
        raise ValueError(f"pretrain.decay={decay!r} is not one of {PRETRAIN_DECAYS}")
    if decay == "step":
        schedule = optax.piecewise_constant_schedule(lr, {int(b): factor for b in boundaries})
    elif total_steps == 0:  # no pre-training steps (a fine-tuning-only run): nothing to decay
        schedule = optax.constant_schedule(lr)
    else:
        span = total_steps - warmup_steps
        if span <= 0:
            raise ValueError(f"a {decay} decay needs more pre-training steps ({total_steps}) than "
                             f"warm-up steps ({warmup_steps}); raise pretrain.epochs or lower "
                             "pretrain.warmup_steps")
        schedule = _decayed(lr, decay, span, final_factor)
    if warmup_steps > 0:
        warm = optax.linear_schedule(0.0, lr, warmup_steps)
        schedule = optax.join_schedules([warm, schedule], [warmup_steps])
    return schedule


def _decayed(lr: float, decay: str, span: int, final_factor: float) -> optax.Schedule:
    """From `lr` to `lr * final_factor` over `span` steps, by a half cosine or a line."""
    return (optax.cosine_decay_schedule(lr, span, final_factor) if decay == "cosine"
            else optax.linear_schedule(lr, lr * final_factor, span))


def joined_schedule(
    pretrain: optax.Schedule, switch_step: int | None, finetune_lr: float
) -> optax.Schedule:
    """Pre-training schedule until `switch_step`, then the constant fine-tuning lr."""
    if switch_step is None:
        return pretrain
    return optax.join_schedules([pretrain, optax.constant_schedule(finetune_lr)], [switch_step])


def make_optimizer(
    schedule: optax.Schedule, b1: float = 0.9, b2: float = 0.99, clip_norm: float = 0.0
) -> optax.GradientTransformation:
    """Adam with the given schedule; global-norm clipping first when clip_norm > 0."""
    parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
    parts.append(optax.adam(schedule, b1=b1, b2=b2))
    return optax.chain(*parts)
