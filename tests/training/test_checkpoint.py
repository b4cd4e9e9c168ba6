"""Reading training checkpoints (hpe_jax/training/checkpoint.py): resume with the teacher exactly
after the switch, teacher / student / online selection, config checks, damaged steps."""

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
from hpe_jax.training.state import TrainState

STEP = 7


def _small_state(step: int) -> TrainState:
    """A TrainState of a two-leaf model (no network needed to test the checkpoint's layout)."""
    variables = {"params": {"w": jnp.arange(6.0).reshape(2, 3)},
                 "batch_stats": {"mean": jnp.ones(3)}}
    state = TrainState.create(variables, optax.adam(1e-3))
    return state.replace(step=jnp.int32(step))


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


def test_restore_latest_expects_the_teacher_exactly_after_the_switch(tmp_path):
    """The step arithmetic of resuming: no teacher at or before the switch (pretrain_steps), an
    EMA teacher after it, never one for an online-teacher run."""
    manager = checkpoint.make_manager(str(tmp_path), keep=5)
    template = _small_state(0)
    assert checkpoint.restore_latest(manager, template, pretrain_steps=4,
                                     ema_teacher=True) is None
    checkpoint.save(manager, _small_state(4), wait=True)         # the switch checkpoint
    at_switch = checkpoint.restore_latest(manager, template, pretrain_steps=4, ema_teacher=True)
    assert int(at_switch.step) == 4 and at_switch.teacher_params is None
    after = _small_state(6).with_teacher()
    after = after.replace(teacher_params=jax.tree_util.tree_map(lambda x: x + 1.0,
                                                                after.teacher_params))
    checkpoint.save(manager, after, wait=True)
    resumed = checkpoint.restore_latest(manager, template, pretrain_steps=4, ema_teacher=True)
    assert int(resumed.step) == 6
    _assert_same(resumed.teacher_params, after.teacher_params)
    _assert_same((resumed.params, resumed.batch_stats, resumed.opt_state),
                 (after.params, after.batch_stats, after.opt_state))

    online = checkpoint.make_manager(str(tmp_path / "online"), keep=5)
    checkpoint.save(online, _small_state(6), wait=True)
    resumed = checkpoint.restore_latest(online, template, pretrain_steps=4, ema_teacher=False)
    assert int(resumed.step) == 6 and resumed.teacher_params is None


def test_checkpoint_of_a_state_with_a_prng_key_still_restores(tmp_path):
    """Checkpoints written while TrainState carried a PRNG key ('rng', never read) hold that
    entry; restoring by the current template reads it and drops it, so those runs resume (and
    their variables load) unchanged."""
    manager = checkpoint.make_manager(str(tmp_path), keep=5)
    before = _small_state(4)
    old = dict(checkpoint._to_saveable(before), rng=np.asarray([0, 42], np.uint32))
    manager.save(4, args=ocp.args.StandardSave(old))
    manager.wait_until_finished()
    resumed = checkpoint.restore_latest(checkpoint.make_manager(str(tmp_path), keep=5),
                                        _small_state(0), pretrain_steps=4, ema_teacher=True)
    assert int(resumed.step) == 4 and resumed.teacher_params is None
    _assert_same((resumed.params, resumed.batch_stats, resumed.opt_state),
                 (before.params, before.batch_stats, before.opt_state))
    variables, step = checkpoint.load_variables(str(tmp_path))
    assert step == 4
    _assert_same(variables, before.variables)


def test_teacher_student_and_online_selection(run):
    """The EMA teacher by default; the student with student=True; and always the student for
    finetune.teacher="online" (a teacher entry there is a stale copy older versions made at the
    switch, never the fine-tuned model). A misspelt teacher mode is refused."""
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
