r"""Re-runs the paper's ablation tables on the embedded benchmark (or any config).

    python -m tools.ablate --table=4 [--config=configs/demo.py] [--workdir=runs/ablation]
    python -m tools.ablate --table=3

Table 4: M(y_R) -> +M(y_D) -> +M(y_F) -> +L_c -> +L_l -> +L_d. Table 3: pre-training alternatives.
Writes <workdir>/table<N>.md and .json; finished rows are resumed, not re-trained.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from hpe_jax import cli

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Base config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/ablation", "Output directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "runs/data", "TFDS data_dir.")
_TABLE = flags.DEFINE_enum("table", "4", ["3", "4"], "Which table.")


def main(argv: list[str]) -> None:
    del argv
    from hpe_jax.ablation import run_table  # noqa: PLC0415

    config = _CONFIG.value
    if not config.data.data_dir:
        config.data.data_dir = os.path.abspath(_DATA_DIR.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    run_table(config, _WORKDIR.value, _TABLE.value)
    print(open(os.path.join(_WORKDIR.value, f"table{_TABLE.value}.md")).read())


if __name__ == "__main__":
    cli.run(main, "ablate")  # SIGTERM: checkpoint saved, exit status 0
