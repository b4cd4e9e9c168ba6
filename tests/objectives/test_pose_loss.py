import numpy as np

from hpe_jax.objectives.pose import multimodal_loss, pose_distance_25d


def test_pose_distance_hand_computed():
    uv1 = np.zeros((1, 2, 2), np.float32)
    uv2 = np.array([[[3.0, 4.0], [0.0, 1.0]]], np.float32)  # squared: 25 and 1
    z1 = np.zeros((1, 2), np.float32)
    z2 = np.array([[0.1, 0.0]], np.float32)                   # 50 * 0.01 = 0.5
    np.testing.assert_allclose(pose_distance_25d(uv1, z1, uv2, z2), [(25 + 0.5 + 1) / 2],
                               rtol=1e-6)
    # uv in 64-px units at a 16-px output: uv differences x4, squares x16.
    np.testing.assert_allclose(pose_distance_25d(uv1, z1, uv2, z2, uv_scale=4.0),
                               [(16 * 25 + 0.5 + 16 * 1) / 2], rtol=1e-6)
    np.testing.assert_allclose(
        pose_distance_25d(uv1, z1, uv2, z2, weights=np.array([[1.0, 0.0]])), [25.5], rtol=1e-6)


def test_multimodal_loss_terms_and_weights():
    n, s = 2, 4
    pred = {"uv": np.zeros((n, 21, 2), np.float32), "z": np.zeros((n, 21), np.float32),
            "mask": np.full((n, s, s, 1), 0.25, np.float32),
            "depth_map": np.zeros((n, s, s, 1), np.float32)}
    target = {"uv": np.ones((n, 21, 2), np.float32), "z": np.zeros((n, 21), np.float32),
              "mask": np.ones((n, s, s, 1), np.float32),
              "depth_target": np.full((n, s, s, 1), 0.5, np.float32)}
    out = multimodal_loss(pred, target, lambda_m=100.0, lambda_dm=50.0)
    np.testing.assert_allclose([out["pose"], out["mask"], out["depth_map"]], [2.0, 0.75, 0.5])
    np.testing.assert_allclose(out["total"], 2.0 + 75.0 + 25.0)
    # Per-example weights (the pseudo-label keep mask): rejected examples count as zero.
    weighted = multimodal_loss(pred, dict(target, weights=np.array([1.0, 0.0])))
    np.testing.assert_allclose(weighted["pose"], 1.0)


def test_huber_form_is_squared_near_and_linear_far_with_finite_gradients():
    import jax
    import jax.numpy as jnp

    uv1 = np.zeros((1, 3, 2), np.float32)
    uv2 = np.array([[[3.0, 4.0], [0.0, 1.0], [0.0, 0.0]]], np.float32)  # distances 5, 1, 0
    z = np.zeros((1, 3), np.float32)
    # delta 2: joint 0 (d = 5) costs 2*2*5 - 4 = 16 instead of 25; joint 1 (d = 1) stays 1.
    np.testing.assert_allclose(pose_distance_25d(uv1, z, uv2, z, huber_delta=2.0),
                               [(16.0 + 1.0 + 0.0) / 3], rtol=1e-6)
    grad = jax.grad(lambda u: pose_distance_25d(u, jnp.asarray(z), jnp.asarray(uv2),
                                                jnp.asarray(z), huber_delta=2.0)[0])(
        jnp.asarray(uv1))
    assert np.all(np.isfinite(grad))
    # The far joint pulls with 2 delta (unit direction), not with 2 d as the squared form does.
    np.testing.assert_allclose(np.linalg.norm(grad[0, 0]), 2 * 2.0 / 3, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(grad[0, 2]), 0.0)
