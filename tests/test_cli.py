"""The tools' shared error style (hpe_jax/runtime/cli.py): one line, exit 2 for usage errors,
fast help."""

import os
import subprocess
import sys

import pytest

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, JAX_PLATFORMS="cpu"))


def _one_line(proc, tool):
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith(f"tools.{tool}: "), proc.stderr[-3000:]
    return lines[-1]


@pytest.mark.parametrize("tool", ["train", "evaluate"])
def test_help_exits_0_keeps_line_breaks_names_data_dir_and_imports_nothing_heavy(tool):
    code = ("import runpy, sys\n"
            f"sys.argv = ['tools.{tool}', '--help']\n"
            "try:\n"
            f"    runpy.run_module('tools.{tool}', run_name='__main__', alter_sys=True)\n"
            "except SystemExit as e:\n"
            "    print('EXIT', e.code, 'jax' in sys.modules, 'tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "EXIT 0 False False", proc.stderr[-2000:]
    assert f"python -m tools.{tool} --config=configs/demo.py" in proc.stdout
    assert "--workdir=runs/demo/train \\\n        --config.data.data_dir=runs/data" in proc.stdout
    assert "--[no]verbose" in proc.stdout


def test_train_missing_config_file():
    proc = _tool("tools.train", "--config=configs/nope.py", "--workdir=/tmp/unused")
    assert proc.returncode == 2
    line = _one_line(proc, "train")
    assert "cannot load the config file configs/nope.py" in line and "--config=" in line


def test_train_config_field_typo_names_the_field_and_the_fix():
    proc = _tool("tools.train", "--config=configs/demo.py", "--workdir=/tmp/unused",
                 "--config.loss.lamda_c=1")
    assert proc.returncode == 2
    line = _one_line(proc, "train")
    assert "'config.loss.lamda_c'" in line and "'config.loss.lambda_c'" in line


@pytest.mark.parametrize("config", ["configs/rhd_to.py", "configs/rhd_to.py:nope"])
def test_train_config_without_a_known_target_names_the_valid_ones(config):
    proc = _tool("tools.train", f"--config={config}", "--workdir=/tmp/unused")
    assert proc.returncode == 2
    line = _one_line(proc, "train")
    assert line.startswith("tools.train: configs/rhd_to.py") and "Error" not in line, line
    assert "one of stb, freihand, h3d, mvhand" in line and "configs/rhd_to.py:stb" in line


def test_train_missing_manual_dataset_points_to_tfds_build(tmp_path):
    # init_from=scratch: past the ImageNet-weights check, to the dataset.
    proc = _tool("tools.train", "--config=configs/rhd_to.py:stb", f"--workdir={tmp_path / 'w'}",
                 f"--config.data.data_dir={tmp_path / 'data'}",
                 "--config.model.init_from=scratch")
    assert proc.returncode == 1
    line = _one_line(proc, "train")
    assert "'rhd' is not prepared" in line
    assert "python -m tools.tfds_build rhd --manual_dir=DIR" in line
    assert "download_and_prepare" not in line


def test_unknown_flag_suggests_the_closest():
    proc = _tool("tools.evaluate", "--config=configs/demo.py", "--workdir=/tmp/x", "--studnet")
    assert proc.returncode == 2
    assert "did you mean --student?" in _one_line(proc, "evaluate")


def test_torch_fixture_tool_without_torch_says_so():
    help_proc = _tool("tools.make_torchvision_fixture", "--help")
    assert help_proc.returncode == 0 and "--output" in help_proc.stdout
    try:
        import torch  # noqa: F401
    except ImportError:
        proc = _tool("tools.make_torchvision_fixture", "--output=/tmp/unused.npz")
        assert proc.returncode == 1
        assert "needs torch and torchvision" in _one_line(proc, "make_torchvision_fixture")


def test_cpu_convolutions_auto_uses_xla_without_avx512_and_respects_xla_flags(
        tmp_path, monkeypatch):
    from hpe_jax.runtime import cpu

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n")
    assert cpu.cpu_has_avx512(str(info)) is False
    info.write_text("flags\t\t: fpu avx2 avx512f avx512bw\n")
    assert cpu.cpu_has_avx512(str(info)) is True
    assert cpu.cpu_has_avx512(str(tmp_path / "absent")) is None

    monkeypatch.delenv(cpu.CONV_ENV_VAR, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert cpu.choose_cpu_convolutions(avx512=True) == "ynn"
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    assert cpu.choose_cpu_convolutions(avx512=None, choice="ynn") == "ynn"
    assert cpu.choose_cpu_convolutions(avx512=False) == "xla"
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=2"
    assert flags[1].startswith("--xla_cpu_experimental_ynn_fusion_type=")
    assert "INDIVIDUAL_CONVOLUTION" in flags[1]
    cpu.choose_cpu_convolutions(avx512=False)  # applied once, not appended again
    assert os.environ["XLA_FLAGS"].split() == flags
    # A fusion-type setting already in XLA_FLAGS is the user's: left as it is.
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=-x")
    monkeypatch.setenv(cpu.CONV_ENV_VAR, "XLA")
    assert cpu.choose_cpu_convolutions() == "xla"
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=-x"
    monkeypatch.setenv(cpu.CONV_ENV_VAR, "onednn")
    with pytest.raises(cpu.UsageError, match="HPE_JAX_CPU_CONV='onednn' is not one of"):
        cpu.choose_cpu_convolutions()


@pytest.mark.parametrize("args, status, words", [
    (("--help",), 0, None),
    (("--config=configs/nope.py", "--output=/tmp/unused.json"), 2,
     "cannot load the config file configs/nope.py"),
    (("--config=configs/smoke.py", "--output=/tmp/unused.json", "--config.model.widht=1"), 2,
     "'config.model.width'"),
    (("--config=configs/smoke.py", "--output=/tmp/unused.json", "--benchmarks=fast"), 2,
     "unknown --benchmarks fast; valid names"),
])
def test_benchmark_uses_the_shared_command_line(args, status, words):
    proc = _tool("tools.benchmark", *args)
    assert proc.returncode == status, proc.stderr[-2000:]
    if words is None:
        assert "python -m tools.benchmark" in proc.stdout
    else:
        assert words in _one_line(proc, "benchmark")


@pytest.mark.parametrize("field, name, close", [
    ("source", "synthtic_hands/source_tiny", "synthetic_hands/source_tiny"),
    ("target", "synthetic_hands/targe", "synthetic_hands/target"),
])
def test_an_unknown_dataset_is_one_line_with_few_suggestions_before_any_work(tmp_path, field,
                                                                             name, close):
    proc = _tool("tools.train", "--config=configs/smoke.py", f"--workdir={tmp_path / 'w'}",
                 f"--config.data.data_dir={tmp_path / 'd'}", f"--config.data.{field}={name}")
    assert proc.returncode == 2  # a usage error
    line = _one_line(proc, "train")
    assert f"--config.data.{field}='{name}' is not a dataset" in line and close in line
    assert line.count("synthetic_hands/") <= 5 and len(line) < 400
    assert not (tmp_path / "d").exists()  # nothing rendered


def _record(path: str, level: int, message: str):
    import logging
    return logging.LogRecord("absl", level, path, 1, message, None, None)


def test_quiet_filter_keeps_the_projects_lines_and_drops_library_noise():
    import logging

    from hpe_jax.runtime import cli

    lib = "/site-packages/orbax/checkpoint/checkpoint_manager.py"
    own = os.path.join(ROOT_DIR, "hpe_jax", "training", "loop.py")
    noise = ("Waiting for previous save to complete took 1.008619 seconds. If this number is "
             "high, consider checkpointing less frequently.")
    assert not cli._FILTER.filter(_record(lib, logging.WARNING, noise))
    assert not cli._FILTER.filter(_record(lib, logging.INFO, "Saving checkpoint at step 250"))
    assert cli._FILTER.filter(_record(lib, logging.WARNING, "a warning a user can act on"))
    assert cli._FILTER.filter(_record(lib, logging.ERROR, noise))
    assert cli._FILTER.filter(_record(own, logging.INFO, "finetune 50/1000 loss 453"))


def test_a_demo_stage_shows_once_on_the_console_when_it_ends(tmp_path, caplog):
    import logging

    from hpe_jax.experiments.demo import _Stages

    stages = _Stages(str(tmp_path), {"k": 1})
    with caplog.at_level(logging.DEBUG):
        assert stages.run("mean pose (target)", lambda: 7) == 7
    shown = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert len(shown) == 1 and shown[0].startswith("=== mean pose (target): "), shown
    assert stages.run("mean pose (target)", lambda: 8) == 7  # finished stages are kept


def test_a_directory_flag_naming_a_file_is_a_usage_error_before_any_work(tmp_path):
    from hpe_jax.runtime import cli

    (tmp_path / "f").write_text("x")
    f, sub = str(tmp_path / "f"), str(tmp_path / "f" / "sub")
    with pytest.raises(cli.UsageError, match=r"--workdir=.*f is a file, not a directory; pass a "
                                             r"directory \(it is created if missing\)"):
        cli.check_directory("workdir", f)
    with pytest.raises(cli.UsageError, match=r"--workdir=.*sub lies under .*f, which is a file"):
        cli.check_directory("workdir", sub, created=False)
    with pytest.raises(cli.UsageError, match=r"--out=.*x.png lies under .*f, which is a file"):
        cli.check_directory("out", os.path.join(f, "x.png"), file=True)
    with pytest.raises(cli.UsageError, match=r"--out=.* is a directory; pass a file name"):
        cli.check_directory("out", str(tmp_path), file=True)
    for path in (str(tmp_path), str(tmp_path / "new" / "deeper"), "", None):
        cli.check_directory("workdir", path)  # a directory, or one to create: fine
    cli.check_directory("out", str(tmp_path / "new" / "x.png"), file=True)


def test_train_refuses_a_workdir_that_is_a_file_at_once(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _tool("tools.train", "--config=configs/smoke.py", f"--workdir={tmp_path / 'f'}",
                 f"--config.data.data_dir={tmp_path / 'd'}", timeout=60)
    assert proc.returncode == 2
    assert "is a file, not a directory" in _one_line(proc, "train")
    assert not (tmp_path / "d").exists()


def test_tfds_build_unknown_name_is_one_usage_line(capsys):
    from tools import tfds_build

    with pytest.raises(SystemExit) as e:
        tfds_build.check_names(["synthetic_hands/source_tinny"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tools.tfds_build: dataset='synthetic_hands/source_tinny' is not a "
                          "dataset") and "synthetic_hands/source_tiny" in err
    assert err.count("synthetic_hands/") <= 6
    tfds_build.check_names(["synthetic_hands/source_tiny", "rhd"])


def test_train_names_a_truncated_init_variables_file_before_any_work(tmp_path):
    import shutil

    shutil.copytree(os.path.join(ROOT_DIR, "assets", "demo_pretrained"), tmp_path / "net")
    npz = tmp_path / "net" / "variables.npz"
    npz.write_bytes(npz.read_bytes()[:1000])
    proc = _tool("tools.train", "--config=configs/smoke.py", f"--workdir={tmp_path / 'w'}",
                 f"--config.data.data_dir={tmp_path / 'd'}",
                 f"--config.model.init_variables={tmp_path / 'net'}", timeout=120)
    assert proc.returncode == 1
    line = _one_line(proc, "train")
    assert "variables.npz cannot be read, it is truncated" in line, line
    assert not (tmp_path / "d").exists()  # nothing rendered


def test_default_cpu_devices_follow_what_was_measured_faster():
    """One XLA:CPU device on an AVX2-only CPU, two (at most the cores) elsewhere."""
    from hpe_jax.runtime import cpu

    assert cpu.default_cpu_devices(avx512=False, cores=2) == 1
    assert cpu.default_cpu_devices(avx512=True, cores=2) == 2
    assert cpu.default_cpu_devices(avx512=True, cores=16) == 2
    assert cpu.default_cpu_devices(avx512=True, cores=1) == 1
