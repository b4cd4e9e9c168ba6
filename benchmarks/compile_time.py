"""Lowering and XLA compile time of the bound pre-training and fine-tuning steps, scan on/off.

    python benchmarks/compile_time.py --config=configs/default.py --scan=off,on,off,on \
        --output=compile_time.json

For each entry of --scan (`model.scan_blocks` False/True; repeat entries to alternate them on a
shared machine) and each step in --steps, a fresh Python process binds the step as training
does (`training.steps.bind_pretrain` / `bind_finetune`, pmapped over the local devices), lowers
it for abstract inputs (`jax.ShapeDtypeStruct`: no parameters are made) and compiles it, and
reports the seconds of each (wall clock, and the process's CPU time, steadier on a shared
machine). A fresh process per measurement, with the persistent compilation
cache off, so no measurement reuses another's compiled program. The batch sizes are small
(--batch, default 2 per phase and per fine-tuning stream): compile time hardly depends on them.

Prints one line per measurement and a summary (median per step and setting, and the off / on
ratio); --output writes them all as JSON. Results for this repository: docs/benchmarks.md,
"Compile time".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = ("pretrain", "finetune")
#: Wall-clock and process CPU seconds (all threads) of lowering and of XLA's compile.
KEYS = ("lower_s", "compile_s", "lower_cpu_s", "compile_cpu_s")


def load_config(path: str, scan_blocks: bool, batch: int):
    """`get_config()` of the config file at `path`, with `model.scan_blocks` and the batches set."""
    sys.path.insert(0, ROOT)
    spec = importlib.util.spec_from_file_location("_compile_time_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.model.scan_blocks = scan_blocks
    config.pretrain.batch_size = batch
    config.finetune.batch_size = config.finetune.unlabelled_batch_size = batch
    from hpe_jax.training import config_checks

    config_checks.resolve(config)
    return config


def measure(config_path: str, step_name: str, scan_blocks: bool, batch: int) -> dict:
    """Lowers and compiles one bound step in this process; returns the seconds of each."""
    os.environ.setdefault("HPE_JAX_COMPILE_CACHE", "off")
    config = load_config(config_path, scan_blocks, batch)
    import jax
    import jax.numpy as jnp
    import optax

    jax.config.update("jax_enable_compilation_cache", False)
    from hpe_jax.experiments import benchmarking
    from hpe_jax.objectives.pseudo_labels import normalized_template
    from hpe_jax.training import steps
    from hpe_jax.training.factory import build_model
    from hpe_jax.training.optim import make_optimizer
    from hpe_jax.training.state import TrainState

    n_dev = jax.local_device_count()
    model = build_model(config.model, "batch")
    tx = make_optimizer(optax.constant_schedule(config.pretrain.lr), config.optim.b1,
                        config.optim.b2, config.optim.clip_norm)
    S = config.data.input_size
    t0 = time.perf_counter()
    variables = jax.eval_shape(
        lambda r: model.init(r, jnp.zeros((1, S, S, 3)), jnp.zeros((1, S, S, 1)), train=False),
        jax.random.PRNGKey(0))

    state = jax.eval_shape(lambda v: TrainState.create(v, tx), variables)
    if step_name == "pretrain":
        step = steps.bind_pretrain(model, config)
    else:
        step = steps.bind_finetune(model, config, normalized_template())
    host_batch, _ = benchmarking.phase_batch(config, step_name)

    def per_device(x):  # a leading device axis, as pmap takes its arguments
        return jax.ShapeDtypeStruct((n_dev,) + tuple(x.shape), x.dtype)

    def split(x):
        return jax.ShapeDtypeStruct((n_dev, x.shape[0] // n_dev) + tuple(x.shape[1:]), x.dtype)

    args = (jax.tree.map(per_device, state), jax.tree.map(split, host_batch),
            jax.ShapeDtypeStruct((n_dev, 2), jnp.uint32))
    setup_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    lowered = step.lower(*args)
    lower_s, lower_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    lowered.compile()
    compile_s, compile_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    m = config.model
    return {"step": step_name, "scan_blocks": scan_blocks, "lower_s": lower_s,
            "compile_s": compile_s, "lower_cpu_s": lower_cpu_s,
            "compile_cpu_s": compile_cpu_s, "setup_s": setup_s, "batch": batch,
            "resnet_depth": int(m.resnet_depth), "width": float(m.width),
            "input_size": int(S), "dtype": str(m.dtype), "devices": n_dev,
            "platform": jax.devices()[0].platform, "jax": jax.__version__}


def _parse_scan(text: str) -> list[bool]:
    values = {"on": True, "off": False, "true": True, "false": False, "1": True, "0": False}
    out = []
    for item in text.split(","):
        if item.strip().lower() not in values:
            raise argparse.ArgumentTypeError(f"--scan entries are on/off, got {item!r}")
        out.append(values[item.strip().lower()])
    return out


def summarize(results: list[dict]) -> dict:
    """Median seconds (`KEYS`) per (step, scan setting), and the off / on ratios."""
    summary: dict = {}
    for step_name in STEPS:
        rows = {}
        for scan in (False, True):
            runs = [r for r in results if r["step"] == step_name and r["scan_blocks"] == scan]
            if runs:
                rows["on" if scan else "off"] = {
                    k: statistics.median(r[k] for r in runs) for k in KEYS}
        if "on" in rows and "off" in rows:
            rows["speedup"] = {k: rows["off"][k] / rows["on"][k] for k in KEYS}
            rows["speedup"]["lower_plus_compile"] = (
                (rows["off"]["lower_s"] + rows["off"]["compile_s"])
                / (rows["on"]["lower_s"] + rows["on"]["compile_s"]))
        if rows:
            summary[step_name] = rows
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "default.py"))
    p.add_argument("--scan", type=_parse_scan, default=_parse_scan("off,on"),
                   help="comma-separated on/off: model.scan_blocks of each round, in order")
    p.add_argument("--steps", default="pretrain,finetune",
                   help=f"comma-separated, of {STEPS}; each round measures them in this order")
    p.add_argument("--batch", type=int, default=2,
                   help="pre-training batch, and fine-tuning's labelled and unlabelled batches")
    p.add_argument("--output", default="", help="JSON file for every measurement + summary")
    p.add_argument("--one", default="", help=argparse.SUPPRESS)  # 'step,on|off': child process
    args = p.parse_args(argv)
    if args.one:
        step_name, scan = args.one.split(",")
        print(json.dumps(measure(args.config, step_name, scan == "on", args.batch)))
        return
    step_names = [s.strip() for s in args.steps.split(",") if s.strip()]
    if not step_names or not set(step_names) <= set(STEPS):
        p.error(f"--steps must name some of {STEPS}")
    results = []
    for scan in args.scan:
        for step_name in step_names:
            cmd = [sys.executable, os.path.abspath(__file__), "--config", args.config,
                   "--batch", str(args.batch), "--one", f"{step_name},{'on' if scan else 'off'}"]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"measurement {step_name} scan={scan} failed")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(row)
            print(f"{row['step']:9s} scan_blocks={str(row['scan_blocks']):5s} "
                  f"lower {row['lower_s']:7.1f} s  compile {row['compile_s']:7.1f} s  (CPU time: "
                  f"{row['lower_cpu_s']:.1f} s, {row['compile_cpu_s']:.1f} s)", flush=True)
    summary = summarize(results)
    print(json.dumps(summary, indent=1))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
