r"""Trains (pre-training, then fine-tuning) a dual-modality hand-pose model.

    python -m tools.train --config=configs/demo.py --workdir=runs/demo/train \
        --config.data.data_dir=runs/data [--config.pretrain.epochs=2 ...]

Datasets live in --config.data.data_dir (default: TFDS's ~/tensorflow_datasets); synthetic_hands
is rendered there on first use, real datasets must be built there first (docs/usage.md, "Real
datasets"). Any config field can be set with --config.FIELD=VALUE. The console shows one progress
line per config.log_every_steps; --verbose brings back every library's log.

Re-running the same command resumes from the latest checkpoint in --workdir. For multi-host runs
pass --coordinator_address, --num_processes and --process_id (or set the usual
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment) on every host.
"""

from __future__ import annotations

import os

from absl import flags, logging
from ml_collections import config_flags

from hpe_jax.runtime import cli, cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    cli.check_directory("workdir", _WORKDIR.value)
    import jax  # after flag parsing: distributed set-up must come first

    coordinator = _COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=_NUM_PROCESSES.value or int(os.environ["JAX_NUM_PROCESSES"]),
            process_id=(_PROCESS_ID.value if _PROCESS_ID.value is not None
                        else int(os.environ["JAX_PROCESS_ID"])),
        )
    from hpe_jax.runtime import compile_cache

    compile_cache.enable()  # persistent XLA cache, docs/usage.md "Compilation cache"
    cpu.keep_tensorflow_off_accelerators()
    logging.info("JAX process %d/%d, local devices: %s", jax.process_index(),
                 jax.process_count(), jax.local_devices())
    from hpe_jax import export
    from hpe_jax.data.prepare import prepare_datasets
    from hpe_jax.training import config_checks
    from hpe_jax.training.loop import train

    export.check_network_file(_CONFIG.value.model.init_variables)
    config_checks.check_schedule(_CONFIG.value)  # before the data are prepared

    if jax.process_index() == 0:
        # Renders synthetic_hands and builds a photo-folder target on first use (offline).
        prepare_datasets(_CONFIG.value)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("datasets prepared")
    train(_CONFIG.value, _WORKDIR.value)
    if jax.process_index() == 0:
        cfg = config_flags.get_config_filename(flags.FLAGS["config"])
        print(f"Checkpoints in {os.path.join(_WORKDIR.value, 'checkpoints')}, metrics for "
              f"TensorBoard in {_WORKDIR.value}. Next: python -m tools.evaluate --config={cfg} "
              f"--workdir={_WORKDIR.value} --config.data.data_dir="
              f"{_CONFIG.value.data.data_dir or '<data_dir>'}")


if __name__ == "__main__":
    cli.run(main, "train")  # SIGTERM: checkpoint saved, exit status 0
