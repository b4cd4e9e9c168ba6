"""The analytic FLOP count (hpe_jax/experiments/flops.py) against the traced network and torch's
counter."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from configs import default
from hpe_jax.experiments import flops
from hpe_jax.models.resnet import ResNet


def cpu_config():
    """The CPU benchmark config of docs/benchmarks.md (ResNet-18 x0.25, 64 px)."""
    c = default.get_config()
    m = c.model
    m.resnet_depth, m.width, m.deconv_features, m.proj_hidden, m.proj_dim = 18, 0.25, 64, 128, 64
    c.data.input_size, c.data.output_size = 64, 16
    c.pretrain.batch_size = 16
    c.finetune.batch_size = c.finetune.unlabelled_batch_size = 8
    c.eval_batch_size = 64
    return c


def jaxpr_conv_flops(fn, *args) -> float:
    """2 * MACs of every convolution in fn's jaxpr (sub-jaxprs included), padding taps counted."""
    total = 0.0

    def walk(jaxpr):
        nonlocal total
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "conv_general_dilated":
                out = eqn.outvars[0].aval.shape
                rhs = eqn.invars[1].aval.shape
                dn = eqn.params["dimension_numbers"]
                c_out = rhs[dn.rhs_spec[0]]
                total += 2.0 * np.prod(out) * np.prod(rhs) / c_out
            for v in eqn.params.values():
                for sub in (v if isinstance(v, (list, tuple)) else [v]):
                    if hasattr(sub, "jaxpr"):
                        walk(sub.jaxpr)
                    elif hasattr(sub, "eqns"):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return total


@pytest.mark.parametrize("depth,width,size,in_ch,stem_pool",
                         [(18, 0.25, 64, 3, True), (50, 0.125, 64, 1, True),
                          (18, 0.25, 64, 3, False)])
def test_encoder_count_equals_the_traced_convolutions(depth, width, size, in_ch, stem_pool):
    model = ResNet(depth=depth, width=width, stem_pool=stem_pool)
    x = jnp.zeros((2, size, size, in_ch))
    variables = jax.eval_shape(functools.partial(model.init, train=False),
                               jax.random.PRNGKey(0), x)
    traced = jaxpr_conv_flops(lambda v, x: model.apply(v, x, train=False), variables, x)
    c = flops.FlopCount()
    flops.encoder(c, depth=depth, width=width, in_channels=in_ch, size=size, n=2, train=False,
                  stem_pool=stem_pool)
    assert c.forward["conv"] == pytest.approx(traced, rel=1e-9)
    assert c.backward["conv"] == 0


def test_torchvision_forward_macs():
    """torchvision's published GMACs at 224 px: ResNet-18 1.81, ResNet-50 4.09, ResNet-101 7.80."""
    for depth, gmacs in ((18, 1.81), (50, 4.09), (101, 7.80)):
        c = flops.resnet_classifier_step(depth=depth, image_size=224, batch_size=1)
        assert sum(c.forward.values()) / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_training_convention_is_forward_plus_two_backward_except_the_first_conv():
    c = flops.FlopCount()
    flops.encoder(c, depth=18, width=1.0, in_channels=3, size=64, n=1, train=True)
    conv1 = 2.0 * 32 * 32 * 3 * 64 * 49
    assert c.backward["conv"] == pytest.approx(2 * c.forward["conv"] - conv1)


def test_transposed_conv_counted_over_input_positions_as_torch():
    c = flops.FlopCount()
    flops.decoder(c, in_channels=8, in_side=2, features=4, joints=21, n=3, train=False)
    per_tap = 2.0 * 3 * 16  # 2 * N * (4x4 taps)
    assert c.forward["deconv"] == pytest.approx(
        per_tap * (2 * 2 * 8 * 4 + 4 * 4 * 4 * 4 + 8 * 8 * 4 * 4))


def test_cpu_config_agrees_with_torch_flop_counter():
    """benchmarks/torch_reference.py (torch 2.13 FlopCounterMode) counted 9,454,223,360 FLOPs for
    this pre-training step (ResNet-18 x0.25, 64 px, batch 16) and 111.3 GFLOP for the ResNet-18
    classifier step at 128 px, batch 32; torch does not count Eq. 1 or the read-out."""
    c = flops.pretrain_step(cpu_config())
    assert c.total == pytest.approx(9_454_223_360, rel=0.01)
    torch_convention = c.total - sum(c.forward[k] + c.backward[k]
                                     for k in ("attention", "readout"))
    assert torch_convention == pytest.approx(9_454_223_360, rel=1e-3)
    r = flops.resnet_classifier_step(depth=18, image_size=128, batch_size=32)
    assert r.total == pytest.approx(111.3e9, rel=0.002)


def test_loss_switches_and_phases():
    config = tiny_config()
    full = flops.pretrain_step(config)
    config.loss.use_depth = config.loss.use_fused = config.loss.use_contrast = False
    rgb_only = flops.pretrain_step(config)
    # Three encoder passes on two views against one pass on one view.
    assert 5 < full.total / rgb_only.total < 7
    assert rgb_only.forward["contrast"] == rgb_only.forward["attention"] == 0
    # Evaluation is forward only; fine-tuning trains, and its teacher adds forward-only passes.
    ev = flops.eval_step(config, batch_size=config.pretrain.batch_size)
    assert sum(ev.backward.values()) == 0
    # Training costs 3x the forward, less the first convolution's input gradient.
    assert 2 * ev.total < rgb_only.total < 3 * ev.total
    ft = flops.finetune_step(tiny_config())
    assert sum(ft.backward.values()) > sum(ft.forward.values())


def test_fused_depth_predicted_adds_one_trained_depth_encoder_pass():
    """pretrain.fused_depth='predicted' runs E_D a second time (on the RGB way's depth map),
    trained (its weights get the fused way's gradient); nothing else changes in the convs."""
    config = tiny_config()
    measured = flops.pretrain_step(config)
    config.pretrain.fused_depth = "predicted"
    predicted = flops.pretrain_step(config)
    m = flops._model_config(config)
    one = flops.FlopCount()
    flops.encoder(one, in_channels=1, depth=m["depth"], width=m["width"], size=m["size"],
                  n=2 * config.pretrain.batch_size, train=True, stem_pool=m["stem_pool"])
    for part in ("forward", "backward"):
        extra = getattr(predicted, part)["conv"] - getattr(measured, part)["conv"]
        assert extra == pytest.approx(getattr(one, part)["conv"])
    assert one.forward["conv"] > 0


def test_stride16_encoder_with_two_deconvs_keeps_the_output_size():
    """The CPU configs' variant (no stem pool, two upsamplings): same S/4 heads, more work."""
    config = cpu_config()
    base = flops.eval_step(config)
    config.model.stem_pool, config.model.num_deconv = False, 2
    variant = flops.eval_step(config)
    assert variant.forward["readout"] == base.forward["readout"]  # heads at the same 16 x 16
    assert variant.forward["conv"] > 3 * base.forward["conv"]  # stages at twice the side
