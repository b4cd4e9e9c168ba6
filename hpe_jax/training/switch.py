"""The switch from pre-training to fine-tuning, in one place, and what it needs: the phases'
input iterators, AdaBN's target statistics, the calibrated epsilon and rho's template.

`enter_finetuning` runs once when the loop reaches the first fine-tuning step: it writes the
switch checkpoint (the pre-trained baseline), resets the teacher to a copy of the student and
re-estimates BatchNorm statistics on target images (AdaBN); Adam's moments carry over;
`finetune_epsilon` then calibrates epsilon (or reads it back on resume). A run resumed after the
switch passes through neither: its checkpoint holds the teacher, statistics and epsilon file.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import jax_utils

from hpe_jax.data import pipeline
from hpe_jax.objectives.pseudo_labels import (
    TEMPLATES,
    bone_ratios,
    normalized_template,
    template_from_bone_ratios,
)
from hpe_jax.training import checkpoint, steps
from hpe_jax.training.phases import phase_augment
from hpe_jax.training.state import TrainState


def iterators(config: ml_collections.ConfigDict, phase: str, start_step: int):
    """The input iterators of a phase, positioned at `start_step` within that phase."""
    data = config.data
    augment = phase_augment(config, phase)
    common = dict(data_dir=data.data_dir or None, input_size=data.input_size,
                  output_size=data.output_size, start_step=start_step, augment=augment)
    labelled = dict(common, with_depth=True, depth_cube_mm=data.depth_cube_mm)
    # The labelled source always carries depth and mask (the method's premise): they are the
    # mask / depth-map targets of M even when the depth branch is switched off (Table 4, row 1).
    if phase == "pretrain":
        return pipeline.labelled_dataset(
            data.source, data.source_split, global_batch_size=config.pretrain.batch_size,
            train=True, seed=config.seed, **labelled)
    source = pipeline.labelled_dataset(
        data.source, data.source_split, global_batch_size=config.finetune.batch_size,
        train=True, seed=config.seed + 1, **labelled)
    target = pipeline.unlabelled_dataset(
        data.target, data.target_split, global_batch_size=config.finetune.unlabelled_batch_size,
        train=True, seed=config.seed + 2, **common)
    return ({"source": s, "target": t} for s, t in zip(source, target, strict=True))



def adapt_batch_stats(config: ml_collections.ConfigDict, model, rstate: TrainState
                      ) -> TrainState:
    """AdaBN at the switch: the student's and the teacher's BatchNorm running statistics
    replaced by the mean over `finetune.adabn_batches` target batches (weak views) of the two
    fine-tuning passes' batch statistics (`steps.target_batch_stats`).

    Pre-trained statistics are those of source images; on the target they mis-normalise every
    layer, so the first teachers' pseudo-labels (and epsilon, calibrated right after) come from
    a model the target's own statistics would already improve. Runs once, after the switch
    checkpoint is written, so a run resumed from that checkpoint adapts identically.
    """
    fn = steps.bind_target_batch_stats(model, config)
    variables = rstate.variables
    batches = iterators(config, "finetune", 0)
    n = int(config.finetune.adabn_batches)
    total = None
    for _ in range(n):
        stats = fn(variables, next(batches)["target"]["image_weak"])
        total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
    mean = jax.tree_util.tree_map(lambda x: x / n, total)
    logging.info("AdaBN: BatchNorm statistics from %d target batches", n)
    return rstate.replace(batch_stats=mean,
                          teacher_batch_stats=jax.tree_util.tree_map(jnp.copy, mean))


EPSILON_FILE = "epsilon.json"


def calibrated_epsilon(config: ml_collections.ConfigDict, model, rstate: TrainState,
                       workdir: str) -> float:
    """epsilon for the pseudo-label test C(r) <= epsilon, calibrated once at the switch.

    The papers' epsilon = 1.5 is in units of their loss on their data and model; how spread the
    four poses of a pseudo-label are depends on how well the pre-trained model already does on
    the target. So, with `loss.epsilon_quantile = q > 0`, the pseudo-label confidences C of the
    model at the switch (the first teacher) are measured on `loss.epsilon_calibration_batches`
    batches of the target's training stream, and epsilon is their q-quantile: about a share q
    of the target images pass at the start, and more as the teacher improves. The value is
    written to workdir/epsilon.json (with the quantiles of C) and read back on resume, so a
    resumed run uses the same epsilon.
    """
    path = os.path.join(workdir, EPSILON_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return float(json.load(f)["epsilon"])
    q = float(config.loss.epsilon_quantile)
    if not 0.0 < q <= 1.0:
        raise ValueError(f"loss.epsilon_quantile={q} must be in (0, 1] (0 = use loss.epsilon)")
    fn = steps.bind_teacher_confidence(model, config, rho_template(config, workdir))
    variables = rstate.teacher_variables
    batches = iterators(config, "finetune", 0)
    values = []
    for _ in range(int(config.loss.epsilon_calibration_batches)):
        tgt = next(batches)["target"]
        values.append(np.asarray(fn(variables, tgt["image_weak"], tgt["K_weak"])).ravel())
    c = np.concatenate(values)
    c = c[np.isfinite(c)]
    if c.size == 0:
        raise RuntimeError("epsilon calibration: every pseudo-label confidence was non-finite")
    epsilon = float(np.quantile(c, q))
    logging.info("epsilon calibrated: %.3f (quantile %.2f of C over %d target images)",
                 epsilon, q, c.size)
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump({"epsilon": epsilon, "quantile": q, "num_images": int(c.size),
                       "confidence_quantiles": {f"{p:.2f}": float(np.quantile(c, p))
                                                for p in (0.1, 0.25, 0.5, 0.75, 0.9)}}, f,
                      indent=1)
    return epsilon


TEMPLATE_FILE = "template.json"


def rho_template(config: ml_collections.ConfigDict, workdir: str) -> np.ndarray:
    """The (21, 3) unit-reference-bone hand whose bone lengths rho corrects pseudo-labels to.

    `loss.template`: "sampler" (default) is the synthetic sampler's hand, the source of the
    shipped configs; "source_mean" (the paper's reading: the source data's hand) averages every
    bone over the source training split, in units of each pose's reference bone. It is measured
    once and written to workdir/template.json, which later runs (resume) read back.
    """
    name = config.loss.template
    if name not in TEMPLATES:
        raise ValueError(f"unknown config.loss.template {name!r}; use one of "
                         f"{', '.join(repr(t) for t in TEMPLATES)}")
    if name == "sampler":
        return normalized_template()
    path = os.path.join(workdir, TEMPLATE_FILE)
    if os.path.exists(path):
        with open(path) as f:
            return template_from_bone_ratios(np.asarray(json.load(f)["bone_ratios"]))
    data = config.data
    kp = pipeline.all_keypoints_3d(data.source, data.source_split, data.data_dir or None)
    ratios = bone_ratios(kp)
    logging.info("rho template: mean bone lengths of %s/%s (%d poses)", data.source,
                 data.source_split, len(kp))
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump({"template": name, "source": data.source, "split": data.source_split,
                       "num_poses": len(kp), "bone_ratios": ratios.tolist()}, f, indent=1)
    return template_from_bone_ratios(ratios)


def enter_finetuning(config: ml_collections.ConfigDict, model, rstate: TrainState, manager,
                     pretrain_steps: int, step: int) -> TrainState:
    """The replicated state as fine-tuning starts at `step`: unchanged when resumed after the
    switch (its checkpoint holds the fine-tuning teacher, moments and statistics); at the switch
    the switch checkpoint is written (when there was pre-training), the teacher reset to a copy
    of the student and AdaBN applied (`finetune.adabn_batches`)."""
    if step > pretrain_steps:
        return rstate
    if pretrain_steps > 0:
        checkpoint.save(manager, jax_utils.unreplicate(rstate), wait=True)
    # After the switch checkpoint was saved, so a run resumed from it resets the same way.
    rstate = rstate.with_teacher()
    if config.finetune.adabn_batches > 0:
        rstate = adapt_batch_stats(config, model, rstate)
    logging.info("Step %d: switching to fine-tuning", step)
    return rstate


def finetune_epsilon(config: ml_collections.ConfigDict, model, rstate: TrainState,
                     workdir: str) -> float | None:
    """The calibrated epsilon (`calibrated_epsilon`) with `loss.epsilon_quantile` > 0, else None
    (the config's loss.epsilon stands)."""
    if config.loss.epsilon_quantile > 0:
        return calibrated_epsilon(config, model, rstate, workdir)
    return None
