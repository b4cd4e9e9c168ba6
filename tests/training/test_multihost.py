"""Two processes x 2 devices (jax.distributed on 127.0.0.1, CPU collectives) == 1 x 4 devices."""

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
WORKER = os.path.join(HERE, "multihost_worker.py")


def _env(devices):
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                JAX_PLATFORMS="cpu",
                PYTHONPATH=os.pathsep.join([REPO, os.path.dirname(HERE)]))


def _losses(output):
    line = [ln for ln in output.splitlines() if ln.startswith("LOSSES")]
    assert line, output[-3000:]
    return np.array([float(x) for x in line[0].split()[1:]])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_follow_the_single_process_trajectory():
    single = subprocess.run([sys.executable, WORKER, "1", "0", "0"], env=_env(4), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, WORKER, "2", str(p), port], env=_env(2), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for p in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    expected = _losses(single.stdout)
    np.testing.assert_allclose(_losses(outs[0][0]), expected, rtol=1e-5)
    assert not any(ln.startswith("LOSSES") for ln in outs[1][0].splitlines())
