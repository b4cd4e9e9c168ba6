import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import jax_utils
from helpers import labelled_batch, shard, tiny_config, unlabelled_batch

from hpe_jax.objectives import losses
from hpe_jax.objectives.losses import LossConfig
from hpe_jax.objectives.pseudo_labels import normalized_template
from hpe_jax.training import factory as loop
from hpe_jax.training import optim, steps
from hpe_jax.training.state import TrainState

TRACE = "/jax/core/compile/jaxpr_trace_duration"


def _state(config, lr=1e-3):
    model = loop.build_model(config.model, "batch")
    tx = optim.make_optimizer(optim.pretrain_schedule(lr, [], 0.1))
    return model, loop.initial_state(config, model, tx)


def test_overfitting_one_batch_lowers_l_s_by_90_percent():
    config = tiny_config()
    config.loss.use_contrast = False  # L_s only: the supervised objective must be learnable
    model, state = _state(config, lr=3e-3)
    step = steps.bind_pretrain(model, config)
    batch = shard(labelled_batch(4), 1)
    rstate = steps.replicate(state)
    rng = jax.random.split(jax.random.PRNGKey(0), 1)
    losses, traces = [], []
    for i in range(150):
        listener = lambda event, _s, i=i, **_: traces.append(i) if event == TRACE else None  # noqa: E731
        jax.monitoring.register_event_duration_secs_listener(listener)
        try:
            rstate, metrics = step(rstate, batch, rng)
        finally:
            jax.monitoring.unregister_event_duration_listener(listener)
        losses.append(float(metrics["L_s"][0]))
    assert losses[-1] <= 0.1 * losses[0], (losses[0], losses[-1])
    # Traced (and compiled) once: the step's own output state, fed back, hits pmap's cache.
    assert traces and set(traces) == {0}, traces
    # Through pre-training the teacher is the student.
    for t, p in zip(jax.tree_util.tree_leaves(rstate.teacher_variables),
                    jax.tree_util.tree_leaves(rstate.variables), strict=True):
        np.testing.assert_array_equal(t, p)


def _finetune_once(bn_stats: str):
    """One fine-tuning step (EMA teacher, decay 0.5) of the tiny config from a fresh state on a
    2 + 2 random batch: (config, state, batch, new state, metrics)."""
    config = tiny_config()
    model, state = _state(config)
    config.finetune.update(teacher="ema", ema_decay=0.5, bn_stats=bn_stats)
    step = steps.bind_finetune(model, config, normalized_template())
    batch = {"source": shard(labelled_batch(2), 1), "target": shard(unlabelled_batch(2), 1)}
    rng = jax.random.split(jax.random.PRNGKey(0), 1)
    new, metrics = step(steps.replicate(state), batch, rng)
    return config, state, batch, jax_utils.unreplicate(new), metrics


def _rgb_stats_are_one_target_pass(config, state, batch, new) -> bool:
    """Whether the RGB encoder's new running statistics are exactly those of one train-mode RGB
    pass on the target's strong view from the old state."""
    image = jnp.asarray(batch["target"]["image_strong"][0])
    plain = loop.build_model(config.model, None)  # outside pmap: no device axis
    _, upd = plain.apply(state.variables, rgb=image, train=True, mutable=["batch_stats"])
    want = jax.tree_util.tree_leaves(upd["batch_stats"]["rgb_encoder"])
    got = jax.tree_util.tree_leaves(new.batch_stats["rgb_encoder"])
    # Not bitwise: the compiled step may reduce the batch statistics in another order than this
    # plain apply, and by how much depends on the CPU's kernels (a fixed atol of 1e-4 passed on
    # one Xeon and failed in CI). So each leaf's error is measured against that leaf's own scale:
    # round-off stays below 1e-3 of it (6.5e-4 at most, seen on an AVX-512 Xeon), while a source
    # pass mixed in (momentum 0.9) moves every leaf by more than a tenth of it (0.11 at least).
    return all(np.max(np.abs(a - b)) <= 1e-2 * np.max(np.abs(b))
               for a, b in zip(got, want, strict=True))


def test_finetune_step_runs_and_reports():
    """The default step (bn_stats 'shared'): every metric finite, the EMA teacher moved, and the
    source pass's BatchNorm update is part of the running statistics. (One compiled step serves
    these checks: compiling it is most of this test's time.)"""
    config, state, batch, new, metrics = _finetune_once("shared")
    for key in ("L_s", "L_l", "L_d", "loss", "pseudo/kept", "pseudo/confidence",
                "pseudo/student_teacher_px", "norm/grad", "norm/update"):
        assert np.isfinite(metrics[key][0]), key
    # The teacher moved half-way (decay 0.5) from its old weights towards the new student.
    leaf = lambda t: jax.tree_util.tree_leaves(t)[0]  # noqa: E731
    np.testing.assert_allclose(leaf(new.teacher_params),
                               0.5 * leaf(state.params) + 0.5 * leaf(new.params), atol=1e-6)
    assert not _rgb_stats_are_one_target_pass(config, state, batch, new)


