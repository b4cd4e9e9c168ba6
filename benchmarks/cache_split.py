"""Where a repeated run's compile time goes: tracing, lowering, and XLA compiling or loading.

Lowers and compiles the bound pre-training and fine-tuning steps of the paper config
(configs/default.py, scanned blocks, batch 2 / 2 + 2, as docs/benchmarks.md's cache table)
with the persistent compilation cache in `--cache_dir`, and records JAX's own compile-event
durations (`jax.monitoring`): on a warm cache, "backend_compile_duration" is the time to load the
cached executable.

    .venv/bin/python benchmarks/cache_split.py --cache_dir=/tmp/cache \
        --output=benchmarks/results_cpu/cache_paper_warm_split.json

Run it after `tools.benchmark` has filled the cache with the same config (docs/benchmarks.md).

With `--traced`, each step goes through `trace_cache.CachedStep` (the traced-step cache the
tools use, in `<cache_dir>/traced_steps`), and what is timed is reading its exported program
(or tracing and writing it), then lowering that and compiling or loading the executable: the
start-up before the first step runs. Run it twice on one `--cache_dir`: the second run is a
repeated run's start-up.

    .venv/bin/python benchmarks/cache_split.py --cache_dir=/tmp/c --traced --output=cold.json
    .venv/bin/python benchmarks/cache_split.py --cache_dir=/tmp/c --traced --output=warm.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Run as a script (`python benchmarks/cache_split.py`), Python puts benchmarks/ on the path, not
# the repository root that holds configs/ (hpe_jax itself is installed).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs import default  # noqa: E402
from hpe_jax.experiments import benchmarking  # noqa: E402
from hpe_jax.runtime import compile_cache, cpu, trace_cache  # noqa: E402
from hpe_jax.training import config_checks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache_dir", required=True, help="persistent compilation cache")
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--traced", action="store_true",
                        help="time the first call of the trace-cached step (docstring)")
    args = parser.parse_args()
    cpu.choose_cpu_convolutions()  # as the tools do ($HPE_JAX_CPU_CONV), before JAX starts
    compile_cache.enable(args.cache_dir)
    c = default.get_config()
    c.model.scan_blocks = True
    c.pretrain.batch_size = 2
    c.finetune.batch_size = 2
    c.finetune.unlabelled_batch_size = 2
    config_checks.resolve(c)
    out = {}
    for phase in ("pretrain", "finetune"):
        step, (rstate, batch, rngs), _ = benchmarking.prepared_train_step(c, phase)
        events: list[tuple[str, float]] = []

        def listener(event: str, seconds: float, **_) -> None:
            events.append((event, round(seconds, 2)))  # noqa: B023  (used within the loop)

        jax.monitoring.register_event_duration_secs_listener(listener)
        t0 = time.perf_counter()
        if args.traced:
            cached = trace_cache.CachedStep(step, f"cache_split {phase}", trace_cache.directory())
            program = cached.program(rstate, batch, rngs)
            t1 = time.perf_counter()
            program.lower(jax.tree_util.tree_leaves(rstate), batch, rngs).compile()
            t2 = time.perf_counter()
            out[phase] = {"read_or_trace_s": round(t1 - t0, 2),
                          "lower_and_compile_or_load_s": round(t2 - t1, 2),
                          "total_s": round(t2 - t0, 2), "loaded": cached.loaded,
                          "exported": cached.exported}
        else:
            lowered = step.lower(rstate, batch, rngs)
            t1 = time.perf_counter()
            lowered.compile()
            t2 = time.perf_counter()
            out[phase] = {"trace_and_lower_s": round(t1 - t0, 2),
                          "compile_or_load_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2)}
        jax.monitoring.unregister_event_duration_listener(listener)
        out[phase]["events"] = [e for e in events if e[1] > 0.2]
        print(phase, out[phase], flush=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
