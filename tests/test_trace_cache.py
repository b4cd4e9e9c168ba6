"""hpe_jax/runtime/trace_cache.py: a step traced once is read back by a later run without tracing
it, computes the same, and is traced anew whenever its key changes."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hpe_jax.runtime import compile_cache, trace_cache
from hpe_jax.training import steps as train_steps
from hpe_jax.training.state import TrainState

TRACES = {"count": 0}


def _toy_step(state: TrainState, batch: dict, rng: jax.Array, *, scale: float):
    """A pmapped-style train step: gradient of a least-squares loss, averaged over devices."""
    TRACES["count"] += 1  # Python runs only while the step is traced
    del rng

    def loss_fn(params):
        pred = batch["x"] @ params["w"] + params["b"]
        return scale * jnp.mean((pred - batch["y"]) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    grads = jax.lax.pmean(grads, "batch")
    new_state, _ = state.apply_gradients(grads, state.batch_stats)
    return new_state, {"loss": jax.lax.pmean(loss, "batch")}


@functools.cache
def _pmapped(scale: float):
    return jax.pmap(functools.partial(_toy_step, scale=scale), axis_name="batch",
                    donate_argnums=(0,))


def _args():
    n = jax.local_device_count()
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32),
              "b": jnp.zeros((2,), jnp.float32)}
    state = TrainState.create({"params": params}, optax.adam(1e-2))
    batch = {"x": rng.normal(size=(n, 4, 3)).astype(np.float32),
             "y": rng.normal(size=(n, 4, 2)).astype(np.float32)}
    batch = jax.pmap(lambda t: t)(batch)
    return train_steps.replicate(state), batch, jax.random.split(jax.random.PRNGKey(0), n)


def _run(step, n_steps=3):
    state, batch, rngs = _args()
    losses = []
    for _ in range(n_steps):
        state, metrics = step(state, batch, rngs)
        losses.append(np.asarray(metrics["loss"]))
    return jax.device_get(state.params), np.stack(losses)


def _same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_second_run_loads_the_traced_step_without_tracing_and_computes_the_same(tmp_path):
    reference = _run(_pmapped(1.0))
    first = trace_cache.CachedStep(_pmapped(1.0), "toy", str(tmp_path))
    TRACES["count"] = 0
    result = _run(first)
    assert (first.exported, first.loaded) == (1, 0)
    assert TRACES["count"] == 1  # traced once, then its own outputs reuse the program
    assert len(list(tmp_path.glob("*" + trace_cache.SUFFIX))) == 1
    assert not list(tmp_path.glob("*.tmp"))
    _same(result, reference)

    # A later run (a new object, as in a new process) reads the file and never traces the step.
    TRACES["count"] = 0
    second = trace_cache.CachedStep(_pmapped(1.0), "toy", str(tmp_path))
    _same(_run(second), reference)
    assert (second.exported, second.loaded) == (0, 1)
    assert TRACES["count"] == 0


def test_a_changed_key_or_an_unreadable_file_is_traced_again(tmp_path, caplog):
    first = trace_cache.CachedStep(_pmapped(1.0), "toy", str(tmp_path))
    _run(first, n_steps=1)
    # Another fingerprint (what the config says the step closes over) is another program.
    other = trace_cache.CachedStep(_pmapped(2.0), "toy scale 2", str(tmp_path))
    _same(_run(other, n_steps=1), _run(_pmapped(2.0), n_steps=1))
    assert other.exported == 1
    assert len(list(tmp_path.glob("*" + trace_cache.SUFFIX))) == 2
    # Other argument shapes are another program too.
    state, batch, rngs = _args()
    assert first.key(state, batch, rngs) != first.key(
        state, jax.tree_util.tree_map(lambda x: x[:, :2], batch), rngs)
    # A truncated entry is traced and written again, with a warning, not a crash.
    path = os.path.join(str(tmp_path), first.key(state, batch, rngs) + trace_cache.SUFFIX)
    with open(path, "r+b") as f:
        f.truncate(100)
    again = trace_cache.CachedStep(_pmapped(1.0), "toy", str(tmp_path))
    _same(_run(again), _run(_pmapped(1.0)))
    assert (again.exported, again.loaded) == (1, 0)
    assert "could not be read back" in caplog.text


def test_the_compilation_cache_switch_turns_the_trace_cache_on_and_off(tmp_path, monkeypatch):
    saved = {k: getattr(jax.config, k) for k in (
        "jax_enable_compilation_cache", "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes")}
    try:
        monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
        directory = compile_cache.enable(str(tmp_path))
        assert trace_cache.directory() == os.path.join(directory, compile_cache.TRACED_STEPS)
        step = _pmapped(1.0)
        assert isinstance(trace_cache.cached(step, "toy"), trace_cache.CachedStep)
        assert trace_cache.cached(step, "toy") is trace_cache.cached(step, "toy")
        monkeypatch.setenv(compile_cache.ENV_VAR, "off")
        assert compile_cache.enable() is None
        assert trace_cache.directory() is None
        assert trace_cache.cached(step, "toy") is step
    finally:
        trace_cache.enable(None)
        for k, v in saved.items():
            jax.config.update(k, v)


@pytest.mark.slow  # about 150 s: the smoke config's fine-tuning step compiled twice
def test_the_fine_tuning_step_read_back_equals_the_traced_one(tmp_path):
    """The project's real fine-tuning step (smoke config: every pass, pseudo-labels, EMA)."""
    from configs import smoke
    from hpe_jax.experiments import benchmarking
    from hpe_jax.training import config_checks

    config = smoke.get_config()
    config_checks.resolve(config)
    step, (state, batch, rngs), _ = benchmarking.prepared_train_step(config, "finetune")
    copy = jax.tree_util.tree_map(jnp.array, state)
    want_state, want = step(state, batch, rngs)
    trace_cache.CachedStep(step, "smoke", str(tmp_path))(
        jax.tree_util.tree_map(jnp.array, copy), batch, rngs)
    loaded = trace_cache.CachedStep(step, "smoke", str(tmp_path))
    got_state, got = loaded(copy, batch, rngs)
    assert loaded.loaded == 1
    _same(got, want)
    _same(got_state.params, want_state.params)
    _same(got_state.teacher_params, want_state.teacher_params)
