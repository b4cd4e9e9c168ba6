import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hpe_jax.hand import camera, kinematics
from hpe_jax.hand.skeleton import ROOT


def _random_hands(n, seed=0):
    """Hands in front of a camera: (n, 21, 3) mm and K (n, 3, 3)."""
    rng = np.random.default_rng(seed)
    lim = kinematics.JOINT_LIMITS
    angles = np.stack([rng.uniform(lim[..., 0], lim[..., 1], (n, 5, 3)),
                       rng.uniform(lim[..., 2], lim[..., 3], (n, 5, 3))], -1)
    pose = np.asarray(kinematics.forward_kinematics(angles))
    q, _ = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    pose = np.einsum("nij,nkj->nki", q, pose - pose[:, ROOT:ROOT + 1])
    pose = pose + np.stack([rng.uniform(-80, 80, n), rng.uniform(-80, 80, n),
                            rng.uniform(400, 900, n)], -1)[:, None]
    f = rng.uniform(400, 700, n)
    K = np.zeros((n, 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = f, f * 1.01, 160, 120, 1
    return pose.astype(np.float64), K


def test_project_backproject_round_trip():
    xyz, K = _random_hands(8)
    uv = camera.project(xyz, K)
    back = camera.backproject(uv, xyz[..., 2], K)
    np.testing.assert_allclose(back, xyz, atol=1e-3)  # float32: 1e-3 mm at ~1 m


def test_25d_round_trip_within_1e4_mm():
    jax.config.update("jax_enable_x64", True)
    try:
        xyz, K = _random_hands(16)
        uv, z_rel, z_root, scale = camera.encode_25d(jnp.asarray(xyz), jnp.asarray(K))
        rec = camera.decode_25d(uv, z_rel, K, z_root, scale)
        assert np.abs(np.asarray(rec) - xyz).max() < 1e-4
    finally:
        jax.config.update("jax_enable_x64", False)
    # float32, as the training code runs it: still far below a millimetre.
    uv, z_rel, z_root, scale = camera.encode_25d(jnp.float32(xyz), jnp.float32(K))
    rec = camera.decode_25d(uv, z_rel, jnp.float32(K), z_root, scale)
    assert np.abs(np.asarray(rec) - xyz).max() < 5e-3


def test_root_depth_recovery_within_01_mm():
    jax.config.update("jax_enable_x64", True)
    try:
        xyz, K = _random_hands(16, seed=1)
        uv, z_rel, z_root, scale = camera.encode_25d(jnp.asarray(xyz), jnp.asarray(K))
        z_hat = camera.recover_root_depth(uv, z_rel, K) * scale
        assert np.abs(np.asarray(z_hat) - xyz[:, ROOT, 2]).max() < 0.1
    finally:
        jax.config.update("jax_enable_x64", False)


def test_25d_lift_round_trip_recovers_pose_and_root():
    """Codec round trip without the root depth: encode 3D -> 2.5D (uv, z_rel, scale), lift back
    with the recovered root -> the input pose and root depth, in mm and in bone units."""
    jax.config.update("jax_enable_x64", True)
    try:
        xyz, K = _random_hands(16, seed=2)
        uv, z_rel, z_root, scale = camera.encode_25d(jnp.asarray(xyz), jnp.asarray(K))
        rec, rec_root = camera.lift_25d(uv, z_rel, K, scale)
        assert rec.shape == xyz.shape and rec_root.shape == z_root.shape
        np.testing.assert_allclose(np.asarray(rec_root), xyz[:, ROOT, 2], atol=0.1)
        np.testing.assert_allclose(np.asarray(rec), xyz, atol=0.1)
        # Default scale 1: the same pose in reference-bone units.
        unit, unit_root = camera.lift_25d(uv, z_rel, K)
        np.testing.assert_allclose(np.asarray(unit) * np.asarray(scale)[:, None, None], xyz,
                                   atol=0.1)
        np.testing.assert_allclose(np.asarray(unit_root) * np.asarray(scale), xyz[:, ROOT, 2],
                                   atol=0.1)
    finally:
        jax.config.update("jax_enable_x64", False)


def _bone_along_the_ray(tilt_deg, sign, seed=0):
    """A template hand (mm) whose reference bone points along the viewing ray of the root
    (sign +1: away from the camera, -1: towards it), tilted by `tilt_deg` towards the optical
    axis; and K."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    t = kinematics.template_pose().astype(np.float64)
    t = t - t[ROOT]
    root = np.array([30.0, -20.0, 500.0])
    ray = root / np.linalg.norm(root)
    perp = np.array([0.0, 0.0, 1.0]) - ray[2] * ray  # tilt towards the optical axis
    perp /= np.linalg.norm(perp)
    tilt = np.radians(tilt_deg)
    target = sign * (np.cos(tilt) * ray + np.sin(tilt) * perp)
    d = (t[10] - t[9]) / np.linalg.norm(t[10] - t[9])
    rot = Rotation.align_vectors([target], [d])[0] * Rotation.from_rotvec(d * rng.uniform(0, 6))
    K = np.array([[500.0, 0, 160], [0, 500.0, 120], [0, 0, 1]])
    return rot.apply(t) + root, K


@pytest.mark.parametrize("tilt_deg,sign", [(2.0, 1), (2.0, -1)])
def test_root_choice_when_the_reference_bone_points_along_the_viewing_ray(tilt_deg, sign):
    """Both roots of the quadratic give the reference bone unit length; here the larger one
    (Iqbal et al.'s rule) is far off, the smaller is right. The 'bones' rule (whole hand in
    front, other bones closest to the template's) and the all-bone least-squares fit find it."""
    jax.config.update("jax_enable_x64", True)
    try:
        xyz, K = _bone_along_the_ray(tilt_deg, sign)
        uv, z_rel, z_root, scale = camera.encode_25d(jnp.asarray(xyz), jnp.asarray(K))
        truth = xyz[ROOT, 2]
        larger = float(camera.recover_root_depth(uv, z_rel, K, choose="larger") * scale)
        bones = float(camera.recover_root_depth(uv, z_rel, K) * scale)
        lsq = float(camera.fit_root_depth_lsq(uv, z_rel, K) * scale)
        assert abs(larger - truth) > 100.0
        assert abs(bones - truth) < 0.1 and abs(lsq - truth) < 0.1
    finally:
        jax.config.update("jax_enable_x64", False)


def test_least_squares_root_fit_on_random_hands():
    jax.config.update("jax_enable_x64", True)
    try:
        xyz, K = _random_hands(16, seed=2)
        uv, z_rel, z_root, scale = camera.encode_25d(jnp.asarray(xyz), jnp.asarray(K))
        z_hat = camera.fit_root_depth_lsq(uv, z_rel, K) * scale
        assert np.abs(np.asarray(z_hat) - xyz[:, ROOT, 2]).max() < 0.1
    finally:
        jax.config.update("jax_enable_x64", False)


def test_root_depth_is_finite_when_the_reference_bone_collapses_to_one_pixel():
    """Joints 9 and 10 on one pixel with equal depth: the closed form is 0/0 without the floor."""
    xyz, K = _random_hands(2, seed=3)
    uv, z_rel, _, _ = camera.encode_25d(jnp.float32(xyz), jnp.float32(K))
    uv = uv.at[:, 10].set(uv[:, 9])
    z_rel = z_rel.at[:, 10].set(z_rel[:, 9])
    K = jnp.float32(K)
    for choose in ("bones", "larger"):
        z = camera.recover_root_depth(uv, z_rel, K, choose=choose)
        assert np.all(np.isfinite(np.asarray(z))), choose
    assert np.all(np.isfinite(np.asarray(camera.fit_root_depth_lsq(uv, z_rel, K))))
    with pytest.raises(ValueError, match="'bones' or 'larger'"):
        camera.recover_root_depth(uv, z_rel, K, choose="smaller")


def test_square_box_and_crop_affine_map_box_to_crop():
    uv = jnp.array([[10.0, 20.0], [50.0, 40.0]])
    box = camera.square_box(uv, margin=0.0)
    np.testing.assert_allclose(box, [10, 10, 50, 50])
    A = camera.crop_affine(box, 64)
    corners = camera.apply_affine(A, jnp.array([[10.0, 10.0], [50.0, 50.0], [30.0, 30.0]]))
    # Box borders land on the crop borders, the centre on the crop's centre.
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [63.5, 63.5], [31.5, 31.5]], atol=1e-5)
    np.testing.assert_allclose(camera.invert_affine(A) @ A, np.eye(3), atol=1e-5)


def test_crop_keeps_projection_consistent_with_intrinsics():
    xyz, K = _random_hands(4, seed=2)
    xyz, K = jnp.float32(xyz), jnp.float32(K)
    uv = camera.project(xyz, K)
    A = camera.crop_affine(camera.square_box(uv), 128, rotation=0.7, scale=1.2,
                           shift=jnp.ones((4, 2)))
    A = camera.resize_affine(0.25) @ A
    np.testing.assert_allclose(camera.project(xyz, camera.affine_intrinsics(A, K)),
                               camera.apply_affine(A, uv), atol=1e-3)


def test_warped_marked_pixel_lands_where_the_affine_says():
    image = np.zeros((100, 120, 1), np.float32)
    image[30, 70] = 1.0  # row 30, column 70: (u, v) = (70, 30)
    box = jnp.array([40.0, 10.0, 100.0, 70.0])
    A = camera.crop_affine(box, 48, rotation=np.pi / 2)
    out = np.asarray(camera.warp_image(jnp.asarray(image), A, 48))
    row, col = np.unravel_index(np.argmax(out[..., 0]), out.shape[:2])
    u, v = np.asarray(camera.apply_affine(A, jnp.array([[70.0, 30.0]])))[0]
    assert abs(col - u) <= 0.5 and abs(row - v) <= 0.5
    # A 90-degree counter-clockwise turn moves a point right of the centre to above it.
    c = camera.apply_affine(A, jnp.array([[80.0, 40.0]]))[0]
    assert c[1] < (48 - 1) / 2 - 1 and abs(c[0] - (48 - 1) / 2) < 1e-3


def test_resize_affine_keeps_pixel_centre_convention():
    A = camera.resize_affine(0.25)
    # The 4x4 block of input pixels 0..3 has its centre at 1.5 -> output pixel 0.
    np.testing.assert_allclose(camera.apply_affine(A, jnp.array([[1.5, 5.5]])), [[0.0, 1.0]])


def test_mirror_horizontally_keeps_projection():
    xyz, K = _random_hands(3, seed=3)
    xyz, K = jnp.float32(xyz), jnp.float32(K)
    uv = camera.project(xyz, K)
    uv_m, xyz_m, K_m = camera.mirror_horizontally(uv, xyz, K, width=320)
    np.testing.assert_allclose(uv_m[..., 0], 319 - uv[..., 0], atol=1e-3)
    np.testing.assert_allclose(camera.project(xyz_m, K_m), uv_m, atol=1e-3)


def test_functions_jit():
    xyz, K = _random_hands(2)
    f = jax.jit(lambda x, k: camera.recover_root_depth(*camera.encode_25d(x, k)[:2], k))
    assert f(jnp.float32(xyz), jnp.float32(K)).shape == (2,)
