"""`model.conv_grad='patches'`: the same convolution and gradients as XLA's, rounded differently."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from hpe_jax.models import conv
from hpe_jax.models.dual_modality import DualModalityNet

DN = ("NHWC", "HWIO", "NHWC")


def _grads(fn, x, w, **kwargs):
    def loss(x_, w_):
        return jnp.sum(jnp.sin(fn(x_, w_, dimension_numbers=DN, **kwargs)))

    return jax.grad(loss, (0, 1))(x, w)


@pytest.mark.parametrize("size, c, o, k, stride, padding", [
    (16, 8, 12, 3, 1, ((1, 1), (1, 1))),
    (16, 8, 12, 3, 2, ((1, 1), (1, 1))),
    (15, 8, 12, 3, 2, "SAME"),
    (16, 8, 12, 1, 2, "VALID"),
    (32, 3, 16, 7, 2, ((3, 3), (3, 3))),
])
def test_patches_gradients_match_xla(size, c, o, k, stride, padding):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(3, size, size, c)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, c, o)), jnp.float32)
    args = dict(window_strides=(stride, stride), padding=padding)
    y_ref = lax.conv_general_dilated(x, w, dimension_numbers=DN, **args)
    np.testing.assert_array_equal(conv.conv_patches_grad(x, w, dimension_numbers=DN, **args),
                                  y_ref)
    ref = _grads(lax.conv_general_dilated, x, w, **args)
    got = _grads(conv.conv_patches_grad, x, w, **args)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(a))))


def test_other_convolutions_fall_back_to_xla():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 9, 9, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 2, 6)), jnp.float32)
    args = dict(window_strides=(1, 1), padding="SAME", feature_group_count=2,
                rhs_dilation=(2, 2))
    ref = _grads(lax.conv_general_dilated, x, w, **args)
    got = _grads(conv.conv_patches_grad, x, w, **args)
    for a, b in zip(ref, got, strict=True):
        np.testing.assert_array_equal(b, a)


def test_choice_is_checked_and_auto_follows_the_backend():
    with pytest.raises(ValueError, match="model.conv_grad='fast'"):
        conv.resolve_conv_grad("fast")
    expected = "patches" if jax.default_backend() == "cpu" else "xla"
    assert conv.resolve_conv_grad("auto") == expected
    assert conv.conv_function("xla") is lax.conv_general_dilated
    assert conv.conv_function("patches") is conv.conv_patches_grad


def test_the_network_trains_the_same_with_either_gradient(abstract_init, fill_variables):
    model = DualModalityNet(resnet_depth=18, width=0.125, deconv_features=16, proj_hidden=32,
                            proj_dim=16, num_deconv=2, stem_pool=False)
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

        return jax.grad(loss)(variables["params"])

    ref, got = grads("xla"), grads("patches")
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(a))) + 1e-9)
