import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.hand import correction, kinematics, skeleton


def _sample_angles(rng, n):
    lim = kinematics.JOINT_LIMITS
    flex = rng.uniform(lim[..., 0], lim[..., 1], (n, 5, 3))
    abd = rng.uniform(lim[..., 2], lim[..., 3], (n, 5, 3))
    return np.stack([flex, abd], -1).astype(np.float32)


def _sample_hands(n, seed=0):
    """Ground-truth hands with varied proportions, rotated: (n, 21, 3) mm, in joint limits."""
    rng = np.random.default_rng(seed)
    phal = kinematics.PHALANGES * rng.uniform(0.85, 1.15, (n, 5, 3))
    bases = kinematics.BASES * rng.uniform(0.9, 1.1, (n, 1, 1))
    pose = np.asarray(kinematics.forward_kinematics(_sample_angles(rng, n), bases, phal))
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q = q * np.linalg.det(q)[:, None, None]  # proper rotations: keep it a right hand
    return np.einsum("nij,nkj->nki", q, pose).astype(np.float32)


def test_forward_kinematics_and_joint_angles_are_inverse():
    angles = _sample_angles(np.random.default_rng(0), 32)
    pose = kinematics.forward_kinematics(angles)
    np.testing.assert_allclose(kinematics.joint_angles(pose), angles, atol=1e-4)


def test_identity_on_a_pose_with_template_bone_lengths():
    pose = _sample_hands(16)
    out = correction.correct_pose(pose, pose)
    np.testing.assert_allclose(out, pose, atol=1e-4 * 200)  # 1e-4 relative to a 200 mm hand
    assert np.abs(np.asarray(out) - pose).max() < 1e-3


def test_result_has_template_bone_lengths_and_feasible_angles():
    rng = np.random.default_rng(1)
    pose = _sample_hands(16, seed=1)
    noisy = pose + rng.normal(0, 15.0, pose.shape).astype(np.float32)
    template = kinematics.template_pose()
    out = np.asarray(correction.correct_pose(noisy, template))
    lengths = skeleton.bone_lengths(out)
    np.testing.assert_allclose(lengths, np.broadcast_to(skeleton.bone_lengths(template),
                                                        lengths.shape), rtol=1e-5)
    angles = np.asarray(kinematics.joint_angles(out))
    lim = kinematics.JOINT_LIMITS
    tol = 1e-4
    flex, abd = angles[..., 0], angles[..., 1]
    assert np.all(flex >= lim[..., 0] - tol) and np.all(flex <= lim[..., 1] + tol)
    assert np.all(abd >= lim[..., 2] - tol) and np.all(abd <= lim[..., 3] + tol)


def _naive_rebuild(pose, template):
    """Chains the predicted bone directions with template lengths: errors accumulate."""
    out = np.array(pose)
    lengths = skeleton.bone_lengths(template)
    for b, (p, c) in enumerate(skeleton.BONES):
        d = pose[:, c] - pose[:, p]
        out[:, c] = out[:, p] + lengths[:, b, None] * d / np.linalg.norm(d, axis=-1, keepdims=True)
    return out


def test_noise_does_not_accumulate_along_fingers():
    rng = np.random.default_rng(2)
    gt = _sample_hands(256, seed=2)
    noisy = gt + rng.normal(0, 5.0, gt.shape).astype(np.float32)
    corrected = np.asarray(correction.correct_pose(noisy, gt))
    err = lambda p: np.linalg.norm(p - gt, axis=-1).mean()  # noqa: E731
    e_noisy, e_corr, e_naive = err(noisy), err(corrected), err(_naive_rebuild(noisy, gt))
    assert e_corr <= 1.05 * e_noisy, (e_corr, e_noisy)
    assert e_corr < e_naive, (e_corr, e_naive)


def test_correction_jits_and_batches():
    pose = _sample_hands(4)
    f = jax.jit(correction.correct_pose)
    out = f(jnp.asarray(pose).reshape(2, 2, 21, 3), jnp.asarray(kinematics.template_pose()))
    assert out.shape == (2, 2, 21, 3) and np.all(np.isfinite(out))
