"""Evaluator tests on 13 synthetic hands, batch 8 (does not divide 13), tiny model.

The 'network' reads its prediction from the image: the first 63 values of each (16, 16, 3) image
hold a noisy 2.5D pose (uv, z), and a tiny flax Dense layer adds a small image-dependent term so
that a real matmul with batch-dependent shapes runs on the devices.
"""

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import jax_utils
from scipy.spatial.transform import Rotation

from hpe_jax.evaluation.evaluator import EXAMPLE_KEYS, Evaluator
from hpe_jax.hand import camera, kinematics
from hpe_jax.hand.skeleton import ROOT

NUM, BATCH, OUT = 13, 8, 32


def make_examples(n=NUM, noise=1.0, seed=0):
    """n examples as the evaluator expects them, predictions embedded in the images."""
    rng = np.random.default_rng(seed)
    template = kinematics.template_pose()
    rot = Rotation.random(n, random_state=seed).as_matrix()
    xyz = np.einsum("nij,kj->nki", rot, template - template[ROOT])
    xyz = xyz + np.stack([rng.uniform(-30, 30, n), rng.uniform(-30, 30, n),
                          rng.uniform(450, 650, n)], -1)[:, None]
    K = np.array([[60.0, 0, (OUT - 1) / 2], [0, 60.0, (OUT - 1) / 2], [0, 0, 1]])
    K = np.broadcast_to(K, (n, 3, 3))
    uv, z, z_root, scale = (np.asarray(a, np.float64) for a in jax.jit(camera.encode_25d)(
        jnp.asarray(xyz, jnp.float32), jnp.asarray(K, jnp.float32)))
    images = np.zeros((n, 16 * 16 * 3), np.float32)
    images[:, :42] = (uv + noise * rng.normal(0, 1.0, uv.shape)).reshape(n, 42)
    images[:, 42:63] = z + noise * rng.normal(0, 0.2, z.shape)
    images[:, 63:] = rng.uniform(0, 1, (n, images.shape[1] - 63))
    vis = (rng.random((n, 21)) < 0.85).astype(np.float32)
    return [
        {"image": images[i].reshape(16, 16, 3), "uv": uv[i].astype(np.float32),
         "z": z[i].astype(np.float32), "visibility": vis[i],
         "keypoints_3d": xyz[i].astype(np.float32), "K": K[i].astype(np.float32),
         "z_root": np.float32(z_root[i]), "scale": np.float32(scale[i]), "index": np.int64(i)}
        for i in range(n)
    ]


class _Tiny(nn.Module):
    @nn.compact
    def __call__(self, images):
        flat = images.reshape(images.shape[0], -1)
        extra = 0.05 * jnp.tanh(nn.Dense(63)(flat[:, 63:]))
        return flat[:, :42].reshape(-1, 21, 2) + extra[:, :42].reshape(-1, 21, 2), \
            flat[:, 42:63] + 0.1 * extra[:, 42:]


@functools.cache
def make_model():
    model = _Tiny()
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
    return model.apply, variables


def run_case(devices=None, batch=BATCH, examples=None):
    apply_fn, variables = make_model()
    evaluator = Evaluator(apply_fn, examples if examples is not None else make_examples(),
                          global_batch_size=batch, output_size=OUT, devices=devices)
    return evaluator.run(variables)


def test_perfect_predictions_score_perfectly_under_both_protocols():
    examples = make_examples(noise=0.0)
    result = Evaluator(lambda v, im: (im.reshape(-1, 768)[:, :42].reshape(-1, 21, 2),
                                      im.reshape(-1, 768)[:, 42:63]),
                       examples, global_batch_size=BATCH, output_size=OUT).run({})
    m = result.metrics
    assert m["num_samples"] == NUM
    assert m["pck_2d"] == 1.0 and m["pck_2d_tllib"] == 1.0
    assert m["known_root/epe_mean_mm"] < 1e-3 and m["known_root/auc_20_50"] == 1.0
    assert m["known_root/auc_0_50"] > 0.99
    assert m["procrustes/epe_pooled_mean_mm"] < 1e-3
    # Root depth from Iqbal et al.'s closed form, in float32 on the device: sub-millimetre.
    assert m["recovered_root/epe_pooled_mean_mm"] < 1.0


