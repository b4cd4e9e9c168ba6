"""Orbax checkpoints of the train state: writing them, resuming from them, reading them back.

The state is saved as its flax state dict (plain nested dicts of arrays). Orbax writes each step
into a temporary directory and renames it when complete, so an interrupted save never leaves a
checkpoint that `latest_step` would pick up.

Every reading of a training checkpoint is here: `restore` / `restore_latest` (resuming a run),
`load_variables` (the model variables of a step, teacher or student) and
`load_training_checkpoint` (the same checked against a config, for evaluation and export).
The train state holds its teacher from step 0, so every step's checkpoint has the same tree.
Checkpoints written before that (no teacher before the switch, or a PRNG key 'rng') do not
restore into this state.

    ck = load_training_checkpoint(config, "runs/demo/train")   # latest step, the teacher
    ck.variables, ck.step, ck.weights
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import serialization

from hpe_jax.training import config_checks, factory
from hpe_jax.training.state import TrainState, check_teacher


class DamagedCheckpointError(RuntimeError):
    """A checkpoint step exists but cannot be read (truncated or corrupted files)."""


def _restore_or_explain(manager: ocp.CheckpointManager, step: int, args) -> dict:
    """manager.restore(step, args), or DamagedCheckpointError naming the step and listing the
    steps that do restore (each is tried, only on this failure path)."""
    try:
        return manager.restore(step, args=args)
    except Exception as err:  # orbax/tensorstore raise many types for damaged files
        intact = []
        for other in sorted(manager.all_steps(), reverse=True):
            if other == step:
                continue
            try:
                manager.restore(other, args=ocp.args.StandardRestore())
                intact.append(other)
            except Exception:  # noqa: BLE001, S112  (damaged too: not listed)
                continue
        reason = " ".join(str(err).split())[:200]
        where = os.path.join(str(manager.directory), str(step))
        advice = (f"intact steps: {', '.join(map(str, intact))}; delete {where} to use step "
                  f"{intact[0]}" if intact else "no other step restores either; delete "
                  f"{manager.directory} to train from the start, or pass another --workdir "
                  "(checkpoints written before the teacher joined the state at step 0 do not "
                  "restore: docs/design.md)")
        raise DamagedCheckpointError(
            f"checkpoint step {step} in {manager.directory} is damaged ({reason}); {advice}"
        ) from err


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """A CheckpointManager on `workdir/checkpoints` keeping the last `keep` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


def _to_saveable(state: TrainState) -> dict:
    return serialization.to_state_dict(jax.device_get(state))


def save(manager: ocp.CheckpointManager, state: TrainState, *, wait: bool = False) -> None:
    """Saves an unreplicated state at its step (no-op if that step is already saved)."""
    step = int(jax.device_get(state.step))
    if step in manager.all_steps():
        return
    manager.save(step, args=ocp.args.StandardSave(_to_saveable(state)))
    if wait:
        manager.wait_until_finished()


def restore(manager: ocp.CheckpointManager, template: TrainState, step: int | None = None
            ) -> TrainState:
    """Restores `step` (default: the latest) into the structure of `template`."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {manager.directory}")
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, _to_saveable(template))
    restored = _restore_or_explain(manager, step, ocp.args.StandardRestore(abstract))
    return serialization.from_state_dict(template, restored)


def restore_latest(manager: ocp.CheckpointManager, state: TrainState) -> TrainState | None:
    """`state` restored from the latest checkpoint of `manager`, or None if it holds none."""
    latest = manager.latest_step()
    return None if latest is None else restore(manager, state, latest)


def load_variables(
    path: str, step: int | None = None, prefer_teacher: bool = True
) -> tuple[dict, int]:
    """Model variables {'params', 'batch_stats'} of a training checkpoint, for inference.

    Args:
      path: a training workdir (holding `checkpoints/`) or the checkpoints directory itself.
      step: which step (default: the latest).
      prefer_teacher: take the teacher's weights (the model users should deploy: the EMA
        teacher after the switch, equal to the student before it), else the student's.
    Returns:
      (variables, step).
    """
    tree, step = _read(path, step)
    return _variables(tree, teacher=prefer_teacher), step


def _read(path: str, step: int | None) -> tuple[dict, int]:
    """(the whole saved state dict, its step) of `step` (default: the latest) under `path`."""
    path = os.path.abspath(path)
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    manager = ocp.CheckpointManager(path)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(
            f"no checkpoint found under {path}; pass the --workdir of a training run "
            "(python -m tools.train ...) or its checkpoints/ directory")
    tree = _restore_or_explain(manager, step, ocp.args.StandardRestore())
    if "teacher_params" not in tree:
        raise ValueError(f"checkpoint step {step} under {path} has no teacher: it was written "
                         "before the train state held its teacher from step 0, and this "
                         "version does not read it")
    return tree, int(step)


def _variables(tree: dict, teacher: bool) -> dict:
    prefix = "teacher_" if teacher else ""
    return {"params": tree[prefix + "params"], "batch_stats": tree[prefix + "batch_stats"]}


def _leaf_shapes(tree: Any) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(p): tuple(np.shape(v)) for p, v in flat}


def check_variables(expected: Any, actual: Any, hint: str) -> None:
    """Raises ValueError naming the first mismatch if `actual`'s tree and shapes differ from
    `expected`'s (arrays or ShapeDtypeStructs). `hint` says what the user should do."""
    want, got = _leaf_shapes(expected), _leaf_shapes(actual)
    for name in sorted(set(want) | set(got)):
        if name not in got:
            raise ValueError(f"the weights lack {name} that the model needs; {hint}")
        if name not in want:
            raise ValueError(f"the weights have {name} that the model does not; {hint}")
        if want[name] != got[name]:
            raise ValueError(f"{name} has shape {got[name]} in the weights but {want[name]} in "
                             f"the model; {hint}")


