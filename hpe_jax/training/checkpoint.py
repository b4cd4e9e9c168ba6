"""Orbax checkpoints of the train state: periodic, keep-the-last-N, atomic, resumable.

The state is saved as its flax state dict (plain nested dicts of arrays). Orbax writes each step
into a temporary directory and renames it when complete, so an interrupted save never leaves a
checkpoint that `latest_step` would pick up.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from flax import serialization

from hpe_jax.training.state import TrainState


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
    restored = _restore_or_explain(manager, step, ocp.args.StandardRestore(abstract))
    full = serialization.to_state_dict(template)
    full.update(restored)
    return serialization.from_state_dict(template, full)


def load_variables(
    path: str, step: int | None = None, prefer_teacher: bool = True
) -> tuple[dict, int]:
    """Model variables {'params', 'batch_stats'} of a training checkpoint, for inference.

    Args:
      path: a training workdir (holding `checkpoints/`) or the checkpoints directory itself.
      step: which step (default: the latest).
      prefer_teacher: take the EMA teacher's weights where the checkpoint has them (the
        fine-tuned model users should deploy), else the student's. Pass False for runs with
        config.finetune.teacher == "online" (`export.load_training_checkpoint` does): their
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