def test_metrics_and_arrays_are_consistent_and_complete():
    result = run_case()
    a, m = result.arrays, result.metrics
    assert m["num_samples"] == NUM
    np.testing.assert_array_equal(a["index"], np.arange(NUM))
    assert a["pred_3d"].shape == (NUM, 21, 3) and a["pred_uv"].shape == (NUM, 21, 2)
    np.testing.assert_array_equal(a["output_size"], np.full(NUM, OUT))
    # Protocol 1 puts the predicted root exactly on the true root.
    np.testing.assert_allclose(a["pred_3d"][:, ROOT], a["gt_3d"][:, ROOT], atol=1e-3)
    # Noisy predictions: errors neither zero nor absurd; the default AUC variant is named.
    assert 1.0 < m["known_root/epe_mean_mm"] < 40.0
    assert 0.0 < m["pck_2d"] < 1.0
    assert m["known_root/auc_20_50"] == m["known_root/auc_20_50_bihand"]
    assert result.info["auc_20_50"].startswith("bihand")
    assert m["procrustes/epe_mean_mm"] < m["known_root/epe_mean_mm"]
    assert result.per_joint["known_root/epe_mm"].shape == (21,)
    t, curve = result.curves["known_root/pck_0_50"]
    assert t.shape == curve.shape == (100,) and np.all(np.diff(curve) >= 0)
    # The 2D metrics equal the metric functions applied to the returned arrays.
    from hpe_jax.evaluation import metrics as M
    assert m["pck_2d"] == M.pck_2d(a["pred_uv"], a["gt_uv"], a["visibility"], OUT).mean


def test_tf_data_and_list_inputs_give_identical_results():
    import tensorflow as tf

    examples = make_examples()
    ds = tf.data.Dataset.from_tensor_slices(
        {k: np.stack([ex[k] for ex in examples]) for k in EXAMPLE_KEYS})
    from_list, from_tf = run_case(examples=examples), run_case(examples=ds)
    assert from_list.metrics == from_tf.metrics
    for k, v in from_list.arrays.items():
        np.testing.assert_array_equal(v, from_tf.arrays[k], err_msg=k)


def test_shards_cover_every_sample_once_and_duplicates_are_dropped():
    apply_fn, variables = make_model()
    examples = make_examples()
    full = run_case(examples=examples).arrays
    parts = [Evaluator(apply_fn, examples, global_batch_size=BATCH, output_size=OUT,
                       shard=(p, 2)).predict(variables) for p in range(2)]
    joined = np.concatenate([p["index"] for p in parts])
    assert sorted(joined.tolist()) == list(range(NUM))
    order = np.argsort(joined)
    for k in ("pred_3d", "pred_uv", "gt_3d"):
        np.testing.assert_allclose(np.concatenate([p[k] for p in parts])[order], full[k],
                                   atol=1e-6)
    dup = run_case(examples=examples + examples[:3])
    assert dup.metrics["num_samples"] == NUM
    # Variables already replicated over the devices (as a pmapped train state holds them).
    again = Evaluator(apply_fn, examples, global_batch_size=BATCH, output_size=OUT).run(
        jax_utils.replicate(variables), replicated=True)
    np.testing.assert_array_equal(again.arrays["pred_3d"], full["pred_3d"])


def test_bad_inputs_give_clear_errors():
    apply_fn, variables = make_model()
    examples = make_examples(n=3)
    with pytest.raises(ValueError, match="multiple of"):
        Evaluator(apply_fn, examples, global_batch_size=4, output_size=OUT, shard=(0, 3))
    broken = [{k: v for k, v in ex.items() if k != "K"} for ex in examples]
    with pytest.raises(ValueError, match=r"lacks keys \['K'\]"):
        Evaluator(apply_fn, broken, global_batch_size=2, output_size=OUT).run(variables)
    with pytest.raises(ValueError, match="one-shot iterator"):
        Evaluator(apply_fn, iter(examples), global_batch_size=2, output_size=OUT)
    with pytest.raises(ValueError, match="no examples"):
        Evaluator(apply_fn, [], global_batch_size=2, output_size=OUT).run(variables)


_SUBPROCESS = """
import json, sys
import numpy as np
import jax
sys.path.insert(0, {here!r})
import test_evaluator as t
assert len(jax.local_devices()) == 4, jax.local_devices()
r = t.run_case()
np.savez({out!r}, **r.arrays)
print(json.dumps(r.metrics))
"""


def test_one_and_four_devices_give_identical_metrics(tmp_path):
    out = str(tmp_path / "four.npz")
    code = _SUBPROCESS.format(here=os.path.dirname(os.path.abspath(__file__)), out=out)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = json.loads(proc.stdout.strip().splitlines()[-1])
    one = run_case(devices=jax.local_devices()[:1])
    assert four["num_samples"] == NUM
    assert four == pytest.approx(one.metrics, rel=0, abs=0, nan_ok=True)
    with np.load(out) as arrays:
        for k, v in one.arrays.items():
            np.testing.assert_array_equal(arrays[k], v, err_msg=k)


