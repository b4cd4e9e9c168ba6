"""hpe_jax.training.config_checks: derived sizes, their refusal when inconsistent, the ImageNet
request."""

import os

import pytest
from absl import flags
from ml_collections import config_flags

from configs import default, smoke
from hpe_jax.training import config_checks

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
RHD_TO = ["rhd_to:stb", "rhd_to:freihand", "rhd_to:h3d", "rhd_to:mvhand"]


def _parse_config_flag(value, overrides=()):
    """`--config=<value>` (then `overrides`, e.g. "--config.data.input_size=64") through a
    config file flag, as the tools define it (ml_collections passes the text after ':' to
    get_config)."""
    argv = ["test", f"--config={value}", *overrides]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def _load(name, overrides=()):
    """A shipped config by name, `rhd_to:stb` for --config=configs/rhd_to.py:stb."""
    path, _, arg = name.partition(":")
    return _parse_config_flag(os.path.join(CONFIGS_DIR, path + ".py") + (":" + arg if arg else ""),
                              overrides)


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


@pytest.mark.parametrize("name", ["smoke", "reproduce", "demo", "adapt_folder", *RHD_TO])
def test_shipped_configs_resolve(name):
    c = _load(name)
    config_checks.resolve(c)
    assert c.loss.uv_scale == 64 / c.data.output_size


# What the four configs/rhd_to_<target>.py files set before they became configs/rhd_to.py:<target>.
_RHD_TO_FIELDS = {
    "stb": {"data.target": "stb/palm", "data.target_split": "train"},
    "freihand": {"data.target": "freihand/tllib", "data.target_split": "train[:15000]"},
    "h3d": {"data.target": "h3d", "data.target_split": "train"},
    "mvhand": {"data.target": "hand_folder", "data.target_split": "train[:15000]"},
}


@pytest.mark.parametrize("target", list(_RHD_TO_FIELDS))
def test_rhd_to_sets_each_targets_fields_and_keeps_the_rest_default(target):
    c = _load(f"rhd_to:{target}")
    expect = {"model.init_from": "imagenet", "data.source": "rhd", "data.eval_split": "test",
              "loss.template": "source_mean", **_RHD_TO_FIELDS[target]}
    for key, value in expect.items():
        section, field = key.split(".")
        assert c[section][field] == value, key
    # Everything else (the derived sizes included, left to config_checks.resolve) is default's.
    base, ours = default.get_config().to_dict(), c.to_dict()
    for key in expect:
        section, field = key.split(".")
        base[section].pop(field), ours[section].pop(field)
    assert ours == base


@pytest.mark.parametrize("arg", ["", ":", ":nope"])
def test_rhd_to_without_a_known_target_names_the_valid_ones(arg):
    with pytest.raises(flags.IllegalFlagValueError,
                       match=r"configs/rhd_to.py.*one of stb, freihand, h3d, mvhand"):
        _parse_config_flag(os.path.join(CONFIGS_DIR, "rhd_to.py") + arg)


@pytest.mark.parametrize("name, overrides, sizes", [
    ("smoke", ["--config.data.input_size=64"], (16, 4.0)),
    ("smoke", ["--config.data.input_size=64", "--config.data.output_size=16"], (16, 4.0)),
    ("reproduce", ["--config.data.input_size=128"], (32, 2.0)),
    ("reproduce", ["--config.model.num_deconv=3"], (32, 2.0)),
    ("demo", ["--config.data.input_size=32"], (8, 8.0)),
    ("rhd_to:stb", ["--config.data.input_size=128"], (32, 2.0)),
])
def test_a_command_line_size_override_keeps_the_derived_sizes_consistent(name, overrides, sizes):
    """No shipped config copies output_size or uv_scale: both are derived at start-up from
    data.input_size and the model, so overriding either size on the command line keeps them
    consistent (an explicit output_size must agree, and uv_scale follows it)."""
    c = _load(name, overrides)
    config_checks.resolve(c)
    assert (c.data.output_size, c.loss.uv_scale) == sizes


def test_inconsistent_explicit_sizes_are_refused_with_both_values_and_the_fix():
    c = smoke.get_config()  # 32 px in, stride 32, 3 upsamplings: 8 px out
    c.data.output_size = 8
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


@pytest.mark.parametrize("name", RHD_TO)
def test_paper_configs_ask_for_imagenet_weights_unless_scratch(name):
    c = _load(name)
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
        loop.train(c, str(tmp_path))



@pytest.mark.parametrize("bad", [("abc",), ("a", "b"), (40, "50"), (True,)])
def test_decay_epochs_that_are_not_numbers_are_refused_naming_the_field(bad):
    config = default.get_config()
    config.pretrain.decay_epochs = bad
    with pytest.raises(ValueError, match=r"config\.pretrain\.decay_epochs must be numbers"):
        config_checks.check_schedule(config)
    config.pretrain.decay_epochs = (40, 50.5)
    config_checks.check_schedule(config)


def test_every_augmentation_field_is_in_the_default_config_with_the_dataclass_value():
    """Every AugmentConfig field can be set from a config, and default.py states the same
    values as the dataclass (used by library callers without a config), so the two never drift."""
    import dataclasses

    from hpe_jax.data.augment import AugmentConfig

    config = default.get_config().data.augment.to_dict()
    fields = {f.name: f.default for f in dataclasses.fields(AugmentConfig)}
    assert set(config) == set(fields)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()} == fields
