"""The method's documented switches (config.loss.pseudo_on, contrast_reduction, use_visibility,
heatmap_pseudo_weight, finetune.reset_optimizer, ...): both settings run and differ the way they
should. The loss switches are checked on the loss functions the steps call (with the step's
LossConfig), not by compiling a training step per setting: that is what the train steps' own
tests do once (tests/training/test_steps.py)."""

import functools

import jax
import numpy as np
import pytest
from flax import jax_utils
from helpers import tiny_config

from hpe_jax.objectives import losses
from hpe_jax.objectives.contrastive import nt_xent
from hpe_jax.objectives.losses import LossConfig
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.training import factory, loop, optim, steps, switch


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


def test_heatmap_pseudo_weight_adds_the_kl_of_kept_pseudo_labels_to_l_l():
    rng = np.random.default_rng(1)
    y_r, y_f, teacher = _prediction(rng), _prediction(rng), _prediction(rng)
    pseudo = {"uv": teacher["uv"], "z": teacher["z"],
              "weights": np.array([1.0, 0.0], np.float32)}  # the second label is not kept
    out = {w: losses.pseudo_label_loss(y_r, y_f, pseudo,
                                       _loss_config(heatmap_pseudo_weight=w))[1]
           for w in (0.0, 5.0)}
    assert "L_l/heatmap" not in out[0.0]
    heat = float(out[5.0]["L_l/heatmap"])
    assert heat > 0
    np.testing.assert_allclose(float(out[5.0]["L_l"]), float(out[0.0]["L_l"]) + 5.0 * heat,
                               rtol=1e-5)
    # A label that is not kept does not count: changing the second prediction's maps leaves it.
    moved = {**y_r, "heatmaps": np.concatenate([y_r["heatmaps"][:1], y_r["heatmaps"][:1]])}
    again = losses.pseudo_label_loss(moved, y_f, pseudo, _loss_config(heatmap_pseudo_weight=5.0))
    np.testing.assert_allclose(float(again[1]["L_l/heatmap"]), heat, rtol=1e-6)


def test_supervise_positives_averages_l_s_over_both_views():
    """loss.supervise_positives: L_s is the mean of M over the view and its texture-augmented
    positive (same labels); off (the paper), the positives only feed L_c."""
    rng = np.random.default_rng(2)
    n = 2
    both = {way: _prediction(rng, n=2 * n) for way in ("rgb", "depth", "fused")}
    for way in both.values():
        way["projection"] = rng.normal(size=(2 * n, 8)).astype(np.float32)
    labels = _prediction(rng, n=n)
    batch = {"image": np.zeros((n, 8, 8, 3), np.float32), "uv": labels["uv"], "z": labels["z"],
             "mask": labels["mask"], "depth_target": labels["depth_map"],
             "visibility": np.ones((n, 21), np.float32)}
    half = {k: {w: {f: v[f][:n] if k == "view" else v[f][n:] for f in v} for w, v in both.items()}
            for k in ("view", "pos")}
    config = _loss_config(use_contrast=False)
    l_view = float(losses.supervised_loss(half["view"], batch, config)[0])
    l_pos = float(losses.supervised_loss(half["pos"], batch, config)[0])
    off = losses.pretrain_losses(both, batch, config, None)
    on = losses.pretrain_losses(both, batch, _loss_config(use_contrast=False,
                                                          supervise_positives=True), None)
    np.testing.assert_allclose(float(off[0]), l_view, rtol=1e-5)
    np.testing.assert_allclose(float(on[0]), 0.5 * (l_view + l_pos), rtol=1e-5)
    np.testing.assert_allclose(float(on[1]["L_s"]), float(on[0]), rtol=1e-6)


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


