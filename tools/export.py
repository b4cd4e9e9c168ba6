r"""Exports a training checkpoint's inference model (RGB encoder + decoder) for prediction.

    python -m tools.export --config=configs/demo.py --workdir=runs/demo/train \
        --output=runs/demo/export [--checkpoint=STEP_OR_PATH] [--student] [--saved_model]

Writes <output>/config.json and <output>/variables (orbax); the EMA teacher's weights where the
checkpoint has them. Load with `hpe_jax.export.load(<output>).predict(images, boxes, K)` or use
tools/predict.py. --saved_model also writes <output>/saved_model, a TF SavedModel of the network
on uint8 hand crops (needs orbax-export).
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from hpe_jax.runtime import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory (checkpoints/).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Step number or checkpoint path (default: the latest).")
_OUTPUT = flags.DEFINE_string("output", None, "Export directory (must not hold an export).")
_STUDENT = flags.DEFINE_bool("student", False, "Export the student, not the EMA teacher.")
_SAVED_MODEL = flags.DEFINE_bool("saved_model", False, "Also write a TF SavedModel.")
flags.mark_flags_as_required(["config", "workdir", "output"])


def main(argv: list[str]) -> None:
    del argv
    cli.check_directory("workdir", _WORKDIR.value, created=False)
    cli.check_directory("output", _OUTPUT.value)
    from hpe_jax import export
    from hpe_jax.training import checkpoint

    ck = checkpoint.load_training_checkpoint(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value,
                                             _STUDENT.value)
    source = {"checkpoint": os.path.join(ck.path, str(ck.step)), "step": ck.step,
              "weights": ck.weights}
    path = export.export_model(_CONFIG.value, ck.variables, _OUTPUT.value, source=source)
    print(f"Exported step {ck.step} ({ck.weights} weights) to {path}")
    if _SAVED_MODEL.value:
        sm = export.save_saved_model(export.load(path),
                                     os.path.join(path, export.SAVED_MODEL_DIR))
        print(f"Wrote the TF SavedModel to {sm}")


if __name__ == "__main__":
    cli.run(main, "export")
