"""The training objectives assembled from their terms: L_pretrain (Eq. 2-7) and L_finetune's
L_s, L_l and L_d (Eq. 8-11), with the loss hyper-parameters as one frozen, typed `LossConfig`.

The steps in `training/steps.py` apply the model, call these, differentiate and update; nothing
here applies a model. `LossConfig` is hashable so that a bound step (and its compiled program)
is reused for every run with the same model and loss (an ablation's rows, a resume, the tests).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from hpe_jax.objectives.contrastive import nt_xent
from hpe_jax.objectives.heatmap import heatmap_kl
from hpe_jax.objectives.pose import multimodal_loss
from hpe_jax.objectives.pseudo_labels import PSEUDO_LABEL_PASSES

Batch = dict[str, jnp.ndarray]
Metrics = dict[str, jnp.ndarray]

CONTRAST_MODES = ("ours", "intra", "intra_cross", "l1_align")
PSEUDO_ON = ("both", "rgb")


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the losses read from `config.loss` (configs/default.py gives each field's meaning
    and its one default; every config starts from it, so every field is always there)."""

    lambda_z: float
    lambda_m: float
    lambda_dm: float
    uv_scale: float
    lambda_c: float
    temperature: float
    contrast_variant: str
    contrast_mode: str
    use_depth: bool
    use_fused: bool
    use_contrast: bool
    lambda_l: float
    lambda_dist: float
    use_pseudo: bool
    use_distill: bool
    distill_stop_gradient: bool
    epsilon: float
    contrast_reduction: str
    heatmap_weight: float
    heatmap_sigma: float
    pseudo_on: str
    label_huber_delta: float
    target_huber_delta: float
    pseudo_label_passes: int

    def __post_init__(self):
        if self.contrast_mode not in CONTRAST_MODES:
            raise ValueError(f"unknown loss.contrast_mode {self.contrast_mode!r}; use "
                             f"{', '.join(CONTRAST_MODES)}")
        if self.pseudo_on not in PSEUDO_ON:
            raise ValueError(f"unknown loss.pseudo_on {self.pseudo_on!r}; use 'both' or 'rgb'")
        if self.pseudo_label_passes not in PSEUDO_LABEL_PASSES:
            raise ValueError(f"loss.pseudo_label_passes={self.pseudo_label_passes}; use 2 (the "
                             "paper's Eq. 8) or 1 (the RGB pass alone)")

    @classmethod
    def from_config(cls, loss: ml_collections.ConfigDict | LossConfig) -> LossConfig:
        """`config.loss` -> LossConfig; fields the losses do not read (template, epsilon's
        calibration) are left out. A LossConfig passes through."""
        if isinstance(loss, LossConfig):
            return loss
        fields = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n in fields if n not in loss]
        if missing:
            raise ValueError(f"config.loss lacks {', '.join(missing)}; start from "
                             "configs/default.py's loss block")
        values = {n: loss[n] for n in fields}
        casts = {"float": float, "bool": bool, "str": str, "int": int}
        return cls(**{n: casts[fields[n].type](v) for n, v in values.items()})

    @property
    def needs_depth(self) -> bool:
        """Whether the labelled passes need the depth input (the depth or fused way)."""
        return self.use_depth or self.use_fused

    @property
    def ways(self) -> tuple[str, ...]:
        """The labelled ways L_s supervises: rgb always, depth and fused by their switches."""
        return ("rgb",) + (("depth",) if self.use_depth else ()) + (
            ("fused",) if self.use_fused else ())


def targets(batch: Batch, with_maps: bool) -> Batch:
    """The labelled targets of M (every joint counts, visible or not, as in the papers)."""
    keys = ("uv", "z", "mask", "depth_target") if with_maps else ("uv", "z")
    return {k: batch[k] for k in keys if k in batch}


def m_loss(pred: dict, target: Batch, loss: LossConfig, labelled: bool = False) -> dict:
    """M(y, target) (Eq. 2); on labelled targets plus the optional auxiliary heatmap term and
    with l's optional Huber form (`label_huber_delta`); on the target's pseudo-labels and
    distillation targets with l's Huber form of `target_huber_delta` (0: the paper's l)."""
    delta = loss.label_huber_delta if labelled else loss.target_huber_delta
    m = multimodal_loss(pred, target, lambda_z=loss.lambda_z, lambda_m=loss.lambda_m,
                        lambda_dm=loss.lambda_dm, uv_scale=loss.uv_scale, huber_delta=delta)
    if labelled and loss.heatmap_weight > 0:
        m["heatmap"] = heatmap_kl(pred["heatmaps"], target["uv"], loss.heatmap_sigma)
        m["total"] = m["total"] + loss.heatmap_weight * m["heatmap"]
    return m