@pytest.mark.slow
def test_finetune_reset_optimizer_restarts_adam_at_the_switch_and_survives_resume(
        tiny_data_dir, tmp_path):
    """finetune.reset_optimizer=True: Adam's count (and moments) restart at the switch, so after
    4 + 4 steps Adam has counted only the 4 fine-tuning steps; a run stopped exactly at the
    switch and resumed from its checkpoint ends bitwise identical."""
    config = tiny_config(tiny_data_dir)
    config.finetune.reset_optimizer = True
    straight = loop.train(config, str(tmp_path / "straight"))
    assert int(straight.step) == 8 and _adam_count(straight) == 4
    for stop in (4, 0):
        config.stop_after_steps = stop
        resumed = loop.train(config, str(tmp_path / "resumed"))
    assert _adam_count(resumed) == 4
    for a, b in zip(jax.tree_util.tree_leaves((straight.params, straight.opt_state)),
                    jax.tree_util.tree_leaves((resumed.params, resumed.opt_state)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The default carries the moments over: Adam counts all 8 steps.
    config.stop_after_steps = 0
    config.finetune.reset_optimizer = False
    assert _adam_count(loop.train(config, str(tmp_path / "carried"))) == 8


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


def test_fused_projection_rgb_and_own_head():
    """model.fused_projection: "own" adds a third head for z_F; the rest of the network (and so
    y_F itself) is unchanged, only the fused projection differs."""
    outs, params = {}, {}
    rgb = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    depth = jax.random.normal(jax.random.PRNGKey(2), (2, 32, 32, 1))
    for mode in ("rgb", "own"):
        config = tiny_config()
        config.model.fused_projection = mode
        model = factory.build_model(config.model, None)
        variables = jax.jit(functools.partial(model.init, train=False))(
            {"params": jax.random.PRNGKey(0)}, rgb, depth)
        outs[mode] = model.apply(variables, rgb, depth, train=False)
        params[mode] = set(variables["params"])
    assert params["own"] - params["rgb"] == {"fused_projection_head"}
    np.testing.assert_allclose(outs["own"]["fused"]["uv"], outs["rgb"]["fused"]["uv"], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(outs["own"]["rgb"]["projection"], outs["rgb"]["rgb"]["projection"],
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(outs["own"]["fused"]["projection"], outs["rgb"]["fused"]["projection"])
    config.model.fused_projection = "depth"
    with pytest.raises(ValueError, match=r"'rgb', 'own'"):
        factory.build_model(config.model, None).init(jax.random.PRNGKey(0), rgb, depth,
                                                     train=False)


def test_use_visibility_weights_the_pose_term_by_visibility():
    from hpe_jax.objectives.pose import multimodal_loss

    # The loss itself: an invisible joint with a huge error counts only without the weights.
    rng = np.random.default_rng(0)
    uv, z = rng.normal(size=(2, 21, 2)), rng.normal(size=(2, 21))
    vis = np.ones((2, 21), np.float32)
    vis[:, 3] = 0.0
    far = uv.copy()
    far[:, 3] += 100.0
    plain = float(multimodal_loss({"uv": far, "z": z}, {"uv": uv, "z": z})["pose"])
    weighted = float(multimodal_loss({"uv": far, "z": z},
                                     {"uv": uv, "z": z, "joint_weights": vis})["pose"])
    assert plain > 100.0 and weighted == 0.0

    # L_s over the three ways (what the pre-training step minimises): the two settings differ
    # exactly when a joint is marked invisible.
    outputs = {way: _prediction(rng) for way in ("rgb", "depth", "fused")}
    labels = _prediction(rng)
    batch = {"uv": labels["uv"], "z": labels["z"], "mask": labels["mask"],
             "depth_target": labels["depth_map"]}

    def l_s(use_visibility, visibility):
        config = _loss_config(use_visibility=use_visibility)
        return float(losses.supervised_loss(outputs, {**batch, "visibility": visibility},
                                            config)[0])

    ones = np.ones((2, 21), np.float32)
    half = ones.copy()
    half[:, ::2] = 0.0
    off = l_s(False, half)
    assert np.isfinite(off)
    assert l_s(True, ones) == pytest.approx(off, rel=1e-5)
    assert l_s(True, half) != pytest.approx(off, rel=1e-3)


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
