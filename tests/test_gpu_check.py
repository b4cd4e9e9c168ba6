"""benchmarks/gpu_check.sh at its tiny CPU size, in an environment without TensorFlow/TFDS/clu."""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_VENV = "/tmp/torchenv/bin/python"  # docs/benchmarks.md's optional torch venv


@pytest.mark.skipif(shutil.which("timeout") is None, reason="needs coreutils' timeout")
def test_gpu_check_runs_on_cpu_at_tiny_size(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("tensorflow", "tensorflow_datasets", "clu"):
        (blocked / f"{name}.py").write_text(f"raise ImportError('{name} is blocked by the test')\n")
    out = tmp_path / "out"
    torch_python = TORCH_VENV if os.path.exists(TORCH_VENV) else sys.executable
    env = dict(os.environ, GPU_CHECK_SIZE="tiny", GPU_CHECK_BUDGET_S="540",
               PYTHON=sys.executable, TORCH_PYTHON=torch_python, PYTHONPATH=str(blocked))
    proc = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    summary = json.loads((out / "gpu_check.json").read_text())
    for key in ("jax_pretrain", "jax_finetune", "jax_eval"):
        r = summary[key]
        assert r["images_per_s"] > 0 and r["compile_s"] > 0
        assert r["flops_per_step"] > 0 and r["mfu"] > 0  # analytic FLOPs, measured peak
    assert summary["peak"]["float32"] > 0
    status = json.loads((out / "status.json").read_text())
    assert status["jax_main"] == status["jax_finetune"] == "0"
    torch_ok = subprocess.run([torch_python, "-c", "import torch"], capture_output=True)
    if torch_ok.returncode == 0:
        assert status["torch"] == "0" and summary["torch_pretrain"]["flops_per_step"] > 0
    else:
        assert status["torch"] == "no_torch" and "torch" in summary["missing"]