@dataclasses.dataclass(frozen=True)
class TrainingCheckpoint:
    """Variables of a training checkpoint, ready for inference."""

    variables: dict
    step: int
    path: str          # the checkpoints directory
    weights: str       # 'teacher' (the EMA teacher) or 'student' (also a teacher equal to it)


def load_training_checkpoint(
    config: Any, workdir: str, checkpoint: str | int | None = None, student: bool = False
) -> TrainingCheckpoint:
    """Loads a training run's checkpoint and checks it against `config.model`.

    Args:
      workdir: the training --workdir (with checkpoints/), or its checkpoints/ directory.
      checkpoint: None (the latest), a step (int or digits), or a path to a checkpoints
        directory or to one step's directory inside it.
      student: use the student's weights, not the EMA teacher's. With
        config.finetune.teacher == "online" the student is always used (the paper's teacher is
        the student itself).
    Raises:
      FileNotFoundError / ValueError with a message saying what to pass instead.
    """
    config_checks.check_config(config)
    ckpt_dir, step = _resolve(workdir, checkpoint)
    steps = ocp.CheckpointManager(ckpt_dir).all_steps()
    if not steps:
        raise FileNotFoundError(f"no checkpoint found under {ckpt_dir}; pass the --workdir of a "
                                "training run (python -m tools.train ...)")
    if step is not None and step not in steps:
        raise FileNotFoundError(f"no checkpoint of step {step} under {ckpt_dir}; it has steps "
                                f"{sorted(steps)}")
    # An online-teacher run's model is its student (its teacher follows the student).
    online = _teacher_mode(config) == "online"
    tree, step = _read(ckpt_dir, step)
    # The teacher equals the student before the switch: those weights are the student's.
    teacher = not (student or online) and not _equal(_variables(tree, True),
                                                     _variables(tree, False))
    variables = _variables(tree, teacher)
    model = factory.build_model(config.model, None)
    s = config.data.input_size
    # Only the RGB path is checked (and used): encoder, decoder and the RGB projection head.
    abstract = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))
    used = {col: {k: v for k, v in variables.get(col, {}).items() if k in abstract[col]}
            for col in abstract}
    check_variables(abstract, used,
                    f"the checkpoint under {ckpt_dir} was not trained with this config.model; "
                    "pass the --config the run was trained with")
    return TrainingCheckpoint(variables, step, ckpt_dir, "teacher" if teacher else "student")


def _equal(a: Any, b: Any) -> bool:
    """Whether two trees have the same structure and equal leaves."""
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    return ta == tb and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def _teacher_mode(config: Any) -> str:
    """config.finetune.teacher, validated."""
    return check_teacher(config.finetune.teacher)


def _resolve(workdir: str, checkpoint: str | int | None) -> tuple[str, int | None]:
    """(checkpoints directory, step or None) from the workdir and the --checkpoint value."""
    step = None
    path = workdir
    if checkpoint is not None and str(checkpoint).strip() != "":
        text = str(checkpoint).strip()
        if text.isdigit():
            step = int(text)
        else:
            path = text
            base = os.path.basename(os.path.normpath(text))
            if base.isdigit() and os.path.isdir(text):  # a step directory: its parent + step
                path, step = os.path.dirname(os.path.normpath(text)), int(base)
    if not path:
        raise ValueError("pass --workdir (a training run's directory) or --checkpoint=PATH")
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} does not exist; pass the --workdir of a training run "
                                "or --checkpoint=PATH to its checkpoints")
    if os.path.isdir(os.path.join(path, "checkpoints")):
        path = os.path.join(path, "checkpoints")
    return path, step
