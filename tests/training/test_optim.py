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
