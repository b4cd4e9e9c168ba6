"""The training loop end to end on the tiny synthetic data: resume, preemption, phase switch."""

import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from helpers import TRAINING_GROUP, tiny_config, tiny_run_config

from hpe_jax.training import checkpoint, loop, switch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(
        (state.params, state.batch_stats, state.opt_state, state.teacher_params))]


def _scalars(workdir):
    """{tag: {step: value}} from the TensorBoard event files the loop wrote."""
    out = {}
    for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = (tf.make_ndarray(value.tensor) if value.HasField("tensor")
                          else value.simple_value)
                if np.ndim(number) == 0 and np.asarray(number).dtype.kind == "f":
                    out.setdefault(value.tag, {})[event.step] = float(number)
    return out


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_resume_is_bitwise_identical_and_phases_switch(tiny_data_dir, tmp_path):
    config = tiny_run_config(tiny_data_dir)
    plan = loop.make_plan(config)
    assert (plan.pretrain_steps, plan.finetune_steps) == (4, 4)
    straight = loop.train(config, str(tmp_path / "straight"))
    assert int(straight.step) == 8 and straight.teacher_params is not None

    # 3 steps, stop; resume to 6 (crossing the switch at 4), stop; resume to the end.
    for stop in (3, 6, 0):
        config.unlock()
        config.stop_after_steps = stop
        config.lock()
        resumed = loop.train(config, str(tmp_path / "resumed"))
    assert int(resumed.step) == 8
    for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
        assert np.array_equal(a, b)
    # The checkpoints before the switch (3) and after it (6) have the same tree, teacher included.
    manager = checkpoint.make_manager(str(tmp_path / "resumed"), keep=10)
    trees = [manager.restore(s, args=ocp.args.StandardRestore()) for s in (3, 6)]
    assert jax.tree_util.tree_structure(trees[0]) == jax.tree_util.tree_structure(trees[1])
    assert "teacher_params" in trees[0]

    # The metrics show the switch: phase, learning rate and the active loss terms change at 4.
    scalars = _scalars(str(tmp_path / "straight"))
    assert [scalars["phase"][s] for s in range(1, 9)] == [0.0] * 4 + [1.0] * 4
    np.testing.assert_allclose([scalars["lr"][s] for s in (1, 4, 5, 8)],
                               [1e-3, 1e-3, 1e-4, 1e-4], rtol=1e-6)
    assert set(scalars["L_c"]) == {1, 2, 3, 4}
    assert set(scalars["L_l"]) == set(scalars["L_d"]) == set(scalars["pseudo/kept"]) == {5, 6, 7, 8}


