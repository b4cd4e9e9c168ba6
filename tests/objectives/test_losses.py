"""LossConfig (the typed view of config.loss the steps read) and the binding cache it enables."""

import dataclasses

import pytest
from helpers import tiny_config

from hpe_jax.objectives.losses import LossConfig
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.training import factory, steps


def test_from_config_reads_every_field_and_refuses_a_missing_one():
    config = tiny_config()
    loss = LossConfig.from_config(config.loss)
    for field in dataclasses.fields(LossConfig):
        assert getattr(loss, field.name) == config.loss[field.name], field.name
    assert isinstance(loss.lambda_z, float) and hash(loss) == hash(
        LossConfig.from_config(tiny_config().loss))
    del config.loss["lambda_c"]
    with pytest.raises(ValueError, match="lambda_c"):
        LossConfig.from_config(config.loss)


def test_from_config_refuses_unknown_modes():
    config = tiny_config()
    config.loss.pseudo_on = "fused"
    with pytest.raises(ValueError, match="pseudo_on"):
        LossConfig.from_config(config.loss)


def test_ways_follow_the_switches():
    config = tiny_config()
    assert LossConfig.from_config(config.loss).ways == ("rgb", "depth", "fused")
    config.loss.update(use_depth=False, use_fused=False)
    loss = LossConfig.from_config(config.loss)
    assert loss.ways == ("rgb",) and not loss.needs_depth


def test_a_second_binding_of_the_same_configuration_is_the_same_compiled_step():
    """An ablation's rows, a resume or a repeated run in one process compile each step once."""
    config = tiny_config()
    model = factory.build_model(config.model, "batch")
    again = factory.build_model(tiny_config().model, "batch")
    assert steps.bind_pretrain(model, config) is steps.bind_pretrain(again, tiny_config())
    template = normalized_template()
    first = steps.bind_finetune(model, config, template)
    assert steps.bind_finetune(again, tiny_config(), template.copy()) is first
    assert steps.bind_finetune(model, config, template, epsilon=0.5) is not first
    config.finetune.bn_stats = "target"
    assert steps.bind_finetune(model, config, template) is not first
    config.loss.lambda_c = 0.3
    assert steps.bind_pretrain(model, config) is not steps.bind_pretrain(again, tiny_config())


def test_label_huber_phases_keep_the_squared_l_in_fine_tuning():
    config = tiny_config()
    model = factory.build_model(config.model, "batch")
    template = normalized_template()
    squared = steps.bind_finetune(model, config, template)
    config.loss.label_huber_delta = 4.0
    huber = steps.bind_finetune(model, config, template)
    assert huber is not squared
    assert steps.bind_pretrain(model, config) is not steps.bind_pretrain(model, tiny_config())
    # Huber in pre-training only: fine-tuning binds the very step of the squared l.
    config.loss.label_huber_phases = ("pretrain",)
    assert steps.bind_finetune(model, config, template) is squared
    # Huber in fine-tuning only: pre-training binds the squared l's step.
    config.loss.label_huber_phases = ("finetune",)
    assert steps.bind_pretrain(model, config) is steps.bind_pretrain(model, tiny_config())
    assert steps.bind_finetune(model, config, template) is huber


def _pose(uv: float, n_joints: int = 21) -> dict:
    """One example whose joint 0 sits `uv` pixels right of the others (all at 0), z 0, with
    flat mask and depth maps."""
    import jax.numpy as jnp

    uvs = jnp.zeros((1, n_joints, 2)).at[0, 0, 0].set(uv)
    maps = jnp.zeros((1, 4, 4, 1))
    return {"uv": uvs, "z": jnp.zeros((1, n_joints)), "mask": maps, "depth_map": maps,
            "heatmaps": jnp.zeros((1, 4, 4, n_joints))}


def test_target_huber_bounds_l_l_and_l_d_and_leaves_the_labels_alone():
    """loss.target_huber_delta: a pseudo-label (or fused prediction) 10 px off pulls with the
    Huber form's value 2 delta d - delta^2, not d^2; labelled L_s keeps label_huber_delta."""
    import numpy as np

    from hpe_jax.objectives.losses import distillation_loss, pseudo_label_loss, supervised_loss

    base = dataclasses.replace(LossConfig.from_config(tiny_config().loss), uv_scale=1.0,
                               lambda_m=0.0, lambda_dm=0.0, pseudo_on="rgb",
                               heatmap_weight=0.0,
                               use_depth=False, use_fused=False, label_huber_delta=0.0)
    y, off = _pose(0.0), _pose(10.0)
    pseudo = {"uv": off["uv"], "z": off["z"], "weights": np.ones(1)}
    labels = {"uv": off["uv"], "z": off["z"]}
    squared, huber = 100.0 / 21, (2 * 4.0 * 10.0 - 16.0) / 21
    for delta, expected in ((0.0, squared), (4.0, huber)):
        loss = dataclasses.replace(base, target_huber_delta=delta)
        np.testing.assert_allclose(pseudo_label_loss(y, y, pseudo, loss)[0], expected, rtol=1e-5)
        np.testing.assert_allclose(distillation_loss(y, off, loss), expected, rtol=1e-5)
        # The labels' l follows label_huber_delta only.
        np.testing.assert_allclose(supervised_loss({"rgb": y}, labels, loss)[0], squared,
                                   rtol=1e-5)
