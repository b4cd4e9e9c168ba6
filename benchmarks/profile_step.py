"""Where a training step's time goes on this machine: a `jax.profiler` trace, summed by kind of op.

Compiles the project's pmapped pre-training or fine-tuning step for a config
(`benchmarking.prepared_train_step`: random batches at the config's sizes), runs it a few times,
traces `--steps` more with `jax.profiler`, and adds up the trace's per-op events by what the
compiled program's op does (read from its optimized HLO, written beside the trace):
convolutions (forward and input gradients, weight gradients, strided-conv input gradients),
layout transposes, reductions, elementwise work, collectives. Times are op times summed over
every thread and device, per step; the step's wall time is printed beside them.

    .venv/bin/python benchmarks/profile_step.py --config=configs/reproduce.py --phase=pretrain \
        --cpu_devices=2 --output=benchmarks/results_cpu/profile_reproduce_pretrain.json

Options after `--set` override config fields (`--set pretrain.batch_size=16`).
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import gzip
import importlib.util
import json
import os
import re
import tempfile
import time


def load_config(path: str, overrides: list[str]):
    """`get_config()` of the config file at `path` with `field.path=value` overrides."""
    spec = importlib.util.spec_from_file_location("_profile_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def parse_hlo(text: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Instruction name -> its definition, computation name -> its lines."""
    instructions: dict[str, str] = {}
    computations: dict[str, list[str]] = {}
    current = None
    for line in text.split("\n"):
        header = re.match(r"^%(\S+) \(", line)
        if header:
            current = header.group(1)
            computations[current] = []
            continue
        if current is not None and line.startswith("  "):
            computations[current].append(line)
        inst = re.match(r"^\s+(?:ROOT )?%(\S+) = (.*)$", line)
        if inst:
            instructions.setdefault(inst.group(1), inst.group(2))
    return instructions, computations


def kind_of(name: str, instructions: dict[str, str], computations: dict[str, list[str]]) -> str:
    """What an executed op (a fusion or a single instruction) does, from its root instruction."""
    text = instructions[name]
    called = re.search(r"calls=%([\w.\-]+)", text)
    body = computations.get(called.group(1), []) if called else [text]
    root = next((line for line in body if "ROOT" in line), text)
    if " convolution(" in root:
        window = re.search(r"window=\{([^}]*)\}", root).group(1)
        size = int(re.search(r"size=(\d+)", window).group(1))
        if "lhs_dilate" in window:
            return "convolutions: input gradients of strided convolutions"
        # A kernel-gradient convolution slides over the whole activation map (its window is
        # the map's size); the network's own kernels are 1x1, 3x3 and 7x7.
        if size not in (1, 3, 7):
            return "convolutions: weight gradients"
        return "convolutions: forward and input gradients"
    if re.search(r"all-reduce|all-gather|reduce-scatter|psum|collective", name + root):
        return "cross-device collectives (BatchNorm statistics, gradients; includes waiting)"
    if name.startswith("transpose") or " transpose(" in root or "transpose_copy" in name:
        return "layout transposes (with the elementwise work fused into them)"
    if re.search(r" reduce(-window)?\(", root):
        return "reductions (BatchNorm statistics and backward, losses)"
    if " dot(" in root:
        return "matrix products (projection heads, BatchNorm sums)"
    return "elementwise (BatchNorm apply, ReLU, optimizer update, losses)"


def summarize(trace_dir: str, hlo_text: str, steps: int) -> dict:
    """Per-kind and top-op times (ms per step) from the perfetto trace in `trace_dir`."""
    path = sorted(glob.glob(os.path.join(trace_dir, "plugins/profile/*/perfetto_trace.json.gz")))
    if not path:
        raise RuntimeError(f"no perfetto trace under {trace_dir}")
    with gzip.open(path[-1]) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    per_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            per_op[e["name"]] += e["dur"] / 1e3 / steps  # microseconds -> ms per step
    instructions, computations = parse_hlo(hlo_text)
    kinds = {n: kind_of(n, instructions, computations) for n in per_op if n in instructions}
    per_kind: collections.Counter = collections.Counter()
    for name, kind in kinds.items():
        per_kind[kind] += per_op[name]
    total = sum(per_kind.values())
    top = [{"op": n, "kind": kinds[n], "ms": round(ms, 2),
            "shape": instructions[n].split(" ")[0]}
           for n, ms in per_op.most_common() if n in instructions][:15]
    return {"op_ms_per_step": round(total, 1),
            "kinds": {k: {"ms": round(v, 1), "share": round(v / total, 3)}
                      for k, v in per_kind.most_common()},
            "top_ops": top}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a config file (configs/*.py)")
    parser.add_argument("--phase", choices=("pretrain", "finetune"), default="pretrain")
    parser.add_argument("--steps", type=int, default=3, help="steps traced")
    parser.add_argument("--cpu_devices", type=int, default=1,
                        help="XLA:CPU devices (as tools/demo.py --cpu_devices)")
    parser.add_argument("--trace_dir", default=None, help="keep the trace here (default: temp)")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--set", nargs="*", default=[], help="config overrides field.path=value")
    args = parser.parse_args()

    from hpe_jax.runtime import cpu
    cpu.split_cpu_into_devices(args.cpu_devices)
    cpu.choose_cpu_convolutions()  # as the tools do ($HPE_JAX_CPU_CONV)
    import jax

    from hpe_jax.experiments import benchmarking
    from hpe_jax.training import config_checks

    config = load_config(args.config, args.set)
    config_checks.resolve(config)
    step, (state, batch, rngs), items = benchmarking.prepared_train_step(config, args.phase)
    compiled = step.lower(state, batch, rngs).compile()
    for _ in range(3):  # warm-up
        state, metrics = compiled(state, batch, rngs)
        jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch, rngs)
        jax.block_until_ready(metrics)
    wall = (time.perf_counter() - t0) / args.steps
    trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for _ in range(args.steps):
            state, metrics = compiled(state, batch, rngs)
            jax.block_until_ready(metrics)
    hlo = compiled.as_text()
    with open(os.path.join(trace_dir, "optimized_hlo.txt"), "w") as f:
        f.write(hlo)
    result = {"config": args.config, "phase": args.phase, "overrides": args.set,
              "devices": jax.local_device_count(), "images_per_step": items,
              "wall_s_per_step_untraced": round(wall, 3),
              "images_per_s_untraced": round(items / wall, 1),
              "jax": jax.__version__, **summarize(trace_dir, hlo, args.steps)}
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.phase}: {wall * 1e3:.0f} ms/step untraced, op time {result['op_ms_per_step']} "
          f"ms/step summed over threads; trace in {trace_dir}")
    for kind, v in result["kinds"].items():
        print(f"  {v['ms']:8.1f} ms  {100 * v['share']:5.1f}%  {kind}")


if __name__ == "__main__":
    main()
