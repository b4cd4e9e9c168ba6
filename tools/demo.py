"""`make demo`: the whole method on the embedded synthetic benchmark, on this machine.

    python -m tools.demo [--config=configs/demo.py] [--workdir=runs/demo] [--data_dir=runs/data]

Prepares synthetic_hands (cached), pre-trains, evaluates the pre-trained checkpoint (the
synthetic-only baseline) on the target test split, fine-tunes with pseudo-labels and
self-distillation, evaluates again, and writes runs/demo/report.md and report.json.
Re-running resumes where it stopped.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "Demo config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Output directory.")
_DATA_DIR = flags.DEFINE_string("data_dir", "runs/data", "TFDS data_dir for synthetic_hands.")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.INFO)
    from hpe_jax import compile_cache  # noqa: PLC0415

    compile_cache.enable()  # persistent XLA cache, README "Compilation cache"
    import tensorflow as tf  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")
    from hpe_jax.demo import run_demo  # noqa: PLC0415

    config = _CONFIG.value
    config.data.data_dir = os.path.abspath(_DATA_DIR.value)
    os.makedirs(_WORKDIR.value, exist_ok=True)
    report = run_demo(config, _WORKDIR.value)
    print(open(os.path.join(_WORKDIR.value, "report.md")).read().split("\n## ")[0])
    logging.info("Report: %s", os.path.join(_WORKDIR.value, "report.md"))
    del report


if __name__ == "__main__":
    from hpe_jax.training.loop import stop_quietly_when_preempted

    app.run(stop_quietly_when_preempted(main))
