"""hpe_jax.config_checks: derived sizes, their refusal when inconsistent, the ImageNet request."""

import importlib

import pytest

from configs import default, smoke
from hpe_jax import config_checks


def test_default_sizes_are_derived_from_the_input_size_and_the_model():
    c = default.get_config()
    assert (c.data.output_size, c.loss.uv_scale) == (0, 0.0)  # left to the derivation
    config_checks.resolve(c)
    assert (c.data.output_size, c.loss.uv_scale) == (64, 1.0)  # the paper's 256 -> 64
    # A user who changes input_size alone gets matching sizes, not a shape error in the step.
    c = default.get_config()
    c.data.input_size = 128
    config_checks.resolve(c)
    assert (c.data.output_size, c.loss.uv_scale) == (32, 2.0)
    c = default.get_config()
    c.data.input_size, c.model.stem_pool, c.model.num_deconv = 64, False, 2
    config_checks.resolve(c)
    assert (c.data.output_size, c.loss.uv_scale) == (16, 4.0)
    assert config_checks.resolve(c) is c  # idempotent: a resolved config passes again


@pytest.mark.parametrize("name", ["smoke", "reproduce", "demo", "adapt_folder", "rhd_to_stb",
                                  "rhd_to_freihand", "rhd_to_h3d", "rhd_to_mvhand"])
def test_shipped_configs_resolve(name):
    c = importlib.import_module(f"configs.{name}").get_config()
    config_checks.resolve(c)
    assert c.loss.uv_scale == 64 / c.data.output_size


def test_inconsistent_explicit_sizes_are_refused_with_both_values_and_the_fix():
    c = smoke.get_config()  # 32 px in, stride 32, 3 upsamplings: 8 px out
    c.data.input_size = 64
    with pytest.raises(ValueError, match=r"data.output_size=8 but data.input_size=64.*gives 16; "
                                         r"set data.output_size=16 or 0"):
        config_checks.resolve(c)
    c = smoke.get_config()
    c.loss.uv_scale = 1.0
    with pytest.raises(ValueError, match=r"loss.uv_scale=1 but data.output_size=8 gives "
                                         r"64 / 8 = 8; set loss.uv_scale=8 or 0"):
        config_checks.resolve(c)
    c = default.get_config()
    c.data.input_size = 100  # not a multiple of the encoder's stride 32
    with pytest.raises(ValueError, match="multiple of the encoder's stride 32"):
        config_checks.resolve(c)


@pytest.mark.parametrize("name", ["rhd_to_stb", "rhd_to_freihand", "rhd_to_h3d",
                                  "rhd_to_mvhand"])
def test_paper_configs_ask_for_imagenet_weights_unless_scratch(name):
    c = importlib.import_module(f"configs.{name}").get_config()
    with pytest.raises(ValueError, match=r"ImageNet.*tools.convert_torchvision --input "
                                         r"resnet101.pth --depth 101.*init_from=scratch"):
        config_checks.check_init(c)
    c.model.init_from = "scratch"
    config_checks.check_init(c)
    assert config_checks.init_path(c) == ""
    c.model.init_from = "/data/resnet101.npz"
    config_checks.check_init(c)
    assert config_checks.init_path(c) == "/data/resnet101.npz"


def test_training_refuses_the_imagenet_placeholder_before_building_anything(monkeypatch,
                                                                            tmp_path):
    from hpe_jax.training import loop

    c = smoke.get_config()
    c.model.init_from = "imagenet"
    monkeypatch.setattr(loop, "build_model", lambda *a, **k: pytest.fail("built a model"))
    with pytest.raises(ValueError, match="ImageNet ResNet-18"):
        loop.train_and_evaluate(c, str(tmp_path))
