import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.models.resnet import ResNet, site_channels

# torchvision's parameter counts (models.resnetXX(), 1000-way classifier included).
TORCHVISION_PARAMS = {18: 11_689_512, 34: 21_797_672, 50: 25_557_032, 101: 44_549_160}


def _abstract(depth, width=1.0, size=64, channels=3):
    model = ResNet(depth=depth, width=width)
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    sites = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return variables, sites


@pytest.mark.parametrize("depth", sorted(TORCHVISION_PARAMS))
def test_parameter_count_equals_torchvision_with_classifier(depth):
    variables, sites = _abstract(depth)
    backbone = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(variables["params"]))
    # Our encoder has no classifier; torchvision's fc is a Linear(C_final, 1000) with bias.
    fc = sites[-1].shape[-1] * 1000 + 1000
    assert backbone + fc == TORCHVISION_PARAMS[depth]


@pytest.mark.parametrize("depth,width", [(18, 1.0), (50, 0.25), (101, 0.5)])
def test_five_sites_have_documented_strides_and_channels(depth, width):
    _, sites = _abstract(depth, width, size=128)
    assert [s.shape[1] for s in sites] == [64, 32, 16, 8, 4]
    assert tuple(s.shape[-1] for s in sites) == site_channels(depth, width)


def test_width_multiplier_and_input_channels():
    variables, sites = _abstract(18, width=0.25, channels=1)
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 1, 16)
    assert sites[-1].shape[-1] == 128


def test_unsupported_depth_is_a_clear_error():
    with pytest.raises(ValueError, match="resnet_depth=152"):
        _abstract(152)


def test_batchnorm_statistics_are_averaged_over_the_device_axis(abstract_init, fill_variables):
    # Two "devices" (a named vmap axis behaves as pmap does) with one image each must normalise
    # and update running statistics like one device holding both images.
    model = ResNet(depth=18, width=0.125)
    synced = ResNet(depth=18, width=0.125, bn_axis_name="batch")
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = fill_variables(abstract_init(model, x[:1], train=False))

    def run(m, v, x):
        return m.apply(v, x, train=True, mutable=["batch_stats"])

    whole, whole_state = jax.jit(lambda v, x: run(model, v, x))(variables, x)
    split, split_state = jax.jit(jax.vmap(lambda v, x: run(synced, v, x), in_axes=(None, 0),
                                          axis_name="batch"))(variables, x[:, None])
    np.testing.assert_allclose(split[1][:, 0], whole[1], rtol=1e-4, atol=1e-4)
    for a, b in zip(jax.tree.leaves(split_state), jax.tree.leaves(whole_state), strict=True):
        # Per-device statistics would differ between the two devices and from the whole batch.
        np.testing.assert_allclose(a[0], b, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(a[1], b, rtol=1e-3, atol=1e-4)