@pytest.mark.slow  # about 150 s of compiling on a 2-core VM (the exported steps, twice)
@pytest.mark.xdist_group(TRAINING_GROUP)
def test_a_resumed_run_reads_its_traced_steps_back_and_trains_the_same(tiny_data_dir, tmp_path):
    """With the trace cache on (the tools turn it on with the compilation cache), the first run
    writes its pre-training step; the resumed run, as a new process would, reads it back instead
    of tracing it, writes the fine-tuning step, and ends bitwise where an uninterrupted run
    without the cache ends."""
    from hpe_jax.runtime import trace_cache

    config = tiny_run_config(tiny_data_dir)
    straight = loop.train(config, str(tmp_path / "straight"))  # the group's compiled steps
    cache = tmp_path / "traced"
    trace_cache.enable(str(cache))
    try:
        # Run 1 stops at step 3 (pre-training written); run 2 reads it back, crosses the switch
        # at 4 and writes the fine-tuning step.
        for stop, want in ((3, {"loaded": 0, "exported": 1}), (0, {"loaded": 1, "exported": 1})):
            trace_cache._cached_step.cache_clear()  # a new process: nothing in memory
            before = dict(trace_cache.COUNTS)
            config.unlock()
            config.stop_after_steps = stop
            config.lock()
            resumed = loop.train(config, str(tmp_path / "resumed"))
            assert {k: trace_cache.COUNTS[k] - before[k] for k in before} == want
        assert len(list(cache.glob("*" + trace_cache.SUFFIX))) == 2
    finally:
        trace_cache.enable(None)
        trace_cache._cached_step.cache_clear()
    assert int(resumed.step) == 8
    for a, b in zip(_leaves(straight), _leaves(resumed), strict=True):
        assert np.array_equal(a, b)
    # The checkpoints before the switch (3) and after it (6) have the same tree, teacher included.
    manager = checkpoint.make_manager(str(tmp_path / "resumed"), keep=10)
    trees = [manager.restore(s, args=ocp.args.StandardRestore()) for s in (3, 6)]
    assert jax.tree_util.tree_structure(trees[0]) == jax.tree_util.tree_structure(trees[1])
    assert "teacher_params" in trees[0]


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_non_finite_loss_stops_with_step_and_term(tiny_data_dir, tmp_path, monkeypatch):
    # A NaN image in the second batch (not a diverging lr, which would be another optimizer and
    # so another compiled step): the group's compiled pre-training step is reused.
    config = tiny_run_config(tiny_data_dir)
    real = switch.iterators

    def poisoned(config, phase, start_step):
        for i, batch in enumerate(real(config, phase, start_step)):
            yield dict(batch, image=np.full_like(batch["image"], np.nan)) if i == 1 else batch

    monkeypatch.setattr(switch, "iterators", poisoned)
    with pytest.raises(loop.NonFiniteLossError, match=r"non-finite value at step 2 in .*L"):
        loop.train(config, str(tmp_path))
    # Nothing of the bad step was saved: the run holds no checkpoint beyond step 1.
    assert checkpoint.make_manager(str(tmp_path), keep=3).latest_step() in (None, 1)


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_a_short_run_logs_five_intervals_none_across_the_switch(tiny_data_dir, tmp_path,
                                                                caplog):
    """16 steps with log_every_steps 5: intervals of 3 (at least five lines), and the interval
    that would span the switch at step 8 ends there (the phases' metrics differ). A save
    (every 4 steps) flushes the interval to TensorBoard but prints no extra console line."""
    config = tiny_run_config(tiny_data_dir)
    config.pretrain.epochs = 2
    config.finetune.epochs = 2
    config.log_every_steps = 5
    config.checkpoint_every_steps = 4
    with caplog.at_level("INFO"):
        loop.train(config, str(tmp_path))
    lines = [r.getMessage() for r in caplog.records if "/16 " in r.getMessage()]
    assert [x.split()[1] for x in lines] == ["3/16", "6/16", "8/16", "9/16", "12/16",
                                            "15/16", "16/16"]


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tiny_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "tools.train", "--config=configs/smoke.py",
           f"--workdir={workdir}", f"--config.data.data_dir={tiny_data_dir}",
           "--config.pretrain.epochs=200", "--alsologtostderr"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + 400
    while time.time() < deadline and not any(re.search(r"pretrain 3/", ln) for ln in lines):
        assert proc.poll() is None, "".join(lines[-50:])
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 0, "".join(lines[-50:])
    reader.join(timeout=10)
    stopped = [int(m.group(1)) for ln in lines
               if (m := re.search(r"Stopped at step (\d+) after SIGTERM", ln))]
    assert stopped, "".join(lines[-50:])
    manager = checkpoint.make_manager(workdir, keep=3)
    assert manager.latest_step() == stopped[0] >= 3
    _, step = checkpoint.load_variables(workdir)
    assert step == stopped[0]


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_online_teacher_follows_the_student_and_the_checkpoint_reads_as_the_student(
        tiny_data_dir, tmp_path):
    """The paper's online teacher: the state's teacher follows the student, so what evaluation
    and export load by default is the fine-tuned student (not the pre-trained weights)."""
    config = tiny_run_config(tiny_data_dir)
    config.finetune.teacher = "online"
    final = loop.train(config, str(tmp_path))
    assert int(final.step) == 8
    for a, b in zip(jax.tree_util.tree_leaves(final.teacher_variables),
                    jax.tree_util.tree_leaves(final.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    ck = checkpoint.load_training_checkpoint(config, str(tmp_path))
    assert (ck.step, ck.weights) == (8, "student")
    for a, b in zip(jax.tree_util.tree_leaves(ck.variables["params"]),
                    jax.tree_util.tree_leaves(final.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unknown_teacher_is_refused_at_start_up(tiny_data_dir, tmp_path, monkeypatch):
    config = tiny_config(tiny_data_dir)
    config.finetune.teacher = "EMA"
    # Refused before the model is even built (so before anything compiles).
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match=r"unknown config.finetune.teacher 'EMA'.*'ema', 'online'"):
        loop.train(config, str(tmp_path))


@pytest.mark.parametrize("field, value", [("finetune.bn_stats", "domain"),
                                          ("pretrain.fused_depth", "rendered"),
                                          ("pretrain.decay", "exp")])
def test_unknown_step_option_is_refused_at_start_up(tiny_data_dir, tmp_path, monkeypatch,
                                                   field, value):
    config = tiny_config(tiny_data_dir)
    section, name = field.split(".")
    config[section][name] = value
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match=rf"{field}='{value}' is not one of"):
        loop.train(config, str(tmp_path))