def supervised_loss(outputs: dict, batch: Batch, loss: LossConfig
                    ) -> tuple[jnp.ndarray, Metrics]:
    """L_s = sum over the enabled ways of M(y_way, labels) (Eq. 2), with per-way metrics."""
    labels = targets(batch, with_maps=True)
    total, metrics = 0.0, {}
    for name in loss.ways:
        m = m_loss(outputs[name], labels, loss, labelled=True)
        total = total + m["total"]
        metrics.update({f"M_{name}/{k}": v for k, v in m.items()})
    metrics["L_s"] = total
    return total, metrics


def _split(tree: Any, n: int) -> tuple[Any, Any]:
    return (jax.tree_util.tree_map(lambda x: x[:n], tree),
            jax.tree_util.tree_map(lambda x: x[n:], tree))


def pretrain_losses(
    outputs: dict, batch: Batch, loss: LossConfig, axis_name: str | None
) -> tuple[jnp.ndarray, Metrics]:
    """L_pretrain = L_s + lambda_c L_c (Eq. 2-7) from the model's outputs on both views.

    `outputs` come from one apply on the two views stacked along the batch axis (first half: the
    geometric view G(x), G(d); second half: the texture-augmented positives). L_s supervises the
    first half (the paper: the labelled samples only); the switches `use_depth`, `use_fused`,
    `use_contrast` give the ablations of Table 4.
    """
    view, pos = _split(outputs, batch["image"].shape[0])
    total, metrics = supervised_loss(view, batch, loss)
    if loss.use_contrast:
        terms = contrastive_terms(view, pos, loss, axis_name)
        l_c = sum(terms.values())
        metrics.update({f"L_c/{k}": v for k, v in terms.items()})
        metrics["L_c"] = l_c
        total = total + loss.lambda_c * l_c
    metrics["loss"] = total
    return total, metrics


def contrastive_terms(
    view: dict, pos: dict, loss: LossConfig, axis_name: str | None
) -> dict[str, jnp.ndarray]:
    """The terms of L_c for `contrast_mode` (Table 3 of the paper).

    'ours' (Eq. 7): eta(z_R, z_R+) + eta(z_D, z_D+) + eta(z_R, z_F) + eta(z_R+, z_F+); RGB and
    depth features are never paired directly. 'intra': the two intra-modal terms only.
    'intra_cross': intra-modal plus direct RGB-depth contrast eta(z_R, z_D) + eta(z_R+, z_D+).
    'l1_align': mean |z_R - z_D|_1 feature alignment (no negatives). Terms that need the depth
    path are dropped when `use_depth` is off; the fused ones when `use_fused` is off.
    """
    def eta(a: str, b: str, first: dict, second: dict) -> jnp.ndarray:
        return nt_xent(first[a]["projection"], second[b]["projection"], loss.temperature,
                       axis_name, loss.contrast_variant, loss.contrast_reduction)

    mode = loss.contrast_mode
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


def pseudo_label_loss(y_r: dict, y_f: dict, pseudo: Batch, loss: LossConfig
                      ) -> tuple[jnp.ndarray, Metrics]:
    """L_l (Eq. 10): the kept pseudo-labels `pseudo` ({'uv', 'z', 'weights'}, in the student's
    view) supervise p_R, and with `pseudo_on='both'` p_F too (summed)."""
    ways = (y_r, y_f) if loss.pseudo_on == "both" else (y_r,)
    l_l = sum(m_loss(y, pseudo, loss)["pose"] for y in ways)
    return l_l, {"L_l": l_l}


def distillation_loss(y_r: dict, y_f: dict, loss: LossConfig) -> jnp.ndarray:
    """L_d = M(y_R, y_F) (Eq. 9): the RGB-only prediction learns the fused one (held fixed
    with `distill_stop_gradient`)."""
    fixed = jax.lax.stop_gradient(y_f) if loss.distill_stop_gradient else y_f
    target = {"uv": fixed["uv"], "z": fixed["z"], "mask": fixed["mask"],
              "depth_target": fixed["depth_map"]}
    return m_loss(y_r, target, loss)["total"]
