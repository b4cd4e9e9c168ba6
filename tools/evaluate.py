r"""Evaluates a training checkpoint on the target dataset's eval split and writes a report.

    python -m tools.evaluate --config=configs/demo.py --workdir=runs/demo/train \
        --config.data.data_dir=runs/data [--checkpoint=STEP_OR_PATH] [--output_dir=DIR] \
        [--dataset=NAME] [--split=test] [--student]

Writes metrics.json, metrics.md, predictions.npz, pck_curve.png and qualitative.png into
--output_dir (default <workdir>/eval_<step>) and prints the markdown table. The EMA teacher's
weights are evaluated where the checkpoint has them (--student: the student's).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from hpe_jax.runtime import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's directory (checkpoints/).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None,
                                  "Step number or checkpoint path (default: the latest).")
_OUTPUT = flags.DEFINE_string("output_dir", None, "Report directory (default workdir/eval_STEP).")
_DATASET = flags.DEFINE_string("dataset", None, "TFDS name (default config.data.target).")
_SPLIT = flags.DEFINE_string("split", None, "Split (default config.data.eval_split).")
_STUDENT = flags.DEFINE_bool("student", False, "Evaluate the student, not the EMA teacher.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    del argv
    cli.check_directory("workdir", _WORKDIR.value, created=False)
    cli.check_directory("output_dir", _OUTPUT.value)
    from hpe_jax.runtime import compile_cache

    compile_cache.enable()  # persistent XLA cache, docs/usage.md "Compilation cache"
    from hpe_jax.data import prepare
    from hpe_jax.evaluation.run import evaluate_checkpoint

    if _DATASET.value:
        prepare.check_dataset_name(_DATASET.value, "--dataset")
    else:
        prepare.check_dataset_name(_CONFIG.value.data.target, "--config.data.target")

    res = evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value, _OUTPUT.value,
                              dataset=_DATASET.value, split=_SPLIT.value,
                              student=_STUDENT.value)
    if res.files:
        with open(res.files["metrics.md"]) as f:
            print(f.read())
    print(f"Wrote {sorted(res.files)} to {res.output_dir}")


if __name__ == "__main__":
    cli.run(main, "evaluate")
