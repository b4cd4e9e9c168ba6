"""The method's documented switches (config.loss.pseudo_on, contrast_reduction, loss.template,
finetune.adabn_batches, ...): both settings run and differ the way they should. The loss switches
are checked on the loss functions the steps call (with the step's LossConfig), not by compiling
a training step per setting: that is what the train steps' own tests do once
(tests/training/test_steps.py)."""

import jax
import numpy as np
import pytest
from flax import jax_utils
from helpers import tiny_config

from hpe_jax.objectives import losses
from hpe_jax.objectives.contrastive import nt_xent
from hpe_jax.objectives.losses import LossConfig
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.training import factory, optim, steps, switch


def _prediction(rng, n=2, size=8):
    """A stand-in for one way of the network's output: uv in output pixels, z, heatmaps (N, s, s,
    21) that sum to one, mask and depth map (N, s, s, 1)."""
    heat = rng.uniform(0.1, 1.0, (n, size, size, 21)).astype(np.float32)
    return {"uv": rng.uniform(0, size - 1, (n, 21, 2)).astype(np.float32),
            "z": rng.normal(size=(n, 21)).astype(np.float32),
            "heatmaps": heat / heat.sum(axis=(1, 2), keepdims=True),
            "mask": rng.uniform(size=(n, size, size, 1)).astype(np.float32),
            "depth_map": rng.uniform(size=(n, size, size, 1)).astype(np.float32)}


def _loss_config(**fields):
    config = tiny_config()
    config.loss.update(fields)
    return LossConfig.from_config(config.loss)


def test_pseudo_on_both_and_rgb_run_and_rgb_drops_the_fused_term():
    """L_l over p_R and p_F ('both', Eq. 10) or p_R alone ('rgb'): the fine-tuning step calls
    this same function with the step's LossConfig."""
    rng = np.random.default_rng(0)
    y_r, y_f, teacher = _prediction(rng), _prediction(rng), _prediction(rng)
    pseudo = {"uv": teacher["uv"], "z": teacher["z"], "weights": np.ones(2, np.float32)}
    both = float(losses.pseudo_label_loss(y_r, y_f, pseudo, _loss_config(pseudo_on="both"))[0])
    rgb = float(losses.pseudo_label_loss(y_r, y_f, pseudo, _loss_config(pseudo_on="rgb"))[0])
    fused_term = float(losses.m_loss(y_f, pseudo, _loss_config())["pose"])
    assert 0.0 < rgb < both
    np.testing.assert_allclose(both, rgb + fused_term, rtol=1e-5)
    with pytest.raises(ValueError, match="'both' or 'rgb'"):
        _loss_config(pseudo_on="fused")


def test_contrast_reduction_sum_is_the_mean_times_the_batch():
    rng = np.random.default_rng(0)
    z, zp = rng.normal(size=(2, 12, 16)).astype(np.float32)
    mean = float(nt_xent(z, zp, 0.5))
    np.testing.assert_allclose(float(nt_xent(z, zp, 0.5, reduction="sum")), 12 * mean, rtol=1e-5)
    np.testing.assert_allclose(float(nt_xent(z, zp, 0.5, variant="simclr", reduction="sum")),
                               12 * float(nt_xent(z, zp, 0.5, variant="simclr")), rtol=1e-5)
    with pytest.raises(ValueError, match="'mean' or 'sum'"):
        nt_xent(z, zp, 0.5, reduction="none")


def _adam_count(state) -> int:
    import optax

    nodes = jax.tree_util.tree_leaves(
        state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
    return int([n for n in nodes if isinstance(n, optax.ScaleByAdamState)][0].count)


def test_bone_ratio_template_has_exactly_the_measured_bone_lengths():
    from hpe_jax.hand.kinematics import template_pose
    from hpe_jax.hand.skeleton import BONES
    from hpe_jax.objectives.pseudo_labels import bone_ratios, template_from_bone_ratios

    rng = np.random.default_rng(0)
    scale = rng.uniform(0.8, 1.2, (5, 3))
    hand = template_pose(scale)
    poses = np.stack([hand * s for s in (1.0, 7.0, 70.0)])  # any size: ratios are per pose
    ratios = bone_ratios(poses)
    t = template_from_bone_ratios(ratios)
    got = np.array([np.linalg.norm(t[c] - t[p]) for p, c in BONES])
    np.testing.assert_allclose(got, ratios, rtol=1e-5)
    assert not np.allclose(ratios, bone_ratios(template_pose()[None]), rtol=1e-3)


@pytest.mark.parametrize("name", ["sampler", "source_mean"])
def test_loss_template_settings(name, tiny_data_dir, tmp_path, monkeypatch):
    from hpe_jax.data import pipeline
    from hpe_jax.hand.skeleton import BONES
    from hpe_jax.objectives.pseudo_labels import bone_ratios

    config = tiny_config(tiny_data_dir)
    config.loss.template = name
    t = switch.rho_template(config, str(tmp_path))
    assert t.shape == (21, 3) and np.all(np.isfinite(t))
    if name == "sampler":
        np.testing.assert_array_equal(t, normalized_template())
        return
    kp = pipeline.all_keypoints_3d(config.data.source, config.data.source_split,
                                   tiny_data_dir)
    lengths = np.array([np.linalg.norm(t[c] - t[p]) for p, c in BONES])
    np.testing.assert_allclose(lengths, bone_ratios(kp), rtol=1e-5)
    # Cached in the workdir: a resumed run reads it back without the dataset.
    monkeypatch.setattr(pipeline, "all_keypoints_3d", lambda *a: pytest.fail("re-measured"))
    np.testing.assert_array_equal(switch.rho_template(config, str(tmp_path)), t)
    config.loss.template = "mean"
    with pytest.raises(ValueError, match=r"'sampler', 'source_mean'"):
        switch.rho_template(config, str(tmp_path))


def test_adabn_batches_set_the_target_batch_statistics_at_the_switch(tiny_data_dir):
    """finetune.adabn_batches = n: the student's and the teacher's running statistics become
    the mean over the first n target batches (weak views) of the RGB pass's batch statistics
    (for the RGB encoder; the depth encoder's come from the fused pass)."""
    config = tiny_config(tiny_data_dir)
    config.finetune.adabn_batches = 2
    model = factory.build_model(config.model, "batch")
    state = factory.initial_state(
        config, model, optim.make_optimizer(optim.pretrain_schedule(1e-3, [], 0.1)))
    out = jax_utils.unreplicate(switch.adapt_batch_stats(config, model, steps.replicate(state)))
    plain = factory.build_model(config.model, None).clone(bn_momentum=0.0)
    batches = switch.iterators(config, "finetune", 0)
    seen = []
    for _ in range(2):
        image = next(batches)["target"]["image_weak"][0]  # the one device's rows
        _, upd = plain.apply(state.variables, rgb=image, train=True, mutable=["batch_stats"])
        seen.append(upd["batch_stats"]["rgb_encoder"])
    want = jax.tree_util.tree_map(lambda a, b: 0.5 * (a + b), *seen)
    for got in (out.batch_stats["rgb_encoder"], out.teacher_batch_stats["rgb_encoder"]):
        for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                        strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    before = jax.tree_util.tree_leaves(state.batch_stats["rgb_encoder"])
    after = jax.tree_util.tree_leaves(out.batch_stats["rgb_encoder"])
    assert not all(np.allclose(a, b) for a, b in zip(before, after, strict=True))