_MULTI = textwrap.dedent("""
    import functools, jax, numpy as np, optax
    from flax import jax_utils
    from helpers import labelled_batch, shard, tiny_config
    from hpe_jax.objectives.losses import LossConfig
    from hpe_jax.training import factory as loop, steps
    assert jax.local_device_count() == 4
    config = tiny_config()
    model = loop.build_model(config.model, "batch")
    # Plain SGD: the parameter change is the gradient itself. Adam's first step is about
    # lr * sign(g), which turns float round-off in near-zero gradients into +-lr differences.
    state = loop.initial_state(config, model, optax.sgd(0.01))
    batch = labelled_batch(8)
    out = {}
    for n in (1, 4):
        # Not steps.bind_pretrain: this pmap runs on a subset of the devices.
        step = jax.pmap(functools.partial(steps.pretrain_step, model=model,
                                          loss=LossConfig.from_config(config.loss),
                                          fused_depth="measured"),
                        axis_name="batch", devices=jax.local_devices()[:n])
        rng = jax.random.split(jax.random.PRNGKey(0), n)
        rstate = steps.replicate(state, jax.local_devices()[:n])
        new, metrics = step(rstate, shard(batch, n), rng)
        out[n] = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), (new.params, new.batch_stats))
        out[n, "loss"] = float(metrics["loss"][0])
    np.testing.assert_allclose(out[1, "loss"], out[4, "loss"], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(out[1]), jax.tree_util.tree_leaves(out[4])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    print("OK")
""")


@pytest.mark.slow
def test_pretrain_step_on_4_devices_equals_1_device():
    here = os.path.dirname(__file__)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([os.path.dirname(here),
                                           os.path.dirname(os.path.dirname(here))]))
    out = subprocess.run([sys.executable, "-c", _MULTI], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-3000:]


def test_state_create_holds_a_teacher_equal_to_the_student():
    config = tiny_config()
    _, state = _state(config)
    assert isinstance(state, TrainState) and int(state.step) == 0
    for t, p in zip(jax.tree_util.tree_leaves(state.teacher_variables),
                    jax.tree_util.tree_leaves(state.variables), strict=True):
        np.testing.assert_array_equal(t, p)
        assert t is not p  # own buffers: donating the student leaves the teacher intact


def test_contrast_modes_pair_the_documented_streams():
    rng = np.random.default_rng(0)
    out = lambda: {k: {"projection": rng.normal(size=(4, 8)).astype(np.float32)}  # noqa: E731
                   for k in ("rgb", "depth", "fused")}
    view, pos = out(), out()
    config = tiny_config()
    expected = {
        "ours": {"rgb", "depth", "rgb_fused", "rgb_fused_pos"},
        "intra": {"rgb", "depth"},
        "intra_cross": {"rgb", "depth", "rgb_depth", "rgb_depth_pos"},
        "l1_align": {"l1_rgb_depth"},
    }
    for mode, keys in expected.items():
        config.loss.contrast_mode = mode
        terms = losses.contrastive_terms(view, pos, LossConfig.from_config(config.loss), None)
        assert set(terms) == keys, mode
        assert all(np.isfinite(float(v)) for v in terms.values())
    config.loss.contrast_mode = "bogus"
    with pytest.raises(ValueError, match="contrast_mode"):
        LossConfig.from_config(config.loss)


def test_config_beta_init_sets_the_decoders_initial_sharpness():
    config = tiny_config()
    config.model.beta_init = 7.5
    _, state = _state(config)
    assert float(state.params["decoder"]["beta"]) == 7.5


def test_finetune_bn_stats_target_keeps_only_the_target_pass():
    """'target': the RGB encoder's running statistics are exactly those of one train-mode RGB
    pass on the target's strong view (the source pass writes none); the 'shared' contrast is in
    test_finetune_step_runs_and_reports."""
    config, state, batch, new, metrics = _finetune_once("target")
    assert np.isfinite(metrics["loss"][0])
    assert _rgb_stats_are_one_target_pass(config, state, batch, new)


def test_finetune_bn_stats_refuses_unknown_mode():
    config = tiny_config()
    model, state = _state(config)
    with pytest.raises(ValueError, match="bn_stats"):
        steps.two_pass(model, state.variables, jnp.zeros((1, 64, 64, 3)), train=True,
                       bn_stats="domain")


