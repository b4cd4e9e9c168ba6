"""Orbax checkpoints of the train state: writing them, resuming from them, reading them back.

The state is saved as its flax state dict (plain nested dicts of arrays). Orbax writes each step
into a temporary directory and renames it when complete, so an interrupted save never leaves a
checkpoint that `latest_step` would pick up.

Every reading of a training checkpoint is here: `restore` / `restore_latest` (resuming a run,
with the teacher present exactly after the switch), `load_variables` (the model variables of a
step, teacher or student) and `load_training_checkpoint` (the same checked against a config, for
evaluation and export).

    ck = load_training_checkpoint(config, "runs/demo/train")   # latest step, EMA teacher if any
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
                # No target: a step of the other phase (with/without teacher) is intact too.
                manager.restore(other, args=ocp.args.StandardRestore())
                intact.append(other)
            except Exception:  # noqa: BLE001, S112  (damaged too: not listed)
                continue
        reason = " ".join(str(err).split())[:200]
        where = os.path.join(str(manager.directory), str(step))
        advice = (f"intact steps: {', '.join(map(str, intact))}; delete {where} to use step "
                  f"{intact[0]}" if intact else "no other step restores either")
        raise DamagedCheckpointError(
            f"checkpoint step {step} in {manager.directory} is damaged ({reason}); {advice}"
        ) from err


def make_manager(workdir: str, keep: int) -> ocp.CheckpointManager:
    """A CheckpointManager on `workdir/checkpoints` keeping the last `keep` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                                 options=options)


#: Entries that checkpoints of earlier versions hold and the train state no longer has (the PRNG
#: key 'rng', never read): `restore` reads them with the rest (orbax restores the checkpoint's
#: whole tree) and drops them, so runs written by those versions still resume.
RETIRED_ENTRIES: tuple[str, ...] = ("rng",)


def _to_saveable(state: TrainState) -> dict:
    tree = serialization.to_state_dict(jax.device_get(state))
    # Orbax does not store None leaves; a missing teacher is simply absent.
    return {k: v for k, v in tree.items() if v is not None}


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
    """Restores `step` (default: the latest) into the structure of `template`.

    The template must have a teacher exactly when the checkpoint has one (fine-tuning phase).
    """
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint under {manager.directory}")
    target = _to_saveable(template)
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    abstract.update(_retired_entries(str(manager.directory), step))
    restored = _restore_or_explain(manager, step, ocp.args.StandardRestore(abstract))
    restored = {k: v for k, v in restored.items() if k not in RETIRED_ENTRIES}
    full = serialization.to_state_dict(template)
    full.update(restored)
    return serialization.from_state_dict(template, full)


def restore_latest(manager: ocp.CheckpointManager, state: TrainState, *, pretrain_steps: int,
                   ema_teacher: bool) -> TrainState | None:
    """`state` restored from the latest checkpoint of `manager`, or None if it holds none.

    Checkpoints after the switch (step > pretrain_steps) carry the EMA teacher; the one at the
    switch does not (and an online-teacher run, `ema_teacher` False, never has one: its
    pseudo-labels come from the student), so the template gets a teacher exactly then.
    """
    latest = manager.latest_step()
    if latest is None:
        return None
    has_teacher = ema_teacher and latest > pretrain_steps
    return restore(manager, state.with_teacher() if has_teacher else state, latest)


def load_variables(
    path: str, step: int | None = None, prefer_teacher: bool = True
) -> tuple[dict, int]:
    """Model variables {'params', 'batch_stats'} of a training checkpoint, for inference.

    Args:
      path: a training workdir (holding `checkpoints/`) or the checkpoints directory itself.
      step: which step (default: the latest).
      prefer_teacher: take the EMA teacher's weights where the checkpoint has them (the
        fine-tuned model users should deploy), else the student's. Pass False for runs with
        config.finetune.teacher == "online" (`load_training_checkpoint` does): their
        model is the student.
    Returns:
      (variables, step).
    """
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
    if prefer_teacher and "teacher_params" in tree:
        variables = {"params": tree["teacher_params"],
                     "batch_stats": tree.get("teacher_batch_stats", {})}
    else:
        variables = {"params": tree["params"], "batch_stats": tree.get("batch_stats", {})}
    return variables, int(step)


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
    weights: str       # 'teacher' (EMA), 'student', or 'teacher_if_present' (unreadable metadata)


def load_training_checkpoint(
    config: Any, workdir: str, checkpoint: str | int | None = None, student: bool = False
) -> TrainingCheckpoint:
    """Loads a training run's checkpoint and checks it against `config.model`.

    Args:
      workdir: the training --workdir (with checkpoints/), or its checkpoints/ directory.
      checkpoint: None (the latest), a step (int or digits), or a path to a checkpoints
        directory or to one step's directory inside it.
      student: use the student's weights even where an EMA teacher exists. With
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
    # An online-teacher run's model is its student: a teacher entry in its checkpoint can only
    # be a stale copy (written by versions that made one at the switch), never the result.
    online = _teacher_mode(config) == "online"
    variables, step = load_variables(ckpt_dir, step=step, prefer_teacher=not (student or online))
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
    teacher = False if (student or online) else _has_teacher(ckpt_dir, step)
    weights = {True: "teacher", False: "student", None: "teacher_if_present"}[teacher]
    return TrainingCheckpoint(variables, int(step), ckpt_dir, weights)


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


def _tree_metadata(ckpt_dir: str, step: int) -> Any:
    """The top-level mapping of a checkpoint step's tree metadata (names -> array metadata), read
    without reading the arrays; None if it cannot be read."""
    try:
        manager = ocp.CheckpointManager(
            ckpt_dir, item_handlers=ocp.StandardCheckpointHandler(),
            options=ocp.CheckpointManagerOptions(create=False, read_only=True))
        meta = manager.item_metadata(step)
        return getattr(meta, "tree", meta)
    except Exception:  # noqa: BLE001  (metadata layouts vary across orbax versions)
        return None


def _has_teacher(ckpt_dir: str, step: int) -> bool | None:
    """Whether a training checkpoint holds EMA teacher weights (reads only its tree metadata);
    None if the metadata cannot be read."""
    tree = _tree_metadata(ckpt_dir, step)
    if tree is None:
        return None
    try:
        return "teacher_params" in tree
    except Exception:  # noqa: BLE001  (metadata layouts vary across orbax versions; label only)
        return None


def _retired_entries(ckpt_dir: str, step: int) -> dict[str, jax.ShapeDtypeStruct]:
    """Restore targets for the `RETIRED_ENTRIES` that step `step` holds (from its metadata);
    empty for checkpoints of this version and when the metadata cannot be read (the restore then
    says what is wrong)."""
    tree = _tree_metadata(ckpt_dir, step)
    if not hasattr(tree, "get"):
        return {}
    out = {}
    for key in RETIRED_ENTRIES:
        meta = tree.get(key)
        if meta is not None and hasattr(meta, "shape") and hasattr(meta, "dtype"):
            out[key] = jax.ShapeDtypeStruct(tuple(meta.shape), meta.dtype)
    return out
