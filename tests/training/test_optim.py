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


def test_joined_schedule_switches_to_the_constant_fine_tuning_lr():
    pre = optim.pretrain_schedule(1e-3, [], 0.1, decay="cosine", total_steps=100)
    lr = optim.joined_schedule(pre, 100, 3e-4)
    np.testing.assert_allclose([lr(0), lr(100), lr(10_000)], [1e-3, 3e-4, 3e-4], rtol=1e-6)
    assert optim.joined_schedule(pre, None, 3e-4) is pre  # no fine-tuning: pre-training's


def test_bad_decay_settings_say_what_to_change():
    with pytest.raises(ValueError, match="not one of"):
        optim.pretrain_schedule(1.0, [], 0.1, decay="exp", total_steps=10)
    with pytest.raises(ValueError, match="raise pretrain.epochs"):
        optim.pretrain_schedule(1.0, [], 0.1, warmup_steps=10, decay="cosine", total_steps=10)

