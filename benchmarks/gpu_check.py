"""The JAX half of benchmarks/gpu_check.sh: one part of the device check, JSON out.

    python benchmarks/gpu_check.py --part=main --size=paper --output=DIR/jax_main.json
    python benchmarks/gpu_check.py --part=finetune --size=paper --output=DIR/jax_finetune.json
    python benchmarks/gpu_check.py --part=summary --output=DIR   # merges DIR/*.json

Parts: 'main' = matmul peak, pre-training step, evaluation; 'finetune' = the fine-tuning step
(the longest compile, so the shell script runs it last under the time left); 'summary' reads the
parts' JSON (and torch_reference.py's) into DIR/gpu_check.json without importing JAX.

Sizes: 'paper' = configs/default.py (ResNet-101 x2, 256 px), bfloat16 compute on accelerators,
pre-training batch 64, fine-tuning 20 + 20, evaluation 256; 'tiny' = configs/smoke.py sizes
(ResNet-18 x1/8, 32 px) with batches of 2, float32 and the RGB-only loss switches (short
compiles), for the CPU test of the script; its torch part is not the same step, so the summary
compares FLOPs and speed across frameworks only at 'paper'.

Imports only JAX, flax, optax, numpy and ml-collections (no TensorFlow, TFDS or clu: machines
built for JAX on GPU often lack them); the script checks that none of them got imported.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORBIDDEN = ("tensorflow", "tensorflow_datasets", "clu")


def make_config(size: str, platform: str):
    """configs/default.py with the check's sizes (module docstring)."""
    sys.path.insert(0, ROOT)
    from configs import default, smoke

    if size == "tiny":
        c = smoke.get_config()
        c.pretrain.batch_size = 2
        c.finetune.batch_size = c.finetune.unlabelled_batch_size = 2
        c.eval_batch_size = 2
        # Table 4's RGB-only switches: the shortest compiles that still run every code path.
        c.loss.use_depth = c.loss.use_fused = c.loss.use_contrast = False
        return c
    c = default.get_config()
    c.model.dtype = "float32" if platform == "cpu" else "bfloat16"
    # Scanned encoder blocks by default: the unrolled fine-tuning step compiled for more than
    # 250 s on an H200, which does not fit the check's 8 minutes; the scanned one in 97 s. Step
    # times then are those of the scanned network (slower on a GPU: docs/benchmarks.md).
    c.model.scan_blocks = os.environ.get("GPU_CHECK_SCAN_BLOCKS", "1") == "1"
    c.pretrain.batch_size = int(os.environ.get("GPU_CHECK_PRETRAIN_BATCH", 64))
    c.finetune.batch_size = c.finetune.unlabelled_batch_size = int(
        os.environ.get("GPU_CHECK_FINETUNE_BATCH", 20))
    c.eval_batch_size = int(os.environ.get("GPU_CHECK_EVAL_BATCH", 256))
    return c


def run_part(part: str, size: str, output: str) -> None:
    """Runs 'main' or 'finetune' (module docstring) and writes its JSON to `output`."""
    sys.path.insert(0, ROOT)
    import jax

    from hpe_jax.experiments import benchmarking
    from hpe_jax.runtime import compile_cache

    cache_dir = compile_cache.enable()
    platform = jax.devices()[0].platform
    config = make_config(size, platform)
    tiny = size == "tiny"
    which = ["peak", "pretrain", "eval"] if part == "main" else ["finetune"]
    t0 = time.perf_counter()
    out = benchmarking.run_benchmarks(
        config, which, steps=1 if tiny else 5, repeats=1 if tiny else 3,
        warmup=0 if tiny else 2, peak_size=128 if tiny else None,
        log=lambda m: print(f"[gpu_check {part}] {m}", flush=True))
    out.update(part=part, size=size, wall_s=time.perf_counter() - t0, compile_cache=cache_dir,
               batches={"pretrain": config.pretrain.batch_size,
                        "finetune": [config.finetune.batch_size,
                                     config.finetune.unlabelled_batch_size],
                        "eval": config.eval_batch_size})
    imported = [m for m in FORBIDDEN if m in sys.modules]
    if imported:
        raise SystemExit(f"gpu_check imported {imported}; it must run without them")
    with open(output, "w") as f:
        json.dump(out, f, indent=2)


def _pick(result: dict | None, keys: tuple[str, ...]) -> dict | None:
    return None if result is None else {k: result.get(k) for k in keys}


def summarize(directory: str) -> dict:
    """Merges the parts' JSON files in `directory` into the headline numbers."""
    parts = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name != "gpu_check":
            with open(path) as f:
                parts[name] = json.load(f)
    main, ft, torch = parts.get("jax_main"), parts.get("jax_finetune"), parts.get("torch")
    keys = ("images_per_s", "images_per_s_median", "step_time_s_best", "compile_s",
            "flops_per_step", "achieved_flops_per_s", "mfu", "xla_flops_per_step", "xla_mfu")
    summary: dict = {
        "device": None if main is None else main.get("device_kind"),
        "jax_version": None if main is None else main.get("jax_version"),
        "peak": None if main is None else {k[len("peak_"):]: v["flops_per_s"]
                                           for k, v in main.items() if k.startswith("peak_")},
        "jax_pretrain": _pick((main or {}).get("train_pretrain"), keys),
        "jax_finetune": _pick((ft or {}).get("train_finetune"), keys),
        "jax_eval": _pick((main or {}).get("eval"), keys),
        "torch_pretrain": _pick(torch, ("framework", "images_per_s", "step_time_s_best",
                                        "flops_per_step", "achieved_flops_per_s", "mfu")),
        "missing": [k for k in ("jax_main", "jax_finetune", "torch") if k not in parts],
        "status": parts.get("status", {}),  # each part's exit code, as gpu_check.sh ran it
    }
    jp, tp = summary["jax_pretrain"], summary["torch_pretrain"]
    if (main or {}).get("size") == "paper" and jp and tp and tp.get("flops_per_step"):
        # Same network and batch: the analytic count should match torch's counter.
        summary["analytic_over_torch_flops"] = jp["flops_per_step"] / tp["flops_per_step"]
        summary["jax_over_torch_images_per_s"] = jp["images_per_s"] / tp["images_per_s"]
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=["main", "finetune", "summary"], required=True)
    p.add_argument("--size", choices=["paper", "tiny"], default="paper")
    p.add_argument("--output", required=True, help="JSON file (a directory for 'summary')")
    args = p.parse_args()
    if args.part == "summary":
        summary = summarize(args.output)
        text = json.dumps(summary, indent=2)
        with open(os.path.join(args.output, "gpu_check.json"), "w") as f:
            f.write(text + "\n")
        print(text)
    else:
        run_part(args.part, args.size, args.output)


if __name__ == "__main__":
    main()
