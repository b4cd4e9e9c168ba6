r"""Re-runs the paper's ablation tables on the embedded benchmark (or any config).

    python -m tools.ablate --table=4 [--config=configs/demo.py] [--workdir=runs/ablation]
    python -m tools.ablate --table=3
    python -m tools.ablate --table=4ft --config=configs/reproduce.py \
        --pretrained=runs/reproduce/train --workdir=runs/reproduce/ablation

Table 4: M(y_R) -> +M(y_D) -> +M(y_F) -> +L_c -> +L_l -> +L_d. Table 3: pre-training alternatives.
Table 4ft: the fine-tuning rows (+L_l, +L_d, EMA vs online teacher, BatchNorm statistics, L_s
alone, one-pass pseudo-labels) from one pre-trained run's switch checkpoint, e.g. the one
`make reproduce` wrote, or from a network file (--pretrained=assets/demo_pretrained).
Each row runs once per --seeds (default 0,1) and is evaluated on the target's val and test
splits. Writes <workdir>/table<N>.md and .json (mean and every seed's value); finished runs are
resumed, not re-trained.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from hpe_jax.runtime import cli, cpu

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Base config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/ablation", "Output directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "runs/data", "TFDS data_dir.")
_TABLE = flags.DEFINE_enum("table", "4", ["3", "4", "4ft"], "Which table.")
_PRETRAINED = flags.DEFINE_string("pretrained", None,
                                  "Table 4ft: the pre-trained run's training workdir, or a "
                                  "network file (a directory with variables.npz).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", cpu.default_cpu_devices(),
                                    "Split the CPU into this many JAX devices (tools.demo).")
_ROWS = flags.DEFINE_list("rows", None, "Only these row indices (0-based), e.g. --rows=2,4 in "
                          "one process and --rows=0,1,3 in another.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1"], "config.seed of each run of a row (the mean "
                           "and every seed's value are reported).")


def main(argv: list[str]) -> None:
    del argv
    cli.check_directory("workdir", _WORKDIR.value)
    cli.check_directory("data_dir", _DATA_DIR.value)
    cpu.split_cpu_into_devices(_CPU_DEVICES.value)
    from hpe_jax import export
    from hpe_jax.experiments.ablation import run_table

    config = _CONFIG.value
    export.check_network_file(config.model.init_variables)
    if not config.data.data_dir:
        config.data.data_dir = os.path.abspath(_DATA_DIR.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    rows = tuple(int(r) for r in _ROWS.value) if _ROWS.value else None
    seeds = tuple(int(x) for x in _SEEDS.value)
    run_table(config, _WORKDIR.value, _TABLE.value, _PRETRAINED.value, rows, seeds)
    print(open(os.path.join(_WORKDIR.value, f"table{_TABLE.value}.md")).read())


if __name__ == "__main__":
    cli.run(main, "ablate")  # SIGTERM: checkpoint saved, exit status 0
