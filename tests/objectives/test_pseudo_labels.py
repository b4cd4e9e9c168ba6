import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.hand import camera, kinematics
from hpe_jax.hand.skeleton import REFERENCE_BONE, ROOT
from hpe_jax.objectives import pseudo_labels as pl
from hpe_jax.training.state import ema_update


def _hand_in_crop(seed=0):
    """A hand in front of a 32-px output crop: xyz (1, 21, 3) mm and K (1, 3, 3)."""
    rng = np.random.default_rng(seed)
    lim = kinematics.JOINT_LIMITS
    angles = np.stack([rng.uniform(lim[..., 0], lim[..., 1] * 0.5),
                       rng.uniform(lim[..., 2] * 0.5, lim[..., 3] * 0.5)], -1)
    xyz = np.asarray(kinematics.forward_kinematics(angles[None].astype(np.float32)))
    xyz = xyz - xyz[:, ROOT:ROOT + 1] + np.array([0.0, 0.0, 600.0])
    K = np.array([[[70.0, 0, 15.5], [0, 70.0, 15.5], [0, 0, 1]]])
    return xyz.astype(np.float32), K.astype(np.float32)


def test_exact_poses_give_the_pose_with_zero_confidence():
    xyz, K = _hand_in_crop()
    uv, z, _, scale = camera.encode_25d(xyz, K)
    template = xyz[0] / float(scale[0])  # the hand's own bone lengths: rho is the identity
    out = pl.make_pseudo_labels((uv, z), (uv, z), K, template, lambda_z=50.0, epsilon=1.5)
    np.testing.assert_allclose(out["uv"], uv, atol=2e-3)
    np.testing.assert_allclose(out["z"], z, atol=1e-4)
    assert float(out["confidence"][0]) < 1e-4 and float(out["keep"][0]) == 1.0


def test_disagreeing_passes_are_rejected_by_the_threshold():
    xyz, K = _hand_in_crop(1)
    uv, z, _, _ = camera.encode_25d(xyz, K)
    template = pl.normalized_template()
    shifted = (uv + 4.0, z)  # second pass 4 px away in u and v: C >= (2*2)^2 * 2 / 4 ... > 1.5
    out = pl.make_pseudo_labels((uv, z), shifted, K, template, lambda_z=50.0, epsilon=1.5)
    assert float(out["confidence"][0]) > 1.5 and float(out["keep"][0]) == 0.0
    loose = pl.make_pseudo_labels((uv, z), shifted, K, template, lambda_z=50.0, epsilon=1e9)
    assert float(loose["keep"][0]) == 1.0


def test_one_pass_labels_ignore_the_second_pass():
    xyz, K = _hand_in_crop(2)
    uv, z, _, _ = camera.encode_25d(xyz, K)
    template = pl.normalized_template()
    far = (uv + 4.0, z + 0.5)  # a second pass that two-pass labels would reject and move to
    one = pl.make_pseudo_labels((uv, z), far, K, template, lambda_z=50.0, epsilon=1.5, passes=1)
    alone = pl.make_pseudo_labels((uv, z), (uv, z), K, template, lambda_z=50.0, epsilon=1.5)
    for key in ("uv", "z", "confidence", "keep"):
        np.testing.assert_allclose(one[key], alone[key], rtol=1e-5, atol=1e-5)
    two = pl.make_pseudo_labels((uv, z), far, K, template, lambda_z=50.0, epsilon=1.5)
    assert float(two["confidence"][0]) > float(one["confidence"][0]) + 1.0
    with pytest.raises(ValueError, match="passes=3"):
        pl.make_pseudo_labels((uv, z), far, K, template, lambda_z=50.0, epsilon=1.5, passes=3)


def test_normalized_template_has_unit_reference_bone():
    t = pl.normalized_template()
    np.testing.assert_allclose(np.linalg.norm(t[REFERENCE_BONE[1]] - t[REFERENCE_BONE[0]]), 1.0,
                               rtol=1e-6)


def test_pseudo_label_moved_by_affine_lands_where_the_warped_view_projects():
    xyz, K = _hand_in_crop(2)
    uv, z, _, scale = camera.encode_25d(xyz, K)
    template = xyz[0] / float(scale[0])
    out = pl.make_pseudo_labels((uv, z), (uv, z), K, template, lambda_z=50.0, epsilon=1.5)
    # A strong view: rotated, zoomed and shifted crop of the weak one (output-pixel affine).
    A = camera.crop_affine(jnp.array([[0.0, 0.0, 31.0, 31.0]]), 32, rotation=0.6, scale=1.3,
                           shift=jnp.array([[2.0, -3.0]]))
    moved = camera.apply_affine(A, out["uv"])
    truth = camera.project(xyz, camera.affine_intrinsics(A, K))
    np.testing.assert_allclose(moved, truth, atol=5e-3)
    # z is root-relative in bone units: the 2D warp leaves it unchanged.
    _, z_strong, _, _ = camera.encode_25d(xyz, camera.affine_intrinsics(A, K))
    np.testing.assert_allclose(out["z"], z_strong, atol=1e-4)


