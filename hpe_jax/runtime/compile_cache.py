"""JAX's persistent compilation cache, on by default for the tools.

Compiling the train steps takes minutes at the paper config (ResNet-101, 256 px) and tens of
seconds at the demo sizes; without a cache every run and every resume pays it again. With the
cache, XLA's executables are written to a directory keyed by the program, the compiler options and
the jax/jaxlib version, and an identical program in a later process is loaded instead of compiled.

Where the cache lives (first that applies):
  1. the `directory` argument of `enable`;
  2. `$HPE_JAX_COMPILE_CACHE` (set it to `off`, `0`, `false` or `none` to disable the cache);
  3. a directory already configured for JAX (`$JAX_COMPILATION_CACHE_DIR` or
     `jax.config.update('jax_compilation_cache_dir', ...)`), left as it is;
  4. `~/.cache/hpe_jax/jax`.

The traced train steps go beside the executables, in `traced_steps/` (`trace_cache`): with both,
a repeated run neither traces nor compiles its steps. Off together.

The cache grows without bound (one entry per distinct compiled program, a few MB to a few hundred
MB each); delete the directory to reclaim the space.
"""

from __future__ import annotations

import os

import jax

from hpe_jax.runtime import trace_cache

ENV_VAR = "HPE_JAX_COMPILE_CACHE"
DEFAULT_DIR = os.path.join("~", ".cache", "hpe_jax", "jax")
TRACED_STEPS = "traced_steps"  # subdirectory for trace_cache's exported steps
_OFF = ("off", "0", "false", "none", "no")


def enable(directory: str | None = None, *, min_compile_time_s: float = 1.0) -> str | None:
    """Turns on JAX's persistent compilation cache; returns its directory, or None when disabled.

    Args:
      directory: cache directory; None: `$HPE_JAX_COMPILE_CACHE`, then a directory JAX already
        has, then `~/.cache/hpe_jax/jax` (module docstring).
      min_compile_time_s: programs that compile faster than this (seconds) are not written
        (small helper programs would only fill the directory).
    Call it before the first compilation (tools call it first thing in `main`).
    """
    env = os.environ.get(ENV_VAR)
    if directory is None and env is not None:
        if env.strip().lower() in _OFF:
            # Off means off, also for a directory JAX got from $JAX_COMPILATION_CACHE_DIR.
            jax.config.update("jax_enable_compilation_cache", False)
            trace_cache.enable(None)
            return None
        directory = env
    if directory is None:
        directory = jax.config.jax_compilation_cache_dir or DEFAULT_DIR
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    # Every entry that passes the time threshold is kept, whatever its size.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    trace_cache.enable(os.path.join(directory, TRACED_STEPS))
    return directory
