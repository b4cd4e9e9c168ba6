"""Reading training checkpoints (hpe_jax/training/checkpoint.py): resume (one tree at every step,
the teacher included), teacher / student / online selection, config checks, damaged steps."""

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from helpers import random_params, tiny_config

from hpe_jax.training import checkpoint, factory
from hpe_jax.training.state import TrainState, ema_update

STEP = 7


def _small_state(step: int) -> TrainState:
    """A TrainState of a two-leaf model (no network needed to test the checkpoint's layout)."""
    variables = {"params": {"w": jnp.arange(6.0).reshape(2, 3)},
                 "batch_stats": {"mean": jnp.ones(3)}}
    state = TrainState.create(variables, _TX)
    return state.replace(step=jnp.int32(step))


_TX = optax.adam(1e-3)  # one object: the state's tree compares its static `tx` by equality


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config, workdir): a fine-tuning-phase checkpoint of the tiny network at step 7 whose EMA
    teacher differs from the student."""
    config = tiny_config()
    model = factory.build_model(config.model, None)
    state = TrainState.create(random_params(model, 32, 0), optax.adam(1e-3))
    teacher = random_params(model, 32, 1)
    state = state.replace(step=jnp.int32(STEP), teacher_params=teacher["params"],
                          teacher_batch_stats=teacher["batch_stats"])
    workdir = str(tmp_path_factory.mktemp("run"))
    checkpoint.save(checkpoint.make_manager(workdir, 2), state, wait=True)
    return config, workdir, state


def _assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_state_tree_is_the_same_at_step_0_and_after_the_switch_and_round_trips(tmp_path):
    """The teacher is in the state from step 0: the state's tree (and so every checkpoint's) is
    the same before the switch, at it (teacher reset to the student) and after it (an EMA
    teacher that differs); each saved step restores into the step-0 template unchanged."""
    manager = checkpoint.make_manager(str(tmp_path), keep=5)
    template = _small_state(0)
    assert checkpoint.restore_latest(manager, template) is None
    before = _small_state(3)
    at_switch = _small_state(4).with_teacher()
    after = _small_state(6)
    after = after.replace(params=jax.tree_util.tree_map(lambda x: x * 2.0, after.params),
                          teacher_params=ema_update(after.teacher_params, after.params, 0.5))
    structure = jax.tree_util.tree_structure(template)
    for state in (before, at_switch, after):
        assert jax.tree_util.tree_structure(state) == structure
        checkpoint.save(manager, state, wait=True)
        resumed = checkpoint.restore_latest(manager, template)
        assert int(resumed.step) == int(state.step)
        assert jax.tree_util.tree_structure(resumed) == structure
        _assert_same(resumed, state)
    _assert_same(checkpoint.restore(manager, template, 3), before)


def test_checkpoint_written_without_a_teacher_is_refused_clearly(tmp_path):
    """Checkpoints of versions whose state had no teacher before the switch are not read."""
    manager = checkpoint.make_manager(str(tmp_path), keep=5)
    old = {k: v for k, v in checkpoint._to_saveable(_small_state(4)).items()
           if not k.startswith("teacher_")}
    manager.save(4, args=ocp.args.StandardSave(old))
    manager.wait_until_finished()
    with pytest.raises(ValueError, match="has no teacher"):
        checkpoint.load_variables(str(tmp_path))


def test_teacher_student_and_online_selection(run, tmp_path):
    """The EMA teacher by default; the student with student=True; always the student for
    finetune.teacher="online" (its model is the student); and 'student' weights for a checkpoint
    whose teacher equals its student (before the switch). A misspelt teacher mode is refused."""
    config, workdir, state = run
    ck = checkpoint.load_training_checkpoint(config, workdir)
    assert (ck.step, ck.weights) == (STEP, "teacher")
    assert ck.path == os.path.join(workdir, "checkpoints")
    _assert_same(ck.variables["params"], state.teacher_params)
    student = checkpoint.load_training_checkpoint(config, workdir, student=True)
    assert student.weights == "student"
    _assert_same(student.variables["params"], state.params)

    online = copy.deepcopy(config)
    online.finetune.teacher = "online"
    ck = checkpoint.load_training_checkpoint(online, workdir)
    assert ck.weights == "student"
    _assert_same(ck.variables, student.variables)
    online.finetune.teacher = "EMA"
    with pytest.raises(ValueError, match=r"'ema', 'online'"):
        checkpoint.load_training_checkpoint(online, workdir)

    pretrained = str(tmp_path / "pretrained")
    checkpoint.save(checkpoint.make_manager(pretrained, 2), state.with_teacher(), wait=True)
    ck = checkpoint.load_training_checkpoint(config, pretrained)
    assert ck.weights == "student"
    _assert_same(ck.variables, student.variables)


def test_checkpoint_selection_and_clear_errors(run, tmp_path):
    config, workdir, _ = run
    by_dir = checkpoint.load_training_checkpoint(
        config, "", checkpoint=os.path.join(workdir, "checkpoints", str(STEP)))
    assert (by_dir.step, by_dir.weights) == (STEP, "teacher")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpoint.load_training_checkpoint(config, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        checkpoint.load_training_checkpoint(config, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 99 .* steps \[7\]"):
        checkpoint.load_training_checkpoint(config, workdir, checkpoint=99)
    wide = tiny_config()
    wide.model.width = 0.25
    with pytest.raises(ValueError, match="not trained with this config.model"):
        checkpoint.load_training_checkpoint(wide, workdir)


def test_damaged_checkpoint_names_the_step_and_the_intact_ones(tmp_path):
    manager = checkpoint.make_manager(str(tmp_path), keep=5)
    tree = {"params": {"w": np.arange(4096, dtype=np.float32)}}
    for step in (200, 400, 600):
        manager.save(step, args=ocp.args.StandardSave(tree))
        manager.wait_until_finished()
    # Truncate every data file of step 600, as a copy cut short or a full disk would.
    for dirpath, _, files in os.walk(tmp_path / "checkpoints" / "600"):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.getsize(path) > 64 and "metadata" not in name.lower():
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
    with pytest.raises(checkpoint.DamagedCheckpointError,
                       match=r"step 600 in .* is damaged .*intact steps: 400, 200; delete "
                             r".*600 to use step 400"):
        checkpoint.load_variables(str(tmp_path))
