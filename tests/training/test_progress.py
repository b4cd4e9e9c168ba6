"""The console progress line: its ETA follows the last interval's rate."""

from absl import logging

from hpe_jax.training import loop


def test_eta_uses_the_last_interval_after_a_slow_first_one(monkeypatch):
    clock = {"t": 100.0}
    monkeypatch.setattr(loop.time, "time", lambda: clock["t"])
    lines = []
    monkeypatch.setattr(logging, "info", lambda fmt, *a: lines.append(fmt % a))
    progress = loop._Progress(loop.Plan(0, 250, 1))
    progress.before_first_step("finetune", 0)
    progress.after_first_step(1, lambda: None)          # compiled; rate counted from here
    clock["t"] += 98.0                                   # slow first interval: 49 steps in 98 s
    progress.log(50, {"loss": 1.0})
    assert "0.50 steps/s" in lines[-1] and "ETA 6m40s" in lines[-1]
    clock["t"] += 25.0                                   # then 50 steps in 25 s
    progress.log(100, {"loss": 1.0})
    # 150 steps left at 2 steps/s: 75 s (a cumulative rate would say 150 / (99 / 123) = 186 s).
    assert "2.00 steps/s" in lines[-1] and "ETA 1m15s" in lines[-1]
