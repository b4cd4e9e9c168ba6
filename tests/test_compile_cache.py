"""hpe_jax/runtime/compile_cache.py: where the persistent cache goes, and how it is turned off."""

import jax
import pytest

from hpe_jax.runtime import compile_cache


@pytest.fixture
def restore_config():
    keys = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
            "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in keys}
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


def test_directory_precedence_and_off_switch(tmp_path, monkeypatch, restore_config):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    explicit = compile_cache.enable(str(tmp_path / "a"), min_compile_time_s=2.0)
    assert explicit == str(tmp_path / "a") and (tmp_path / "a").is_dir()
    assert jax.config.jax_compilation_cache_dir == explicit
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
    # With no argument and no variable, a directory JAX already has is kept.
    assert compile_cache.enable() == explicit
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "b"))
    assert compile_cache.enable() == str(tmp_path / "b")
    for off in ("off", "0", "False"):
        monkeypatch.setenv(compile_cache.ENV_VAR, off)
        assert compile_cache.enable() is None
    assert not jax.config.jax_enable_compilation_cache
