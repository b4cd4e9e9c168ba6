"""`make demo` / `make reproduce`: the method on the embedded synthetic benchmark, on this machine.

    python -m tools.demo [--config=configs/demo.py] [--workdir=runs/demo] [--data_dir=runs/data]
    python -m tools.demo --config=configs/reproduce.py --workdir=runs/reproduce \\
        --export_pretrained=assets/demo_pretrained

Renders synthetic_hands (cached in --data_dir), pre-trains on the labelled source (configs/demo.py
instead starts from the pre-trained network the repository ships, assets/demo_pretrained),
evaluates the mean-pose guess and the pre-trained model on both test splits, fine-tunes on the
unlabelled target with pseudo-labels and self-distillation, evaluates again, and writes
<workdir>/report.md and report.json. Re-running resumes where it stopped.
Any config field can be overridden: --config.finetune.epochs=1.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from hpe_jax.runtime import cli, cpu

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Output directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "runs/data", "TFDS data_dir for synthetic_hands.")
_EXPORT = flags.DEFINE_string("export_pretrained", None,
                              "Write the pre-trained network here (the demo's starting point).")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", cpu.default_cpu_devices(),
    "Split the CPU into this many JAX devices (data parallel, synchronised BatchNorm: the "
    "same computation); default: 1 on x86 CPUs without AVX-512, else 2 (runtime.cpu."
    "default_cpu_devices: what was measured faster); "
    "the batch sizes must divide by it.")


def main(argv: list[str]) -> None:
    del argv
    for flag, path in (("workdir", _WORKDIR.value), ("data_dir", _DATA_DIR.value),
                       ("export_pretrained", _EXPORT.value)):
        cli.check_directory(flag, path)
    cpu.split_cpu_into_devices(_CPU_DEVICES.value)
    from hpe_jax.runtime import compile_cache

    compile_cache.enable()  # persistent XLA cache, docs/usage.md "Compilation cache"
    cpu.keep_tensorflow_off_accelerators()
    from hpe_jax import export
    from hpe_jax.experiments.demo import run_demo

    config = _CONFIG.value
    export.check_network_file(config.model.init_variables)
    config.data.data_dir = os.path.abspath(_DATA_DIR.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    run_demo(config, _WORKDIR.value, export_dir=_EXPORT.value)
    with open(os.path.join(_WORKDIR.value, "report.md")) as f:
        print(f.read().split("\n## ")[0])
    cfg = config_flags.get_config_filename(flags.FLAGS["config"])
    train_dir = os.path.join(_WORKDIR.value, "train")
    print(f"Wrote {os.path.join(_WORKDIR.value, 'report.md')} (figures beside it) and the "
          f"checkpoints in {train_dir}. Next, the adapted model for predict: python -m "
          f"tools.export --config={cfg} --workdir={train_dir} --config.data.data_dir="
          f"{config.data.data_dir} --output={os.path.join(_WORKDIR.value, 'export')}")


if __name__ == "__main__":
    cli.run(main, "demo")  # SIGTERM: checkpoint saved, exit status 0
