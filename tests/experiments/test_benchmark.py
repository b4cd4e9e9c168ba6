"""Smoke test of the throughput benchmark (hpe_jax/experiments/benchmarking.py and
tools/benchmark.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from hpe_jax.experiments import benchmarking


def test_flops_of_reads_both_cost_analysis_forms():
    n = 64
    compiled = jax.jit(jnp.matmul).lower(jnp.ones((n, n)), jnp.ones((n, n))).compile()
    assert benchmarking.flops_of(compiled) == pytest.approx(2 * n**3, rel=0.05)

    class ListForm:  # older jax: one dict per program
        def cost_analysis(self):
            return [{"flops": 12.0}]

    class NoModel:
        def cost_analysis(self):
            return None

    assert benchmarking.flops_of(ListForm()) == 12.0
    assert benchmarking.flops_of(NoModel()) is None


def test_tiny_benchmark_reports_consistent_throughput_and_mfu():
    config = tiny_config()
    config.pretrain.batch_size = 4
    config.eval_batch_size = 4
    # The RGB-only step (Table 4's first row) keeps the compile short; the timing, FLOP and MFU
    # code paths are the same as for the full step.
    config.loss.use_depth = False
    config.loss.use_fused = False
    config.loss.use_contrast = False
    out = benchmarking.run_benchmarks(config, ["peak", "pretrain", "eval"], steps=2, repeats=2,
                                      warmup=1, peak_size=256, log=lambda _: None)
    json.dumps(out)  # the tool writes this dict as JSON
    peak = out["peak_float32"]["flops_per_s"]
    assert peak > 0
    for name, items in (("train_pretrain", 4), ("eval", 4)):
        r = out[name]
        assert len(r["images_per_s_all"]) == 2
        assert r["images_per_s"] == pytest.approx(items / r["step_time_s_best"])
        assert r["images_per_s_worst"] <= r["images_per_s_median"] <= r["images_per_s"]
        assert r["flops_per_step"] > 0
        assert r["achieved_flops_per_s"] == pytest.approx(
            r["flops_per_step"] / r["step_time_s_best"])
        assert r["mfu"] == pytest.approx(r["achieved_flops_per_s"] / peak)
        assert 0 < r["mfu"] < 1.5  # a timed matmul is close to the real peak
    assert np.isfinite(out["train_pretrain"]["final_loss"])
    # A training step (forward + backward on one image) costs more than inference on one image.
    assert out["train_pretrain"]["flops_per_step"] > out["eval"]["flops_per_step"]


def test_time_loop_runs_warmup_and_every_step():
    calls = []
    times, carry = benchmarking.time_loop(lambda c: calls.append(c) or c + 1, 0, steps=3,
                                          repeats=2, warmup=1)
    assert len(times) == 2 and all(t >= 0 for t in times)
    assert carry == 7 and len(calls) == 7
    with pytest.raises(ValueError, match="steps >= 1"):
        benchmarking.time_loop(lambda c: c, 0, steps=0, repeats=1)


def _run_tool(tmp_path, *args, timeout=600):
    """tools/benchmark.py in a subprocess where `import tensorflow` (and TFDS, clu) fails."""
    import os
    import subprocess
    import sys

    blocked = tmp_path / "blocked"
    blocked.mkdir(exist_ok=True)
    for name in ("tensorflow", "tensorflow_datasets", "clu"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocked), root]))
    return subprocess.run([sys.executable, "-m", "tools.benchmark", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_tool_runs_without_tensorflow(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run_tool(
        tmp_path, "--config=configs/smoke.py", f"--output={out}",
        "--benchmarks=peak,pretrain,finetune,eval", "--steps=1", "--repeats=1", "--warmup=0",
        "--peak_size=128", "--config.pretrain.batch_size=2", "--config.finetune.batch_size=2",
        "--config.finetune.unlabelled_batch_size=2", "--config.eval_batch_size=2",
        # Table 4's RGB-only switches keep the compiles short; every code path still runs.
        "--config.loss.use_depth=False", "--config.loss.use_fused=False",
        "--config.loss.use_contrast=False")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    for key in ("train_pretrain", "train_finetune", "eval"):
        r = results[key]
        assert r["flops_source"].startswith("analytic")
        assert r["flops_per_step"] == pytest.approx(r["flops_breakdown"]["total"])
        assert r["images_per_s"] > 0 and "xla_flops_per_step" in r
    assert "tensorflow is blocked" not in proc.stderr


def test_tool_rejects_an_unknown_benchmark_in_one_line(tmp_path):
    proc = _run_tool(tmp_path, "--config=configs/smoke.py", f"--output={tmp_path}/x.json",
                     "--benchmarks=peak,trian", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "trian" in lines[0] and "pretrain,finetune,eval,pipeline" in lines[0]
