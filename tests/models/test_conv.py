"""`model.conv_grad='stored'`: XLA's convolution and gradients, the input stored for the kernel
gradient (so XLA:CPU's transposes read it instead of recomputing its producers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hpe_jax.models import conv
from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.training.factory import resolve_conv_grad

DN = ("NHWC", "HWIO", "NHWC")


def _grads(fn, x, w, **kwargs):
    def loss(x_, w_):
        # BatchNorm-like producers of the input: what XLA:CPU would recompute.
        h = jnp.maximum((x_ - jnp.mean(x_)) * 1.5 + 0.1, 0.0)
        return jnp.sum(jnp.sin(fn(h, w_, dimension_numbers=DN, **kwargs)))

    return jax.jit(jax.grad(loss, (0, 1)))(x, w)


@pytest.mark.parametrize("size, c, o, k, stride, padding, extra", [
    (16, 8, 12, 3, 1, ((1, 1), (1, 1)), {}),
    (15, 8, 12, 3, 2, "SAME", {}),
    (16, 8, 12, 1, 2, "VALID", {}),
    (32, 3, 16, 7, 2, [(3, 3), (3, 3)], {}),
    (9, 4, 6, 3, 1, "SAME", {"feature_group_count": 2, "rhs_dilation": (2, 2)}),
])
def test_stored_input_gradients_match_xla(size, c, o, k, stride, padding, extra):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, size, size, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c // extra.get("feature_group_count", 1), o)),
                    jnp.float32)
    args = dict(window_strides=(stride, stride), padding=padding, **extra)
    np.testing.assert_array_equal(conv.conv_stored_input(x, w, dimension_numbers=DN, **args),
                                  lax.conv_general_dilated(x, w, dimension_numbers=DN, **args))
    ref = _grads(lax.conv_general_dilated, x, w, **args)
    got = _grads(conv.conv_stored_input, x, w, **args)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(a))))


def test_the_kernel_gradient_reads_a_stored_input():
    # The optimized program has a conditional (the stored input) only with 'stored'.
    x = jnp.ones((4, 8, 8, 4))
    w = jnp.ones((3, 3, 4, 4))

    def compiled(fn):
        def loss(w_, x_):
            h = jnp.maximum(x_ * 2.0 - 1.0, 0.0)
            return jnp.sum(fn(h, w_, (1, 1), "SAME", dimension_numbers=DN))

        return jax.jit(jax.grad(loss)).lower(w, x).compile().as_text()

    assert "conditional" in compiled(conv.conv_stored_input)
    assert "conditional" not in compiled(lax.conv_general_dilated)


def test_choice_is_checked_and_auto_follows_the_cpu():
    with pytest.raises(ValueError, match="model.conv_grad='fast'"):
        resolve_conv_grad("fast")
    assert resolve_conv_grad("auto", backend="cpu", avx512=False) == "stored"
    assert resolve_conv_grad("auto", backend="cpu", avx512=True) == "xla"
    assert resolve_conv_grad("auto", backend="gpu", avx512=False) == "xla"
    assert resolve_conv_grad("stored", backend="gpu") == "stored"
    assert conv.conv_function("xla") is lax.conv_general_dilated
    assert conv.conv_function("stored") is conv.conv_stored_input


def test_the_network_trains_the_same_with_either_gradient(abstract_init, fill_variables):
    model = DualModalityNet(resnet_depth=18, width=0.125, deconv_features=16, proj_hidden=32,
                            proj_dim=16, num_deconv=2, stem_pool=False, deconv_impl="subpixel")
    rng = np.random.default_rng(0)
    rgb = jnp.asarray(rng.normal(size=(2, 32, 32, 3)), jnp.float32)
    depth = jnp.asarray(rng.uniform(-1, 1, size=(2, 32, 32, 1)), jnp.float32)
    variables = fill_variables(abstract_init(model, rgb, depth, train=False))

    def grads(impl):
        def loss(params):
            out, _ = model.clone(conv_grad=impl).apply(
                {"params": params, "batch_stats": variables["batch_stats"]}, rgb, depth,
                train=True, mutable=["batch_stats"])
            return sum(jnp.sum(y["heatmaps"] ** 2) + jnp.sum(y["z"]) for y in out.values())

        return jax.jit(jax.grad(loss))(variables["params"])

    ref, got = grads("xla"), grads("stored")
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a))) + 1e-9)
