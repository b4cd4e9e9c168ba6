import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.objectives.heatmap import gaussian_targets, heatmap_kl


def test_gaussian_targets_sum_to_one_and_peak_at_the_joint():
    uv = jnp.asarray([[[3.0, 5.0], [10.2, 0.0]]])  # (1, 2, 2): u = column, v = row
    g = gaussian_targets(uv, 16, 1.0)
    assert g.shape == (1, 16, 16, 2)
    np.testing.assert_allclose(g.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    row, col = np.unravel_index(np.argmax(g[0, :, :, 0]), (16, 16))
    assert (row, col) == (5, 3)
    row, col = np.unravel_index(np.argmax(g[0, :, :, 1]), (16, 16))
    assert (row, col) == (0, 10)


def test_kl_is_zero_at_the_target_positive_elsewhere_and_skips_joints_off_the_map():
    uv = jnp.asarray([[[4.0, 4.0], [8.0, 9.0]]])
    target = gaussian_targets(uv, 16, 1.0)
    assert abs(float(heatmap_kl(target, uv))) < 1e-5
    flat = jnp.full((1, 16, 16, 2), 1.0 / 256)
    assert float(heatmap_kl(flat, uv)) > 1.0
    # A joint off the map does not count: the loss equals that of the inside joint alone.
    off = uv.at[0, 1].set(jnp.asarray([30.0, 4.0]))
    np.testing.assert_allclose(heatmap_kl(flat, off), heatmap_kl(flat[..., :1], uv[:, :1]),
                               rtol=1e-5)


def test_kl_gives_every_logit_a_gradient_on_a_flat_map():
    uv = jnp.asarray([[[4.0, 4.0]]])

    def loss(logits):
        p = jax.nn.softmax(logits.reshape(1, 256, 1), axis=1).reshape(1, 16, 16, 1)
        return heatmap_kl(p, uv)

    g = jax.grad(loss)(jnp.zeros((1, 16, 16, 1)))
    # d KL / d logit = p - target: pulls the joint's pixel up by about its target mass.
    assert float(g[0, 4, 4, 0]) < -0.1 and float(g[0, 15, 15, 0]) > 0
