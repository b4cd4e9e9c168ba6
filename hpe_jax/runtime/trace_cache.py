"""Traced train steps kept on disk, so a repeated or resumed run skips Python tracing too.

The persistent compilation cache (`compile_cache`) keeps XLA's executables, but every new process
still traces the step in Python (every Flax module of every pass, then the backward pass) before
it can look the executable up: at the paper config (ResNet-101 x2, 256 px) that is most of a
warm start of the fine-tuning step. `CachedStep` wraps a step `(state, batch, rng) -> (state,
metrics)` and, on its first call with a given argument signature, either loads the step's
exported StableHLO program (`jax.export`) from `directory` or traces and exports it once and
writes it there. It then runs `jax.jit(exported.call)`: that program is the same in every run,
so its XLA executable comes from the persistent compilation cache as well.

What is computed is the traced program itself, unchanged. The file is keyed by
  - the caller's `fingerprint`: everything the step's Python depends on that the arguments do not
    show (the config, the plan that sets the lr schedule, calibrated constants);
  - a hash of this package's source files, so an edited loss, model or optimizer is traced anew;
  - the installed jax, jaxlib, flax and optax versions, JAX's own configuration flags, and the
    devices (platform, kind, count);
  - the arguments' tree paths, shapes, dtypes and shardings.
Anything else that a step closes over must be in the fingerprint. A file that cannot be read back
(truncated, another jax) is traced and written again, with a warning. Files are written to a
temporary name and renamed, so a killed run leaves no half-written entry.

Off in a multi-process run (one process per host), where the step runs as before: exporting a
program whose devices span processes is not measured here yet.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax
from absl import logging
from jax import export

SUFFIX = ".jaxexport"
#: Programs read back from disk and traced-and-written, in this process (all `CachedStep`s).
COUNTS = {"loaded": 0, "exported": 0}
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # hpe_jax/


@functools.lru_cache(maxsize=1)
def source_hash() -> str:
    """sha256 over this package's .py files (relative paths and contents), computed once."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(_PACKAGE_DIR):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, _PACKAGE_DIR).encode())
            with open(path, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _environment() -> dict[str, Any]:
    versions = {}
    for package in ("jax", "jaxlib", "flax", "optax"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    # JAX's flags that are plain values (x64, default matmul precision, ...): a few change what
    # tracing produces; keying on all of them only costs a re-trace when one changes.
    flags = {k: v for k, v in sorted(jax.config.values.items())
             if isinstance(v, (bool, int, float, str, type(None)))}
    devices = [(d.platform, d.device_kind) for d in jax.devices()]
    return {"versions": versions, "jax_flags": flags, "devices": devices,
            "processes": jax.process_count(), "sources": source_hash()}


def _signature(args: tuple) -> list:
    """(tree path, shape, dtype, sharding) of every leaf: what the traced program depends on."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(args)
    return [(jax.tree_util.keystr(path), tuple(x.shape), str(x.dtype),
             str(getattr(x, "sharding", None))) for path, x in leaves]


class CachedStep:
    """`step(state, batch, rng) -> (state, metrics)` with its traced program kept in `directory`.

    The returned state has the structure of the state passed in (checked when the step is
    exported); `metrics` is a dict of arrays. With `donate`, the state's buffers are donated as
    by the bound steps. `directory=None` or a multi-process run: `step` itself is called.
    Attributes for tests and logs: `loaded` / `exported` count the programs read from and
    written to disk by this object.
    """

    def __init__(self, step: Callable, fingerprint: str, directory: str | None, *,
                 donate: bool = True):
        self.step = step
        self.fingerprint = fingerprint
        self.directory = directory
        self.donate = donate
        self.loaded = 0
        self.exported = 0
        self._programs: dict[Any, Callable] = {}

    @property
    def active(self) -> bool:
        return self.directory is not None and jax.process_count() == 1

    def __call__(self, state: Any, batch: Any, rng: Any) -> tuple[Any, Any]:
        if not self.active:
            return self.step(state, batch, rng)
        leaves, treedef = jax.tree_util.tree_flatten(state)
        new_leaves, metrics = self.program(state, batch, rng)(leaves, batch, rng)
        return jax.tree_util.tree_unflatten(treedef, new_leaves), metrics

    def program(self, state: Any, batch: Any, rng: Any) -> Callable:
        """The jitted program for these arguments, read from disk or traced and written:
        `(state's leaves, batch, rng) -> (new state's leaves, metrics)`."""
        leaves, treedef = jax.tree_util.tree_flatten(state)
        memo = (treedef, tuple((x.shape, x.dtype, getattr(x, "sharding", None))
                               for x in jax.tree_util.tree_leaves((leaves, batch, rng))))
        program = self._programs.get(memo)
        if program is None:
            program = self._prepare(state, treedef, batch, rng)
            self._programs[memo] = program
        return program

    def key(self, state: Any, batch: Any, rng: Any) -> str:
        """The file name's hash for these arguments (module docstring: what it covers)."""
        text = json.dumps({"fingerprint": self.fingerprint, "environment": _environment(),
                           "arguments": _signature((state, batch, rng))}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def _prepare(self, state: Any, treedef: Any, batch: Any, rng: Any) -> Callable:
        path = os.path.join(self.directory, self.key(state, batch, rng) + SUFFIX)
        exported = self._load(path)
        if exported is None:
            exported = self._export(state, treedef, batch, rng, path)
        # The new state is placed as the state came in, and the metrics as its first leaf
        # (each with the leading device axis): left to the exported program, a 1-device run's
        # outputs come back replicated instead of split over the device axis, so the next call
        # would see another sharding and trace the step again.
        shardings = [getattr(x, "sharding", None) for x in jax.tree_util.tree_leaves(state)]
        placed = bool(shardings) and all(isinstance(x, jax.sharding.Sharding) for x in shardings)
        return jax.jit(exported.call, donate_argnums=(0,) if self.donate else (),
                       out_shardings=(shardings, shardings[0]) if placed else None)

    def _load(self, path: str) -> export.Exported | None:
        if not os.path.exists(path):
            return None
        try:
            with open(path, "rb") as f:
                exported = export.deserialize(bytearray(f.read()))
        except Exception as e:  # noqa: BLE001  (any unreadable entry is re-traced)
            logging.warning("traced step %s could not be read back (%s: %s); tracing it again",
                            path, type(e).__name__, e)
            return None
        self.loaded += 1
        COUNTS["loaded"] += 1
        logging.info("traced step loaded from %s", path)
        return exported

    def _export(self, state: Any, treedef: Any, batch: Any, rng: Any,
                path: str) -> export.Exported:
        step = self.step

        def flat_step(leaves, batch, rng):
            new_state, metrics = step(jax.tree_util.tree_unflatten(treedef, leaves), batch, rng)
            new_leaves, new_treedef = jax.tree_util.tree_flatten(new_state)
            if new_treedef != treedef:
                raise ValueError("CachedStep: the step returned a state of another structure "
                                 f"({new_treedef}) than it was given ({treedef})")
            return new_leaves, metrics

        leaves = jax.tree_util.tree_leaves(state)
        exported = export.export(jax.jit(flat_step))(leaves, batch, rng)
        os.makedirs(self.directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(exported.serialize())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        self.exported += 1
        COUNTS["exported"] += 1
        logging.debug("traced step written to %s", path)  # a cache file: not news
        return exported


_directory: str | None = None


def enable(directory: str | None) -> None:
    """Sets where `cached` keeps traced steps for this process; None turns the cache off.
    `compile_cache.enable` calls it with `traced_steps/` inside the compilation cache."""
    global _directory
    _directory = None if directory is None else os.path.abspath(os.path.expanduser(directory))


def directory() -> str | None:
    """The directory `enable` set, or None (off: the default, and in the tests)."""
    return _directory


def cached(step: Callable, fingerprint: str, *, donate: bool = True) -> Callable:
    """`step` as a `CachedStep` in this process's directory (`enable`), or `step` itself when
    the cache is off. The same step and fingerprint give the same object, so a second run in
    one process (a resume, an ablation's rows) reuses its compiled program."""
    if _directory is None:
        return step
    return _cached_step(step, fingerprint, _directory, donate)


@functools.lru_cache(maxsize=16)
def _cached_step(step: Callable, fingerprint: str, directory: str, donate: bool) -> CachedStep:
    return CachedStep(step, fingerprint, directory, donate=donate)
