"""Per-phase settings: what the config lets differ between pre-training and fine-tuning
besides the step itself (the source's occluders, sleeves and backgrounds; the Huber form of l
on labels).

Each such setting is a tuple of phase names in the config (`data.source_occlusion_phases`,
`loss.label_huber_phases`); the functions here turn the config into the phase's
`AugmentConfig` / `LossConfig`, so the loop and the step binders read one place.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import ml_collections

from hpe_jax.objectives.losses import LossConfig

if TYPE_CHECKING:
    from hpe_jax.data.augment import AugmentConfig

PHASES = ("pretrain", "finetune")


def named_phases(node: ml_collections.ConfigDict, field: str,
                 default: tuple[str, ...] = PHASES) -> tuple[str, ...]:
    """`node[field]` (default `default` when absent) as a tuple of phase names; a name other
    than 'pretrain' or 'finetune' raises a ValueError naming the field."""
    phases = tuple(node.get(field, default))
    if not set(phases) <= set(PHASES):
        raise ValueError(f"{field}={phases!r} may name only 'pretrain' and 'finetune', e.g. "
                         f"{(PHASES[0],)!r}")
    return phases


def phase_augment(config: ml_collections.ConfigDict, phase: str) -> AugmentConfig:
    """The augmentation of `phase`: `data.augment`, with the source occluders, sleeves and
    clutter backgrounds off in the phases `data.source_occlusion_phases` does not name
    (default: fine-tuning only)."""
    # Imported here: the data pipeline needs TensorFlow, which the steps (phase_loss) and the
    # tools that run without it (tools.benchmark, benchmarks/gpu_check.sh) must not import.
    from hpe_jax.data.augment import AugmentConfig

    augment = AugmentConfig(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                               for k, v in config.data.augment.items()})
    if phase not in named_phases(config.data, "source_occlusion_phases", ("finetune",)):
        augment = dataclasses.replace(augment, source_occlusion_probability=0.0,
                                      sleeve_probability=0.0, source_background_probability=0.0)
    return augment


def phase_loss(config: ml_collections.ConfigDict, phase: str) -> LossConfig:
    """The losses of `phase`: `config.loss`, with l on labels squared (label_huber_delta 0) in
    the phases `loss.label_huber_phases` does not name (default: both).

    Why a phase may want the squared l: in fine-tuning L_l and L_d are squared, and a Huber L_s
    beside them lets the pseudo-labels outweigh the labels (measured: configs/reproduce.py)."""
    loss = LossConfig.from_config(config.loss)
    if phase not in named_phases(config.loss, "label_huber_phases"):
        loss = dataclasses.replace(loss, label_huber_delta=0.0)
    return loss
