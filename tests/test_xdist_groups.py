"""`make test`'s `--dist loadgroup`: the tests of one xdist group run in one worker process
(what lets the tiny end-to-end trainings share their compiled steps; tests/conftest.py)."""

import os
import shutil
import subprocess
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))

_GROUPED = '''
import os
import time

import pytest


def _record(name):
    time.sleep(0.2)
    with open(os.path.join(os.environ["GROUP_OUT"], name), "w") as f:
        f.write(os.environ.get("PYTEST_XDIST_WORKER", "none"))

'''


def test_a_group_runs_in_one_worker(tmp_path):
    suite = tmp_path / "suite"
    out = tmp_path / "out"
    suite.mkdir()
    out.mkdir()
    shutil.copy(os.path.join(TESTS, "conftest.py"), suite / "conftest.py")
    body = _GROUPED
    for i in range(8):  # grouped and free tests interleaved
        mark = '@pytest.mark.xdist_group("g")\n' if i % 2 == 0 else ""
        body += f"\n{mark}def test_{i}():\n    _record('{'g' if i % 2 == 0 else 'f'}{i}')\n\n"
    (suite / "test_g.py").write_text(body)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "loadgroup",
         "-p", "no:cacheprovider", str(suite)],
        env=dict(os.environ, GROUP_OUT=str(out)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    workers = {p.name: p.read_text() for p in out.iterdir()}
    assert len(workers) == 8
    grouped = {w for name, w in workers.items() if name.startswith("g")}
    assert len(grouped) == 1 and grouped != {"none"}, workers
