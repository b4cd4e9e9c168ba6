import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.models.attention import depth_attention_weights


def _eq1_numpy(f):
    """Eq. 1 literally: w_ij = <f_bar, f_ij> / sum_kl <f_bar, f_kl> * (h * w)."""
    n, h, w, c = f.shape
    out = np.zeros((n, h, w, 1))
    for b in range(n):
        f_bar = f[b].reshape(-1, c).mean(0)
        dots = np.array([[f_bar @ f[b, i, j] for j in range(w)] for i in range(h)])
        out[b, ..., 0] = dots / dots.sum() * (h * w)
    return out


def test_eq1_matches_direct_numpy_on_random_non_negative_maps():
    f = np.maximum(np.random.default_rng(0).normal(size=(3, 5, 7, 6)), 0.0)
    got = np.asarray(depth_attention_weights(jnp.asarray(f, jnp.float32)))
    assert got.shape == (3, 5, 7, 1)
    # The default guard (eps = 1e-6) moves each weight by at most ~eps / mean inner product.
    np.testing.assert_allclose(got, _eq1_numpy(f), rtol=1e-5, atol=1e-5)
    exact = np.asarray(depth_attention_weights(jnp.asarray(f, jnp.float32), eps=0.0))
    np.testing.assert_allclose(exact, _eq1_numpy(f), rtol=1e-5)


def test_weights_average_to_one_and_favour_strong_positions():
    f = np.random.default_rng(1).uniform(0, 1, size=(2, 8, 8, 4)).astype(np.float32)
    f[:, 2, 3] *= 10.0
    w = np.asarray(depth_attention_weights(jnp.asarray(f)))
    np.testing.assert_allclose(w.mean(axis=(1, 2, 3)), 1.0, rtol=1e-5)
    assert (w[:, 2, 3, 0] == w.max(axis=(1, 2, 3))).all()


def test_all_zero_map_gives_uniform_weights_not_nan():
    w = np.asarray(depth_attention_weights(jnp.zeros((2, 4, 4, 8))))
    assert np.isfinite(w).all()
    np.testing.assert_allclose(w, 1.0)


def test_bfloat16_features_keep_their_dtype():
    f = jnp.abs(jnp.arange(2 * 4 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 4, 3))
    w = depth_attention_weights(f.astype(jnp.bfloat16))
    assert w.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(w, np.float32), np.asarray(depth_attention_weights(f)),
                               rtol=1e-2)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        depth_attention_weights(jnp.zeros((4, 4, 8)))
    with pytest.raises(ValueError, match="eps"):
        depth_attention_weights(jnp.zeros((1, 4, 4, 8)), eps=-1.0)
