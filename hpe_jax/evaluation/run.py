"""Evaluates a training checkpoint on the target dataset's eval split and writes the report.

    from hpe_jax.evaluation.run import evaluate_checkpoint
    res = evaluate_checkpoint(config, "runs/demo/train")   # latest step, EMA teacher if present
                                                           # (the student for teacher="online")
    res.metrics["known_root/epe_mean_mm"], res.output_dir

`tools/evaluate.py` is the command-line front end. TensorFlow and matplotlib are imported only
when a function here runs, so importing this module is cheap.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from hpe_jax.evaluation import report
from hpe_jax.evaluation.evaluator import EvalResult, Evaluator, dataset_joint0
from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.training import checkpoint as ckpt
from hpe_jax.training import config_checks, factory

#: Examples drawn in qualitative.png (the first ones of the split).
NUM_QUALITATIVE = 16


@dataclasses.dataclass(frozen=True)
class CheckpointEvalResult(EvalResult):
    """An `EvalResult` plus where it came from and where its files went.

    step: the checkpoint's step; checkpoint: the checkpoints directory; weights: 'teacher' or
    'student'; output_dir: the report's directory; files: file name -> path.
    """

    step: int
    checkpoint: str
    weights: str
    output_dir: str
    files: dict[str, str]


@functools.lru_cache(maxsize=8)
def _rgb_apply(model: DualModalityNet) -> Any:
    """(variables, images) -> (uv, z) of `model`'s DualModalityNet.predict_rgb; one function per
    model (Linen modules hash and compare by their fields), so that evaluating several checkpoints
    reuses the evaluator's compiled step."""

    def apply(variables, images):
        y = model.apply(variables, images, train=False, method=DualModalityNet.predict_rgb)
        return y["uv"], y["z"]

    return apply


def evaluate_checkpoint(
    config: ml_collections.ConfigDict, workdir: str, checkpoint: str | int | None = None,
    output_dir: str | None = None, *, dataset: str | None = None, split: str | None = None,
    student: bool = False, num_qualitative: int = NUM_QUALITATIVE,
    devices: list[Any] | None = None,
) -> CheckpointEvalResult:
    """Evaluates one checkpoint's RGB path on every example of a split and writes the report.

    Args:
      config: the training config (model, data sizes, data.data_dir, eval_batch_size).
      workdir: the training run's --workdir (or its checkpoints/ directory).
      checkpoint: None (latest), a step, or a path (checkpoints dir or one step's dir).
      output_dir: where the files go; default eval_<step> (eval_<step>_student with `student`)
        beside the checkpoints/ directory, i.e. in the training workdir.
      dataset, split: default config.data.target and config.data.eval_split.
      student: evaluate the student's weights even where an EMA teacher exists.
      num_qualitative: examples drawn in qualitative.png (0: no drawing).
      devices: local devices to evaluate on (default all); the batch is rounded up to a
        multiple of their number.
    Returns:
      The evaluator's result with step, checkpoint, weights, output_dir and files.
    """
    # Also fills data.output_size when the config leaves it to be derived (config_checks).
    config_checks.check_config(config, config_checks.CONFIG_FIELDS + (
        "data.target", "data.eval_split", "data.data_dir", "eval_batch_size"))
    ck = ckpt.load_training_checkpoint(config, workdir, checkpoint, student)
    pipeline = _pipeline()
    name = dataset or config.data.target
    split = split or config.data.eval_split
    data_dir = config.data.data_dir or None
    split_size = pipeline.num_examples(name, split, data_dir)  # also: is it prepared?
    ds = pipeline.eval_dataset(name, split, data_dir=data_dir,
                               input_size=config.data.input_size,
                               output_size=config.data.output_size)
    devices = list(devices) if devices is not None else jax.local_devices()
    per = jax.process_count() * len(devices)
    batch = -(-int(config.eval_batch_size) // per) * per
    apply_fn = _rgb_apply(factory.build_model(config.model, None))
    # STB's palm configuration labels joint 0 as the palm centre: convert the predictions.
    joint0 = dataset_joint0(name)
    result = Evaluator(apply_fn, ds, global_batch_size=batch,
                       output_size=config.data.output_size, devices=devices,
                       joint0=joint0).run(ck.variables)

    if output_dir is None:
        # Beside checkpoints/ (the run's workdir), never inside the orbax directory.
        output_dir = os.path.join(os.path.dirname(ck.path),
                                  f"eval_{ck.step}" + ("_student" if student else ""))
    meta = {
        "step": ck.step, "checkpoint": os.path.join(ck.path, str(ck.step)),
        "weights": ck.weights, "dataset": name, "split": split, "data_dir": data_dir,
        "num_samples": int(result.metrics["num_samples"]), "split_size": int(split_size),
        "input_size": int(config.data.input_size), "output_size": int(config.data.output_size),
        "eval_batch_size": batch, "model": config.model.to_dict(), "joint0": joint0,
    }
    files: dict[str, str] = {}
    if jax.process_index() == 0:
        samples = _samples(ds, num_qualitative) if num_qualitative > 0 else None
        files = report.write_report(output_dir, result, meta, samples)
    return CheckpointEvalResult(
        result.metrics, result.per_joint, result.curves, result.info, result.arrays,
        step=ck.step, checkpoint=ck.path, weights=ck.weights,
        output_dir=os.path.abspath(output_dir), files=files)


def _pipeline() -> Any:
    """The data pipeline module, imported on first use (TensorFlow) with TF kept off the GPUs:
    tf.data must not take the accelerator memory that JAX needs."""
    from hpe_jax.data import pipeline
    from hpe_jax.runtime.cpu import keep_tensorflow_off_accelerators

    keep_tensorflow_off_accelerators()

    return pipeline


def _samples(ds: Any, n: int) -> dict[str, np.ndarray]:
    """The first n examples' de-normalised images (n, S, S, 3) in [0, 1] and indices (n,)."""
    from hpe_jax.data.preprocess import denormalize_image

    images, index = [], []
    for ex in ds.take(n).as_numpy_iterator():
        images.append(denormalize_image(ex["image"]))
        index.append(int(ex["index"]))
    return {"image": np.stack(images), "index": np.asarray(index, np.int64)}
