import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hpe_jax.objectives.contrastive import nt_xent


def _eq3_numpy(z, zp, tau):
    """Direct transcription of DM-HPE's Eq. 3 (positive not in the denominator), divided by the
    batch size."""
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))  # noqa: E731
    total = 0.0
    n = len(z)
    for i in range(n):
        num = np.exp(cos(z[i], zp[i]) / tau)
        den = sum(np.exp(cos(z[i], z[k]) / tau) + np.exp(cos(z[i], zp[k]) / tau)
                  for k in range(n) if k != i)
        total += -np.log(num / den)
    return total / n


def _simclr_numpy(z, zp, tau):
    cos = lambda a, b: a @ b / (np.linalg.norm(a) * np.linalg.norm(b))  # noqa: E731
    allv = np.concatenate([z, zp])
    n = len(z)
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        num = np.exp(cos(allv[i], allv[j]) / tau)
        den = sum(np.exp(cos(allv[i], allv[k]) / tau) for k in range(2 * n) if k != i)
        losses.append(-np.log(num / den))
    return np.mean(losses)


def test_nt_xent_matches_eq3():
    rng = np.random.default_rng(0)
    z, zp = rng.normal(size=(2, 12, 16)).astype(np.float32)
    np.testing.assert_allclose(nt_xent(z, zp, 0.5), _eq3_numpy(z, zp, 0.5), rtol=1e-5)
    np.testing.assert_allclose(nt_xent(z, zp, 0.1), _eq3_numpy(z, zp, 0.1), rtol=1e-5)


def test_simclr_variant():
    rng = np.random.default_rng(1)
    z, zp = rng.normal(size=(2, 8, 16)).astype(np.float32)
    np.testing.assert_allclose(nt_xent(z, zp, 0.5, variant="simclr"), _simclr_numpy(z, zp, 0.5),
                               rtol=1e-5)
    with pytest.raises(ValueError, match="unknown NT-Xent variant"):
        nt_xent(z, zp, variant="nope")


def test_aligned_pairs_give_lower_loss():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(16, 8)).astype(np.float32)
    assert nt_xent(z, z + 0.01 * rng.normal(size=z.shape)) < nt_xent(z, rng.normal(size=z.shape))


_SHARDED = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from hpe_jax.objectives.contrastive import nt_xent
    assert jax.local_device_count() == 4
    rng = np.random.default_rng(0)
    x, xp = rng.normal(size=(2, 16, 6)).astype(np.float32)
    w = rng.normal(size=(6, 5)).astype(np.float32)
    for variant in ("paper", "simclr"):
        def loss(w, x, xp, axis_name=None):
            return nt_xent(jnp.tanh(x @ w), jnp.tanh(xp @ w), 0.5, axis_name, variant)
        l1, g1 = jax.value_and_grad(loss)(w, x, xp)
        def sharded(w, x, xp):
            l, g = jax.value_and_grad(loss)(w, x, xp, "d")
            return l, jax.lax.pmean(g, "d")
        l4, g4 = jax.pmap(sharded, axis_name="d", in_axes=(None, 0, 0))(
            w, x.reshape(4, 4, 6), xp.reshape(4, 4, 6))
        np.testing.assert_allclose(l4, np.full(4, l1), rtol=1e-5)
        np.testing.assert_allclose(g4[0], g1, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g4[3], g1, rtol=1e-5, atol=1e-6)
    print("OK")
""")


def test_sharded_loss_and_gradient_equal_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]
