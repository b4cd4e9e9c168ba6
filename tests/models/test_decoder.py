import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.models.decoder import PoseDecoder, ProjectionHead, integral_readout


def test_integral_readout_of_a_peaked_heatmap_gives_its_pixel_and_depth():
    n, s, j = 2, 8, 3
    logits = np.full((n, s, s, j), -1e4, np.float32)
    peaks = [(1, 6), (5, 0), (7, 7)]  # (row, column)
    for k, (r, c) in enumerate(peaks):
        logits[:, r, c, k] = 0.0
    latent = np.random.default_rng(0).normal(size=(n, s, s, j)).astype(np.float32)
    uv, z, probs = integral_readout(jnp.asarray(logits), jnp.asarray(latent), jnp.float32(1.0))
    np.testing.assert_allclose(uv[0], [[6, 1], [0, 5], [7, 7]], atol=1e-5)  # u = column
    np.testing.assert_allclose(z[1], [latent[1, r, c, k] for k, (r, c) in enumerate(peaks)],
                               atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=(1, 2)), 1.0, rtol=1e-5)


def test_flat_heatmap_reads_out_the_centre_and_beta_sharpens():
    flat = jnp.zeros((1, 4, 4, 1))
    uv, _, _ = integral_readout(flat, flat, jnp.float32(3.0))
    np.testing.assert_allclose(uv[0, 0], [1.5, 1.5], atol=1e-6)
    ramp = jnp.arange(4.0)[None, None, :, None] * jnp.ones((1, 4, 4, 1))
    u_soft = integral_readout(ramp, flat, jnp.float32(1.0))[0][0, 0, 0]
    u_sharp = integral_readout(ramp, flat, jnp.float32(10.0))[0][0, 0, 0]
    assert 1.5 < u_soft < u_sharp <= 3.0


def test_decoder_upsamples_by_8_and_returns_float32_heads(abstract_init, fill_variables):
    dec = PoseDecoder(num_joints=5, features=8)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 2, 2, 16))
    abstract = abstract_init(dec, x, train=False)
    assert abstract["params"]["beta"].shape == ()
    variables = fill_variables(abstract)
    y = jax.jit(lambda v, x: dec.apply(v, x, train=False))(variables, x)
    assert y["heatmaps"].shape == (2, 16, 16, 5) and y["uv"].shape == (2, 5, 2)
    assert y["mask"].shape == y["depth_map"].shape == (2, 16, 16, 1)
    assert ((y["mask"] > 0) & (y["mask"] < 1)).all()
    # bfloat16 compute: parameters stay float32, outputs are float32.
    dec16 = PoseDecoder(num_joints=5, features=8, dtype=jnp.bfloat16)
    y16 = jax.eval_shape(lambda v, x: dec16.apply(v, x, train=False), variables,
                         x.astype(jnp.bfloat16))
    assert all(v.dtype == jnp.float32 for v in y16.values())


def test_projection_is_unit_norm(abstract_init, fill_variables):
    head = ProjectionHead(hidden=8, dim=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2, 6))
    z = head.apply(fill_variables(abstract_init(head, x)), x)
    np.testing.assert_allclose(np.linalg.norm(z, axis=-1), 1.0, rtol=1e-5)


def test_subpixel_deconv_computes_flax_conv_transpose_exactly():
    import flax.linen as nn

    from hpe_jax.models.decoder import Deconv

    key = jax.random.PRNGKey(3)
    for hw, c_in in ((2, 6), (4, 5), (3, 4)):
        x = jax.random.normal(key, (2, hw, hw + 1, c_in))
        ref = nn.ConvTranspose(7, (4, 4), strides=(2, 2), padding="SAME", use_bias=False)
        variables = ref.init(key, x)
        want = ref.apply(variables, x)
        for impl in ("transpose", "subpixel"):
            got = Deconv(7, impl).apply(variables, x)  # the same parameter tree
            assert got.shape == (2, 2 * hw, 2 * (hw + 1), 7)
            np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
        # Gradients too: training sees the same function.
        g_ref = jax.grad(lambda v, m=ref, x=x: jnp.sum(m.apply(v, x) ** 3))(variables)
        g_sub = jax.grad(lambda v, x=x: jnp.sum(Deconv(7, "subpixel").apply(v, x) ** 3))(
            variables)
        np.testing.assert_allclose(g_sub["params"]["kernel"], g_ref["params"]["kernel"],
                                   atol=1e-4, rtol=1e-4)
