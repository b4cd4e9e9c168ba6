import pytest
from helpers import tiny_config

from hpe_jax.training import phases


def test_source_occluders_sleeves_and_backgrounds_only_in_the_phases_the_config_names():
    config = tiny_config()
    config.data.augment.source_occlusion_probability = 0.5
    config.data.augment.sleeve_probability = 0.4
    config.data.augment.strong_occlusion_probability = 0.3
    config.data.augment.source_background_probability = 0.6
    pre = phases.phase_augment(config, "pretrain")
    fine = phases.phase_augment(config, "finetune")
    assert (pre.source_occlusion_probability, pre.sleeve_probability,
            pre.source_background_probability) == (0.0, 0.0, 0.0)
    assert (fine.source_occlusion_probability, fine.sleeve_probability,
            fine.source_background_probability) == (0.5, 0.4, 0.6)
    assert pre.strong_occlusion_probability == fine.strong_occlusion_probability == 0.3
    config.data.source_occlusion_phases = ("pretrain", "finetune")
    assert phases.phase_augment(config, "pretrain").sleeve_probability == 0.4
    config.data.source_occlusion_phases = ("pretraining",)
    with pytest.raises(ValueError, match="source_occlusion_phases=.*only 'pretrain' and"):
        phases.phase_augment(config, "finetune")


@pytest.mark.parametrize("named, pretrain_delta, finetune_delta", [
    (("pretrain", "finetune"), 4.0, 4.0),
    (("pretrain",), 4.0, 0.0),
    (("finetune",), 0.0, 4.0),
    ((), 0.0, 0.0),
])
def test_huber_l_only_in_the_phases_the_config_names(named, pretrain_delta, finetune_delta):
    config = tiny_config()
    config.loss.label_huber_delta = 4.0
    config.loss.label_huber_phases = named
    assert phases.phase_loss(config, "pretrain").label_huber_delta == pretrain_delta
    assert phases.phase_loss(config, "finetune").label_huber_delta == finetune_delta
    # Nothing else of the loss differs between the phases.
    assert phases.phase_loss(config, "finetune").lambda_l == config.loss.lambda_l


def test_bad_phase_name_names_the_field():
    config = tiny_config()
    config.loss.label_huber_phases = ("pre-training",)
    with pytest.raises(ValueError, match=r"label_huber_phases=\('pre-training',\) may name only"):
        phases.phase_loss(config, "finetune")