def test_ema_update():
    teacher = {"w": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(4.0)}}
    student = {"w": jnp.array([3.0, 6.0]), "b": {"c": jnp.array(0.0)}}
    out = ema_update(teacher, student, 0.75)
    np.testing.assert_allclose(out["w"], [1.5, 3.0])
    np.testing.assert_allclose(out["b"]["c"], 3.0)
    same = ema_update(teacher, student, 1.0)
    np.testing.assert_allclose(same["w"], teacher["w"])


def test_degenerate_teacher_pose_gives_a_finite_loss_and_gradient():
    """Sample 1's teacher puts joints 9 and 10 on one pixel (the reference bone collapses), and
    sample 2's pose is non-finite outright: their labels are rejected and zeroed, and L_l over the
    batch (the kept sample only) and its gradient stay finite and equal the clean sample's."""
    import jax

    from hpe_jax.objectives.pose import multimodal_loss

    xyz, K = _hand_in_crop(2)
    uv, z, _, _ = camera.encode_25d(xyz, K)
    uv, z, K = (jnp.concatenate([a] * 3) for a in (uv, z, K))
    uv = uv.at[1, 10].set(uv[1, 9])
    z = z.at[1, 10].set(z[1, 9])
    uv = uv.at[2, 3, 0].set(jnp.nan)
    labels = pl.make_pseudo_labels((uv, z), (uv, z), K, pl.normalized_template(),
                                   lambda_z=50.0, epsilon=1e9)
    for key in ("uv", "z", "keep"):
        assert np.all(np.isfinite(np.asarray(labels[key]))), key
    np.testing.assert_array_equal(np.asarray(labels["finite"])[[0, 2]], [1.0, 0.0])
    assert float(labels["keep"][0]) == 1.0 and float(labels["keep"][2]) == 0.0
    # The gradient must not see a rejected label even where it is NaN (NaN * 0 = NaN).
    target = {"uv": labels["uv"].at[2].set(jnp.nan), "z": labels["z"], "weights": labels["keep"]}

    def loss(offset):
        pred = {"uv": uv.at[2].set(0.0) + offset, "z": z}
        return multimodal_loss(pred, target, lambda_z=50.0)["pose"]

    value, grad = jax.value_and_grad(loss)(jnp.float32(0.3))
    assert np.isfinite(float(value)) and np.isfinite(float(grad))
    expected = sum(float(multimodal_loss(
        {"uv": uv[i:i + 1] + 0.3, "z": z[i:i + 1]},
        {"uv": labels["uv"][i:i + 1], "z": labels["z"][i:i + 1]}, lambda_z=50.0)["pose"])
        for i in range(2) if labels["keep"][i] > 0)
    np.testing.assert_allclose(float(value), expected / 3, rtol=1e-5)


def test_confidence_and_pseudo_label():
    rng = np.random.default_rng(3)
    uv = rng.normal(size=(4, 5, 21, 2)).astype(np.float32)
    z = rng.normal(size=(4, 5, 21)).astype(np.float32)
    r_uv, r_z = pl.pseudo_label(uv, z)
    np.testing.assert_allclose(r_uv, (uv[0] + uv[1] + uv[2] + uv[3]) / 4, atol=1e-6)
    # Hand-computed spread: mean over the four poses of mean_j(|duv|^2 + 50 dz^2).
    expect = np.mean([np.mean(np.sum((uv[i] - r_uv) ** 2, -1) + 50 * (z[i] - r_z) ** 2, -1)
                      for i in range(4)], 0)
    np.testing.assert_allclose(pl.pseudo_label_confidence(uv, z), expect, rtol=1e-5)
    same = np.repeat(uv[:1], 4, 0), np.repeat(z[:1], 4, 0)
    np.testing.assert_allclose(pl.pseudo_label_confidence(*same), 0.0, atol=1e-6)


def test_the_lift_picks_its_root_with_the_templates_bone_lengths(monkeypatch):
    """rho's lift chooses between the two closed-form roots with the bones of the template rho
    corrects to (a source_mean template), not always the sampler's."""
    xyz, K = _hand_in_crop(3)
    uv, z, _, scale = camera.encode_25d(xyz, K)
    template = np.asarray(pl.normalized_template()).copy()
    template[1:5] = template[0] + 1.3 * (template[1:5] - template[0])  # a longer thumb
    seen = []
    lift = camera.lift_25d

    def spy(*args, **kwargs):
        seen.append(np.asarray(kwargs.get("bone_lengths")))
        return lift(*args, **kwargs)

    monkeypatch.setattr(camera, "lift_25d", spy)
    pl.corrected_25d(uv, z, K, jnp.asarray(template))
    np.testing.assert_allclose(seen[0], camera.bone_lengths_of(jnp.asarray(template)),
                               rtol=1e-6)
    assert not np.allclose(seen[0], camera.template_bone_lengths(), rtol=1e-3)
    # And lift_25d hands them to the root choice: the hand's own bones give back its root.
    own = camera.bone_lengths_of(jnp.asarray(xyz[0] / float(scale[0])))
    _, z_root = lift(uv, z, K, bone_lengths=own)
    np.testing.assert_allclose(float(z_root[0]) * float(scale[0]), 600.0, rtol=1e-3)
