import numpy as np
import pytest

from hpe_jax.training import optim


def test_steps_per_epoch_counts_the_partial_batch():
    assert optim.steps_per_epoch(1000, 140) == 8
    with pytest.raises(ValueError, match="check the dataset split"):
        optim.steps_per_epoch(0, 140)


def test_paper_schedule_and_switch_to_finetuning():
    per_epoch = 10
    pre = optim.pretrain_schedule(2.5e-4, [40 * per_epoch, 50 * per_epoch], 0.1)
    sched = optim.joined_schedule(pre, 60 * per_epoch, 2.5e-5)
    np.testing.assert_allclose(
        [sched(0), sched(399), sched(400), sched(499), sched(500), sched(599)],
        [2.5e-4, 2.5e-4, 2.5e-5, 2.5e-5, 2.5e-6, 2.5e-6], rtol=1e-6)
    np.testing.assert_allclose([sched(600), sched(700)], [2.5e-5, 2.5e-5], rtol=1e-6)


def test_warmup():
    sched = optim.pretrain_schedule(1.0, [100], 0.1, warmup_steps=10)
    np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(200)], [0, 0.5, 1.0, 0.1],
                               rtol=1e-6, atol=1e-7)


def test_cosine_and_linear_decays_reach_the_floor_at_the_switch():
    cos = optim.pretrain_schedule(1.0, [5], 0.1, warmup_steps=10, decay="cosine",
                                  total_steps=110, final_factor=0.05)
    # Warm-up, then half-way down at the middle of the rest, the floor at the switch; the step
    # boundaries are ignored.
    np.testing.assert_allclose([cos(5), cos(10), cos(60), cos(110), cos(500)],
                               [0.5, 1.0, 0.525, 0.05, 0.05], rtol=1e-5)
    lin = optim.pretrain_schedule(2.0, [], 0.1, decay="linear", total_steps=100)
    np.testing.assert_allclose([lin(0), lin(25), lin(100)], [2.0, 1.5, 0.0], atol=1e-6)
    joined = optim.joined_schedule(lin, 100, 1e-4)
    np.testing.assert_allclose([joined(99), joined(100)], [0.02, 1e-4], rtol=1e-5)
    # Without pre-training steps (a fine-tuning-only config) there is nothing to decay.
    assert float(optim.pretrain_schedule(1.0, [], 0.1, decay="cosine")(0)) == 1.0


def test_finetune_decay_counts_from_the_switch_and_ends_at_its_floor():
    pre = optim.pretrain_schedule(1e-3, [], 0.1)
    cos = optim.joined_schedule(pre, 100, optim.finetune_schedule(
        3e-4, "cosine", total_steps=200, final_factor=0.1))
    # The pre-training lr up to the switch, the fine-tuning peak at it, half-way down at the
    # middle of the stage and the floor at its last step.
    np.testing.assert_allclose([cos(99), cos(100), cos(200), cos(300)],
                               [1e-3, 3e-4, 1.65e-4, 3e-5], rtol=1e-5)
    lin = optim.finetune_schedule(2.0, "linear", total_steps=4)
    np.testing.assert_allclose([lin(0), lin(1), lin(4)], [2.0, 1.5, 0.0], atol=1e-6)
    # The paper's constant lr, also for a decay without a stage to decay over.
    assert float(optim.finetune_schedule(3e-4)(10_000)) == np.float32(3e-4)
    assert float(optim.finetune_schedule(3e-4, "cosine")(50)) == np.float32(3e-4)
    with pytest.raises(ValueError, match="finetune.decay='step' is not one of"):
        optim.finetune_schedule(3e-4, "step", total_steps=10)


def test_bad_decay_settings_say_what_to_change():
    with pytest.raises(ValueError, match="not one of"):
        optim.pretrain_schedule(1.0, [], 0.1, decay="exp", total_steps=10)
    with pytest.raises(ValueError, match="raise pretrain.epochs"):
        optim.pretrain_schedule(1.0, [], 0.1, warmup_steps=10, decay="cosine", total_steps=10)


def test_reset_adam_moments_zeroes_adam_and_keeps_the_schedule_position():
    import jax
    import jax.numpy as jnp
    import optax

    schedule = optim.joined_schedule(optim.pretrain_schedule(1e-3, [], 0.1), 3, 1e-4)
    tx = optim.make_optimizer(schedule, clip_norm=1.0)
    params = {"w": jnp.ones((2, 3))}
    state = tx.init(params)
    for _ in range(5):
        _, state = tx.update({"w": jnp.full((2, 3), 0.5)}, state, params)
    reset = optim.reset_adam_moments(state)

    def find(tree, kind):
        nodes = jax.tree_util.tree_leaves(tree, is_leaf=lambda x: isinstance(x, kind))
        return [n for n in nodes if isinstance(n, kind)][0]

    adam, old = find(reset, optax.ScaleByAdamState), find(state, optax.ScaleByAdamState)
    assert int(old.count) == 5 and float(jnp.abs(old.nu["w"]).sum()) > 0
    assert int(adam.count) == 0
    assert not np.any(adam.mu["w"]) and not np.any(adam.nu["w"])
    # The schedule still counts from the run's start: the next update uses the fine-tuning lr.
    sched_old = find(state, optax.ScaleByScheduleState)
    sched_new = find(reset, optax.ScaleByScheduleState)
    assert int(sched_new.count) == int(sched_old.count) == 5
    # A fresh Adam's first step is lr * sign(g) (bias-corrected): 1e-4 here, not 1e-3.
    updates, _ = tx.update({"w": jnp.full((2, 3), 0.5)}, reset, params)
    np.testing.assert_allclose(np.asarray(updates["w"]), -1e-4, rtol=1e-3)
