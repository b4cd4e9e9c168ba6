import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.models.dual_modality import DualModalityNet

J = 21
SMALL = dict(resnet_depth=18, width=0.25, deconv_features=32, proj_hidden=64)


@pytest.fixture(scope="module")
def small(abstract_init, fill_variables):
    """ResNet-18 at width 0.25, 64 px, with filled variables (see conftest)."""
    model = DualModalityNet(**SMALL)
    rng = np.random.default_rng(0)
    rgb = jnp.asarray(rng.normal(size=(2, 64, 64, 3)), jnp.float32)
    depth = jnp.asarray(rng.uniform(-1, 1, size=(2, 64, 64, 1)), jnp.float32)
    variables = fill_variables(abstract_init(model, rgb, depth, train=False))
    return model, variables, rgb, depth


def _check_prediction(y, n=2, s=16, proj_dim=128):
    assert y["uv"].shape == (n, J, 2) and y["z"].shape == (n, J)
    assert y["heatmaps"].shape == (n, s, s, J)
    assert y["mask"].shape == y["depth_map"].shape == (n, s, s, 1)
    assert y["projection"].shape == (n, proj_dim)
    for v in y.values():
        assert v.dtype == jnp.float32 and np.isfinite(np.asarray(v)).all()
    np.testing.assert_allclose(np.linalg.norm(y["projection"], axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y["heatmaps"]).sum(axis=(1, 2)), 1.0, rtol=1e-4)
    assert (np.asarray(y["uv"]) >= 0).all() and (np.asarray(y["uv"]) <= s - 1).all()


def test_all_three_ways_jit_compile_and_run_in_training(small):
    model, variables, rgb, depth = small
    step = jax.jit(lambda v, r, d: model.apply(v, rgb=r, depth=d, train=True,
                                               mutable=["batch_stats"]))
    outs, new_state = step(variables, rgb, depth)
    assert set(outs) == {"rgb", "depth", "fused"}
    for y in outs.values():
        _check_prediction(y)
    # The depth attention changes the RGB stream: y_F differs from y_R.
    assert np.abs(np.asarray(outs["fused"]["uv"] - outs["rgb"]["uv"])).max() > 1e-4
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(),
                         new_state["batch_stats"], variables["batch_stats"])
    assert min(jax.tree.leaves(moved)) > 0  # every BatchNorm saw data


def test_single_modality_ways_and_predict_rgb(small):
    model, variables, rgb, depth = small
    run = jax.jit(lambda v, r, d: model.apply(v, rgb=r, depth=d, train=False))
    both = run(variables, rgb, depth)
    only_rgb = jax.eval_shape(lambda v, r: model.apply(v, rgb=r, train=False), variables, rgb)
    assert set(only_rgb) == {"rgb"}
    pred = jax.jit(lambda v, r: model.apply(v, r, train=False, method=DualModalityNet.predict_rgb)
                   )(variables, rgb)
    only_depth = jax.jit(lambda v, d: model.apply(v, depth=d, train=False))(variables, depth)
    assert set(only_depth) == {"depth"}
    _check_prediction(pred)
    _check_prediction(only_depth["depth"])
    # Each way in is independent of the presence of the other input.
    for key in ("uv", "z", "mask", "projection"):
        np.testing.assert_allclose(pred[key], both["rgb"][key], atol=1e-4)
        np.testing.assert_allclose(only_depth["depth"][key], both["depth"][key], atol=1e-4)
    # The fused way alone (fine-tuning's second pass) is the fused way of the full call.
    only_fused = jax.jit(lambda v, r, d: model.apply(v, rgb=r, depth=d, train=False,
                                                     ways=("fused",)))(variables, rgb, depth)
    assert set(only_fused) == {"fused"}
    for key in ("uv", "z", "mask", "projection"):
        np.testing.assert_allclose(only_fused["fused"][key], both["fused"][key], atol=1e-4)


