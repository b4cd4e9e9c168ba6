"""JAX against PyTorch on one config's training steps, alternating, on this machine.

    .venv/bin/python benchmarks/side_by_side.py --config=configs/reproduce.py \
        --torch_python=/tmp/torchenv/bin/python --rounds=2 --cpu_devices=1,2 \
        --output_dir=benchmarks/results_cpu/side_by_side_<date>

Each round runs, per step (--phases: the pre-training and the fine-tuning step), PyTorch once
(`benchmarks/torch_reference.py`, as many threads as cores) and then JAX once per entry of
--cpu_devices (`tools.benchmark --benchmarks=<phase>`, the step pmapped over that many XLA:CPU
devices, as `make reproduce` runs it with two), so a machine that slows down during the run
slows both. The torch flags are derived from the config (network size, input size, batch
sizes, stem pool, decoder upsamplings, the fused way's depth, the EMA decay), never written by
hand. Every run's JSON is kept in --output_dir beside `summary.json`: best images/s per step,
framework and setting over the rounds and the ratio JAX / PyTorch per step. Run it with nothing
else on the machine (docs/benchmarks.md). PyTorch is not a dependency of the project:
--torch_python names an interpreter that has it (python3 -m venv /tmp/torchenv &&
/tmp/torchenv/bin/pip install torch numpy).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config(path: str):
    spec = importlib.util.spec_from_file_location("bench_config", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, ROOT)  # configs import each other as `configs.<name>`
    spec.loader.exec_module(module)
    return module.get_config()


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_flags(config, phase: str = "pretrain") -> list[str]:
    """benchmarks/torch_reference.py's flags for the network and `phase`'s step `config`
    trains."""
    m = config.model
    flags = ["--model=dual", f"--phase={phase}", f"--depth={m.resnet_depth}",
             f"--width={m.width}", f"--image_size={config.data.input_size}",
             f"--deconv_features={m.deconv_features}", f"--proj_hidden={m.proj_hidden}",
             f"--proj_dim={m.proj_dim}", f"--num_deconv={m.num_deconv}",
             f"--fused_depth={config.pretrain.fused_depth}"]
    if phase == "pretrain":
        flags.append(f"--batch_size={config.pretrain.batch_size}")
    else:
        flags += [f"--batch_size={config.finetune.batch_size}",
                  f"--unlabelled_batch_size={config.finetune.unlabelled_batch_size}",
                  f"--ema_decay={config.finetune.ema_decay}"]
    if not m.stem_pool:
        flags.append("--no_stem_pool")
    return flags


def _run(cmd: list[str], env: dict[str, str], output: str, phase: str) -> float:
    """Runs one benchmark process; returns its best images/s (from the JSON it wrote)."""
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"side_by_side: {' '.join(cmd[:3])} ... failed (exit {done.returncode}):\n"
                 + done.stderr[-2000:])
    with open(output) as f:
        result = json.load(f)
    return float((result.get(f"train_{phase}") or result)["images_per_s"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/reproduce.py")
    p.add_argument("--torch_python", required=True, help="a python with torch installed")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--cpu_devices", default="1,2", help="JAX settings, comma-separated")
    p.add_argument("--phases", default="pretrain,finetune", help="steps, comma-separated")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--jax_variants", default="",
                   help="JAX settings to compare, comma-separated LABEL=OVERRIDE (e.g. "
                        "subpixel=--config.model.deconv_impl=subpixel,transpose=--config.model."
                        "deconv_impl=transpose); default: the config as it is")
    args = p.parse_args()
    if not os.path.exists(args.config):
        sys.exit(f"side_by_side: --config={args.config} does not exist")
    if not os.path.exists(args.torch_python):
        sys.exit(f"side_by_side: --torch_python={args.torch_python} does not exist; make one "
                 "with: python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch "
                 "numpy")
    config = _load_config(args.config)
    devices = [int(d) for d in args.cpu_devices.split(",")]
    phases = args.phases.split(",")
    if not set(phases) <= {"pretrain", "finetune"}:
        sys.exit(f"side_by_side: --phases={args.phases}: use pretrain, finetune or both")
    variants = [tuple(v.split("=", 1)) for v in args.jax_variants.split(",") if v]
    if any(len(v) != 2 or not v[0] or not v[1].startswith("--config.") for v in variants):
        sys.exit(f"side_by_side: --jax_variants={args.jax_variants}: use LABEL=--config.FIELD="
                 "VALUE, comma-separated")
    variants = variants or [("", "")]
    os.makedirs(args.output_dir, exist_ok=True)
    timing = [f"--steps={args.steps}", f"--repeats={args.repeats}", f"--warmup={args.warmup}"]
    threads = os.cpu_count() or 1
    best: dict[str, float] = {}
    runs: list[dict] = []
    for r in range(1, args.rounds + 1):
        for phase in phases:
            out = os.path.join(args.output_dir, f"torch_{phase}_r{r}.json")
            ips = _run([args.torch_python, "benchmarks/torch_reference.py",
                        *torch_flags(config, phase), *timing, f"--threads={threads}",
                        f"--output={out}"], dict(os.environ), out, phase)
            runs.append({"round": r, "phase": phase, "framework": "torch",
                         "images_per_s": ips, "file": out})
            for n in devices:
                env = dict(os.environ)
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                                    + f" --xla_force_host_platform_device_count={n}").strip()
                for label, override in variants:
                    suffix = f"_{label}" if label else ""
                    name = f"jax_{n}dev{suffix}"
                    out = os.path.join(args.output_dir, f"jax_{phase}_{n}dev{suffix}_r{r}.json")
                    ips = _run([sys.executable, "-m", "tools.benchmark",
                                f"--config={args.config}", *([override] if override else []),
                                f"--benchmarks={phase}", *timing, f"--output={out}"], env, out,
                               phase)
                    runs.append({"round": r, "phase": phase, "framework": name,
                                 "images_per_s": ips, "file": out})
        print(f"round {r}: " + ", ".join(f"{x['phase']} {x['framework']} {x['images_per_s']:.1f}"
                                          for x in runs if x["round"] == r), flush=True)
    for x in runs:
        key = f"{x['phase']}/{x['framework']}"
        best[key] = max(best.get(key, 0.0), x["images_per_s"])
    summary = {
        "config": args.config, "machine": _cpu_name(),
        "cpu_count": threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "best_images_per_s": best,
        "ratio_to_torch": {k: v / best[k.split("/")[0] + "/torch"] for k, v in best.items()
                           if not k.endswith("/torch")},
        "runs": runs,
    }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    for k, v in summary["ratio_to_torch"].items():
        torch_best = best[k.split("/")[0] + "/torch"]
        print(f"{k}: {best[k]:.1f} images/s, {v:.2f}x PyTorch ({torch_best:.1f})")


if __name__ == "__main__":
    main()
