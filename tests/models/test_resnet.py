import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from hpe_jax.models.resnet import ResNet, scan_variables, site_channels, unscan_variables

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


@pytest.mark.parametrize("depth", [34, 50])
def test_scanned_blocks_compute_what_the_unrolled_ones_do(depth, abstract_init, fill_variables):
    # The same variables, stacked for the scanned layout, give the same sites, in inference and
    # in training mode, and the same updated running statistics.
    unrolled = ResNet(depth=depth, width=1 / 8)
    scanned = ResNet(depth=depth, width=1 / 8, scan_blocks=True)
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 64, 64, 3))
    variables = fill_variables(abstract_init(unrolled, x[:1], train=False))
    stacked = scan_variables(variables)
    # The documented layout: layer{s}_0 stays, blocks 1.. stacked under layer{s}_blocks.
    want = abstract_init(scanned, x[:1], train=False)
    assert jax.tree.map(np.shape, stacked) == jax.tree.map(lambda s: s.shape, want)
    blocks = (3, 4, 6, 3)
    for s, n in enumerate(blocks, start=1):
        assert f"layer{s}_1" not in stacked["params"] and f"layer{s}_0" in stacked["params"]
        leaf = stacked["params"][f"layer{s}_blocks"]["conv1"]["kernel"]
        assert leaf.shape[0] == n - 1
        np.testing.assert_array_equal(leaf[n - 2],
                                      variables["params"][f"layer{s}_{n - 1}"]["conv1"]["kernel"])

    def run(model, v, train):
        return jax.jit(lambda v, x: model.apply(v, x, train=train, mutable=["batch_stats"]))(v, x)

    for train in (False, True):
        (a, a_state), (b, b_state) = run(unrolled, variables, train), run(scanned, stacked, train)
        for site_a, site_b in zip(a, b, strict=True):
            np.testing.assert_allclose(site_b, site_a, rtol=1e-5, atol=1e-5)
        if train:
            got = unscan_variables(b_state)["batch_stats"]
            for path, want_leaf in traverse_util.flatten_dict(a_state["batch_stats"]).items():
                np.testing.assert_allclose(traverse_util.flatten_dict(got)[path], want_leaf,
                                           rtol=1e-5, atol=1e-6)


def test_scan_and_unscan_variables_are_inverse():
    rng = np.random.default_rng(0)
    tree = {"conv1": {"kernel": rng.normal(size=(3, 3, 1, 2))},
            "layer1_0": {"conv1": {"kernel": rng.normal(size=(1, 2))}},
            **{f"layer3_{k}": {"bn1": {"scale": rng.normal(size=(2,))}} for k in range(4)},
            "layer4_0": {"bn1": {"scale": rng.normal(size=(2,))}}}
    scanned = scan_variables({"params": tree})["params"]
    assert sorted(scanned) == ["conv1", "layer1_0", "layer3_0", "layer3_blocks", "layer4_0"]
    assert scanned["layer3_blocks"]["bn1"]["scale"].shape == (3, 2)
    back = unscan_variables({"params": scanned})["params"]
    assert jax.tree.structure(back) == jax.tree.structure(tree)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(tree), strict=True):
        np.testing.assert_array_equal(a, b)
    # Either function leaves a tree already in its target layout as it is.
    assert jax.tree.structure(scan_variables(scanned)) == jax.tree.structure(scanned)
    assert jax.tree.structure(unscan_variables(tree)) == jax.tree.structure(tree)
    with pytest.raises(ValueError, match="not 0..n-1"):
        scan_variables({"layer2_0": {}, "layer2_2": {"a": np.zeros(1)}})