def test_attention_sits_at_exactly_the_five_documented_places(small):
    model, variables, rgb, depth = small
    # Ends of conv1 (stride 2), conv2_x (4), conv3_x (8), conv4_x (16), conv5_x (32), width 0.25.
    sites = [(32, 32, 16), (16, 16, 16), (8, 8, 32), (4, 4, 64), (2, 2, 128)]

    names = ("attention_weights", "self_attended", "fused")

    def sown(r, d):
        """{name: [(h, w, c) per sown entry, in order]} of the 'intermediates' collection."""
        _, state = jax.eval_shape(
            lambda v, r, d: model.apply(v, rgb=r, depth=d, train=False,
                                        mutable=["intermediates"]), variables, r, d)
        found = state.get("intermediates", {})
        assert set(found) <= set(names)
        return {k: [tuple(x.shape[1:]) for x in found.get(k, ())] for k in names}

    both = sown(rgb, depth)
    assert both == {"attention_weights": [s[:2] + (1,) for s in sites],
                    "self_attended": sites, "fused": sites}
    assert {k: len(v) for k, v in sown(None, depth).items()} == {
        "attention_weights": 5, "self_attended": 5, "fused": 0}
    assert {k: len(v) for k, v in sown(rgb, None).items()} == {
        "attention_weights": 0, "self_attended": 0, "fused": 0}


def test_resnet101_at_256px_shapes_and_bfloat16_outputs(abstract_init):
    rgb = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    depth = jax.ShapeDtypeStruct((2, 256, 256, 1), jnp.float32)
    model = DualModalityNet(resnet_depth=101, dtype=jnp.bfloat16)
    variables = abstract_init(model, rgb, depth, train=False)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables["params"]))
    outs, _ = jax.eval_shape(
        lambda v, r, d: model.apply(v, rgb=r, depth=d, train=True, mutable=["batch_stats"]),
        variables, rgb, depth)
    assert set(outs) == {"rgb", "depth", "fused"}
    for y in outs.values():
        assert y["uv"].shape == (2, J, 2) and y["z"].shape == (2, J)
        assert y["heatmaps"].shape == (2, 64, 64, J)
        assert y["mask"].shape == y["depth_map"].shape == (2, 64, 64, 1)
        assert y["projection"].shape == (2, 128)
        assert all(v.dtype == jnp.float32 for v in y.values())
    assert variables["params"]["depth_encoder"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
    assert variables["params"]["rgb_encoder"]["layer3_22"]["conv3"]["kernel"].shape == (
        1, 1, 256, 1024)


def test_bad_inputs_are_clear_errors(small):
    model, variables, rgb, depth = small
    with pytest.raises(ValueError, match="needs rgb"):
        model.apply(variables, train=False)
    with pytest.raises(ValueError, match="divisible by the encoder's stride 32"):
        model.apply(variables, rgb=rgb[:, :48, :48], train=False)
    with pytest.raises(ValueError, match=r"depth must be \(N, S, S, 1\)"):
        model.apply(variables, depth=depth[..., 0], train=False)
    with pytest.raises(ValueError, match="share batch size"):
        model.apply(variables, rgb=rgb, depth=depth[:1], train=False)
    with pytest.raises(ValueError, match="needs inputs that were not given"):
        model.apply(variables, rgb=rgb, train=False, ways=("fused",))
    with pytest.raises(ValueError, match="resnet_depth=152"):
        DualModalityNet(resnet_depth=152).apply(variables, rgb=rgb, train=False)


def test_stride_16_encoder_with_two_upsamplings_keeps_output_at_a_quarter():
    model = DualModalityNet(**SMALL, stem_pool=False, num_deconv=2)
    rgb = jnp.zeros((1, 64, 64, 3))
    depth = jnp.zeros((1, 64, 64, 1))
    out = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), rgb, depth,
                                                        train=False)[0])
    assert out["rgb"]["heatmaps"].shape == (1, 16, 16, 21)
    assert out["fused"]["uv"].shape == (1, 21, 2)


def test_without_the_stem_pool_the_input_check_uses_stride_16(small):
    """The model's input check and config_checks agree on the stride (48 px is valid at 16)."""
    model, variables, rgb, _ = small
    no_pool = model.clone(stem_pool=False)
    y = no_pool.apply(variables, rgb=rgb[:, :48, :48], train=False, ways=("rgb",))
    assert y["rgb"]["uv"].shape == (2, J, 2)
    with pytest.raises(ValueError, match="divisible by the encoder's stride 16"):
        no_pool.apply(variables, rgb=rgb[:, :40, :40], train=False)
