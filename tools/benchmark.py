"""Measures throughput: train steps (both phases), evaluation, input pipelines, FLOP/s and MFU.

    python -m tools.benchmark --config=configs/default.py --output=runs/bench/default.json \
        [--benchmarks=peak,pretrain,finetune,eval,pipeline,resnet] [--steps=10 --repeats=3]

A CPU-sized run (the numbers in docs/benchmarks.md):

    python -m tools.benchmark --config=configs/default.py --output=runs/bench/cpu.json \
        --config.model.resnet_depth=18 --config.model.width=0.25 \
        --config.model.deconv_features=64 --config.model.proj_hidden=128 \
        --config.model.proj_dim=64 --config.data.input_size=64 \
        --config.pretrain.batch_size=16 --config.finetune.batch_size=8 \
        --config.finetune.unlabelled_batch_size=8 --config.eval_batch_size=64

On a GPU add --config.model.dtype=bfloat16 (parameters stay float32). The input-pipeline
benchmark reads config.data.source / target from config.data.data_dir; --prepare_data builds
them first if they are missing (e.g. --config.data.source=synthetic_hands/source_tiny
--config.data.target=synthetic_hands/target_tiny build in seconds). The JSON goes to --output
and to stdout; see hpe_jax/experiments/benchmarking.py for what each number means (FLOPs and
MFU are the analytic count of hpe_jax/experiments/flops.py, XLA's count beside it).

TensorFlow is imported only for the pipeline benchmark, so the rest runs on machines without it.
Compiled steps go to the persistent compilation cache (hpe_jax/runtime/compile_cache.py): a
repeated run reports the (short) cache-load time as compile_s.
"""

from __future__ import annotations

import json
import os

from absl import flags, logging
from ml_collections import config_flags

from hpe_jax.runtime import cli, cpu

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model/data config file.",
                                          lock_config=True)
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the JSON results.")
_BENCHMARKS = flags.DEFINE_list(
    "benchmarks", ["peak", "pretrain", "finetune", "eval"],
    "Any of: peak, pretrain, finetune, eval, pipeline, resnet.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (or batches) per repeat.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats; best, median and all are kept.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_PEAK_SIZE = flags.DEFINE_integer("peak_size", None,
                                  "Matmul side for the peak (default 2048 CPU, 8192 else).")
_PREPARE = flags.DEFINE_bool("prepare_data", False,
                             "Build the source/target TFDS datasets if not yet prepared.")
_RESNET_DEPTH = flags.DEFINE_integer("resnet_depth", 18, "'resnet' benchmark: ResNet depth.")
_RESNET_SIZE = flags.DEFINE_integer("resnet_image_size", 128, "'resnet' benchmark: image side.")
_RESNET_BATCH = flags.DEFINE_integer("resnet_batch_size", 32, "'resnet' benchmark: batch size.")
_RESNET_DTYPE = flags.DEFINE_string("resnet_dtype", "float32", "'resnet' benchmark: dtype.")
flags.mark_flags_as_required(["config", "output"])


def main(argv: list[str]) -> None:
    del argv
    cli.check_directory("output", _OUTPUT.value, file=True)
    from hpe_jax.experiments import benchmarking
    from hpe_jax.runtime import compile_cache

    unknown = [b for b in _BENCHMARKS.value if b not in benchmarking.ALL_BENCHMARKS]
    if unknown:
        raise cli.UsageError(f"unknown --benchmarks {','.join(unknown)}; valid names: "
                             f"{','.join(benchmarking.ALL_BENCHMARKS)}")
    compile_cache.enable()
    if "pipeline" in _BENCHMARKS.value:
        # TensorFlow only for the input-pipeline benchmark: JAX-on-GPU machines often lack it.
        cpu.keep_tensorflow_off_accelerators()
    config = _CONFIG.value
    if _PREPARE.value and "pipeline" in _BENCHMARKS.value:
        # Imported here: data.prepare needs TFDS, which the other benchmarks must run without.
        from hpe_jax.data.prepare import prepare_datasets

        prepare_datasets(config)  # the source / target datasets that need no download
    results = benchmarking.run_benchmarks(
        config, _BENCHMARKS.value, steps=_STEPS.value, repeats=_REPEATS.value,
        warmup=_WARMUP.value, peak_size=_PEAK_SIZE.value,
        resnet=dict(depth=_RESNET_DEPTH.value, image_size=_RESNET_SIZE.value,
                    batch_size=_RESNET_BATCH.value, dtype=_RESNET_DTYPE.value),
        log=logging.info)
    text = json.dumps(results, indent=2)
    directory = os.path.dirname(_OUTPUT.value)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(_OUTPUT.value, "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    cli.run(main, "benchmark")