def test_stb_palm_joint0_is_scored_against_the_converted_prediction():
    """STB's palm configuration labels joint 0 as the palm centre 0.5 (wrist + middle MCP). A
    perfect network predicts the wrist; converted, joint 0 scores zero error, unconverted it is
    scored wrist against palm (tens of mm)."""
    from hpe_jax.evaluation.evaluator import dataset_joint0

    examples = make_examples(noise=0.0)
    for ex in examples:
        # The network's targets (embedded in the image) keep the wrist; the labels get the palm.
        xyz = ex["keypoints_3d"].astype(np.float64)
        xyz[0] = 0.5 * (xyz[0] + xyz[ROOT])
        uv, z, _, _ = camera.encode_25d(jnp.asarray(xyz, jnp.float32), jnp.asarray(ex["K"]))
        ex.update(keypoints_3d=xyz.astype(np.float32), uv=np.asarray(uv), z=np.asarray(z))
    perfect = lambda v, im: (im.reshape(-1, 768)[:, :42].reshape(-1, 21, 2),  # noqa: E731
                             im.reshape(-1, 768)[:, 42:63])
    results = {j0: Evaluator(perfect, examples, global_batch_size=BATCH, output_size=OUT,
                             joint0=j0).run({}) for j0 in ("palm", "wrist")}
    palm, wrist = (results[j].per_joint for j in ("palm", "wrist"))
    assert palm["known_root/epe_mm"][0] < 1e-2 and wrist["known_root/epe_mm"][0] > 10.0
    assert palm["recovered_root/epe_mm"][0] < 1.0 and palm["recovered_root_lsq/epe_mm"][0] < 1.0
    np.testing.assert_allclose(results["palm"].arrays["pred_uv"][:, 0],
                               results["palm"].arrays["gt_uv"][:, 0], atol=1e-3)
    np.testing.assert_allclose(results["palm"].arrays["pred_z"][:, 0],
                               results["palm"].arrays["gt_z"][:, 0], atol=1e-4)
    assert results["palm"].metrics["pck_2d"] == 1.0
    # The other joints are untouched.
    np.testing.assert_allclose(palm["known_root/epe_mm"][1:], wrist["known_root/epe_mm"][1:])
    assert [dataset_joint0(n) for n in ("stb/palm", "stb", "stb/wrist", "rhd", "freihand")] == \
        ["palm", "palm", "wrist", "wrist", "wrist"]
    with pytest.raises(ValueError, match="unknown joint0"):
        Evaluator(perfect, examples, global_batch_size=BATCH, output_size=OUT, joint0="palm ")


def test_all_joint_metrics_are_reported_beside_the_visible_joint_headline():
    """Invisible joints predicted 100 mm off: the headline (visible joints) does not see them,
    the _all_joints variants do; with every joint visible both agree."""
    from hpe_jax.evaluation.evaluator import ALL_JOINTS, compute_metrics

    rng = np.random.default_rng(0)
    n = 40
    gt = rng.normal(0, 40, (n, 21, 3)) + np.array([0, 0, 500.0])
    vis = (rng.random((n, 21)) < 0.8).astype(np.float32)
    pred = gt + rng.normal(0, 2.0, gt.shape) + 100.0 * (1 - vis)[..., None] * np.array([1, 0, 0])
    gt_uv = rng.uniform(0, OUT, (n, 21, 2))
    pred_uv = gt_uv + 0.5 + 10.0 * (1 - vis)[..., None]
    arrays = {"visibility": vis, "output_size": np.full(n, OUT), "gt_3d": gt, "pred_3d": pred,
              "pred_3d_recovered_root": pred, "pred_3d_lsq_root": pred,
              "gt_uv": gt_uv, "pred_uv": pred_uv}
    m, per_joint, _, info = compute_metrics(arrays)
    assert m["known_root/epe_mean_mm"] < 5.0
    assert m[f"known_root/epe_mean_mm{ALL_JOINTS}"] > 15.0
    assert m[f"known_root/auc_20_50{ALL_JOINTS}"] < m["known_root/auc_20_50"]
    assert m[f"pck_2d{ALL_JOINTS}"] < m["pck_2d"] == 1.0
    assert per_joint[f"known_root/epe_mm{ALL_JOINTS}"].shape == (21,)
    for group in ("recovered_root", "recovered_root_lsq", "procrustes"):
        assert f"{group}/auc_0_50{ALL_JOINTS}" in m
    assert "visible joints only" in info["joints"] and "invisible" in info["joints"]
    # Every joint visible: the two readings are the same number.
    m, _, _, info = compute_metrics({**arrays, "visibility": np.ones_like(vis)})
    for key in ("known_root/epe_mean_mm", "known_root/auc_20_50", "pck_2d"):
        assert m[key + ALL_JOINTS] == m[key]
    assert "0.0% of this split's joints" in info["joints"]