@pytest.mark.slow
def test_pretrain_step_with_scanned_blocks_equals_unrolled():
    # model.scan_blocks changes how the encoders are compiled, not what the step computes: the
    # same variables (stacked for the scanned layout) give the same losses, gradients and
    # BatchNorm statistics. ResNet-34 (3, 4, 6, 3 blocks), so every stage really loops.
    from flax import traverse_util

    from hpe_jax.experiments.benchmarking import host_init
    from hpe_jax.models.resnet import scan_variables, unscan_variables

    config = tiny_config()
    config.model.resnet_depth = 34
    unrolled = loop.build_model(config.model, None)  # one device: no BatchNorm axis
    config.model.scan_blocks = True
    scanned = loop.build_model(config.model, None)
    # Host-made variables (benchmarking.host_init: eval_shape + numpy), as a jitted init of a
    # ResNet-34 pair compiles for minutes on a loaded 2-core CPU.
    unrolled_vars = host_init(unrolled, config.data.input_size)
    variables = {col: {k: scan_variables(v) if k.endswith("_encoder") else v
                       for k, v in tree.items()} for col, tree in unrolled_vars.items()}
    sgd = optax.sgd(1.0)  # new params = params - grads: the step's gradients, exactly
    batch = labelled_batch(4)
    loss = LossConfig.from_config(config.loss)
    outs = []
    for model, v in ((unrolled, unrolled_vars), (scanned, variables)):
        step = jax.jit(functools.partial(steps.pretrain_step, model=model, loss=loss,
                                         fused_depth="measured", axis_name=None))
        start = TrainState.create(v, sgd)
        new, metrics = step(start, batch, jax.random.PRNGKey(0))
        grads = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), start.params, new.params)
        unroll = {k: unscan_variables(t) if k.endswith("_encoder") else t for k, t in
                  grads.items()}
        stats = {k: unscan_variables(t) if k.endswith("_encoder") else t for k, t in
                 jax.device_get(new.batch_stats).items()}
        outs.append((metrics, traverse_util.flatten_dict(unroll),
                     traverse_util.flatten_dict(stats)))
    (m_a, g_a, s_a), (m_b, g_b, s_b) = outs
    assert set(m_a) == set(m_b) and "loss" in m_a
    for k in m_a:
        np.testing.assert_allclose(m_b[k], m_a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert g_a.keys() == g_b.keys() and s_a.keys() == s_b.keys()
    # Tolerance on the scale of the whole gradient: some leaves' true gradient is 0 (the heatmap
    # bias, under the per-channel spatial softmax), so their values are float32 rounding.
    scale = max(float(np.abs(g).max()) for g in g_a.values())
    for k in g_a:
        np.testing.assert_allclose(g_b[k], g_a[k], rtol=1e-3, atol=1e-5 * scale, err_msg=str(k))
    for k in s_a:
        np.testing.assert_allclose(s_b[k], s_a[k], rtol=1e-5, atol=1e-6, err_msg=str(k))


@pytest.mark.parametrize("fused_depth", ["measured", "predicted"])
def test_pretrain_fused_depth_source(fused_depth):
    """pretrain.fused_depth='predicted': the fused way's attention comes from the RGB way's own
    depth map, so the fused way's losses do not change when the measured depth does (the
    depth way's do); 'measured' (the paper): they do."""
    config = tiny_config()
    config.pretrain.fused_depth = fused_depth
    model, state = _state(config)
    step = steps.bind_pretrain(model, config)
    rng = jax.random.split(jax.random.PRNGKey(0), 1)
    batch = labelled_batch(2)
    other = dict(batch, depth=np.flip(batch["depth"], axis=1).copy(),
                 depth_pos=np.flip(batch["depth_pos"], axis=1).copy())
    _, m1 = step(steps.replicate(state), shard(batch, 1), rng)
    _, m2 = step(steps.replicate(state), shard(other, 1), rng)
    assert not np.isclose(float(m1["M_depth/pose"][0]), float(m2["M_depth/pose"][0]))
    same_fused = np.isclose(float(m1["M_fused/total"][0]), float(m2["M_fused/total"][0]),
                            rtol=1e-6)
    assert same_fused == (fused_depth == "predicted")


@pytest.mark.parametrize("fused_depth", ["measured", "predicted"])
def test_finetune_source_pass_feeds_the_fused_way_as_pretraining_did(fused_depth):
    """Fine-tuning's L_s follows pretrain.fused_depth: with 'predicted' the fused way's labelled
    loss ignores the measured depth (as in pre-training and in the teacher's second pass)."""
    config = tiny_config()
    config.pretrain.fused_depth = fused_depth
    config.finetune.update(teacher="ema", ema_decay=0.5)
    model, state = _state(config)
    step = steps.bind_finetune(model, config, normalized_template())
    rng = jax.random.split(jax.random.PRNGKey(0), 1)
    source, target = labelled_batch(2), unlabelled_batch(2)
    other = dict(source, depth=np.flip(source["depth"], axis=1).copy())
    m = [step(steps.replicate(state), {"source": shard(s, 1), "target": shard(target, 1)},
              rng)[1] for s in (source, other)]
    assert not np.isclose(float(m[0]["M_depth/pose"][0]), float(m[1]["M_depth/pose"][0]))
    same_fused = np.isclose(float(m[0]["M_fused/total"][0]), float(m[1]["M_fused/total"][0]),
                            rtol=1e-6)
    assert same_fused == (fused_depth == "predicted")


def test_pretrain_fused_depth_refuses_unknown_mode():
    config = tiny_config()
    config.pretrain.fused_depth = "guessed"
    model, state = _state(config)
    with pytest.raises(ValueError, match="fused_depth"):
        steps.bind_pretrain(model, config)(steps.replicate(state), shard(labelled_batch(2), 1),
                                           jax.random.split(jax.random.PRNGKey(0), 1))
