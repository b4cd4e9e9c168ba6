"""Renderer and sampler: label consistency, determinism and the designed domain gap."""

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from hpe_jax.data import hand_sampler, render, styles
from hpe_jax.hand import kinematics
from hpe_jax.hand.skeleton import NUM_JOINTS

SIZE = 96


@pytest.fixture(scope="module")
def samples():
    return {name: [render.render_example(st, 0, i, SIZE) for i in range(16)]
            for name, st in styles.STYLES.items()}


def test_outputs_have_documented_shapes_and_dtypes(samples):
    ex = samples["render"][0]
    assert ex["image"].shape == (SIZE, SIZE, 3) and ex["image"].dtype == np.uint8
    assert ex["depth"].shape == (SIZE, SIZE) and ex["depth"].dtype == np.float32
    assert ex["mask"].shape == (SIZE, SIZE, 1) and ex["mask"].dtype == np.uint8
    assert ex["keypoints_2d"].shape == (NUM_JOINTS, 2)
    assert ex["keypoints_3d"].shape == (NUM_JOINTS, 3)
    assert ex["visibility"].dtype == bool
    # Background depth is 0 (no surface) and the hand lies in front of the camera.
    assert np.all(ex["depth"][ex["mask"][..., 0] == 0][:5] >= 0)
    assert np.all(ex["keypoints_3d"][:, 2] > 100)


def test_visible_joints_project_inside_the_mask(samples):
    for name in styles.STYLES:
        n_visible = 0
        for ex in samples[name]:
            pix = np.rint(ex["keypoints_2d"][ex["visibility"]]).astype(int)
            assert np.all(ex["mask"][pix[:, 1], pix[:, 0], 0] == 1)
            n_visible += len(pix)
        # Random views hide about half of the joints (back of the hand, the forearm, curled
        # fingers, occluders); far fewer would mean a broken visibility test.
        assert n_visible > 0.4 * NUM_JOINTS * len(samples[name])


def test_depth_at_visible_joints_matches_joint_depth_within_finger_radius(samples):
    for ex in samples["render"]:
        vis = ex["visibility"]
        pix = np.rint(ex["keypoints_2d"][vis]).astype(int)
        d = ex["depth"][pix[:, 1], pix[:, 0]]
        z = ex["keypoints_3d"][vis, 2]
        # Body radius bound: the fattest part (thenar, 1.05 x palm radius) of the largest hand
        # (x1.15), 8 mm off its axis at most (the wrist), + 2 mm tolerance.
        radius = 1.15 * (1.05 * hand_sampler.PALM_RADIUS + 8.0) + 2.0
        assert np.all(np.abs(d - z) <= radius), np.abs(d - z).max()
        # The surface is in front of (or at) the joint, never behind it by more than a pixel.
        assert np.all(d <= z + 2.0)


def test_keypoints_2d_are_the_projection_of_keypoints_3d(samples):
    ex = samples["capture"][3]
    p = ex["keypoints_3d"] @ ex["K"].T
    np.testing.assert_allclose(p[:, :2] / p[:, 2:], ex["keypoints_2d"], atol=1e-3)


def test_same_seed_gives_identical_bytes_and_other_seeds_differ():
    a = render.render_example(styles.CAPTURE, 7, 3, 64)
    b = render.render_example(styles.CAPTURE, 7, 3, 64)
    c = render.render_example(styles.CAPTURE, 7, 4, 64)
    assert a.keys() == b.keys()
    for k in a:
        assert np.asarray(a[k]).tobytes() == np.asarray(b[k]).tobytes(), k
    assert a["image"].tobytes() != c["image"].tobytes()


def test_styles_differ_in_background_texture_and_skin_colour(samples):
    def stats(exs):
        energy, colour = [], []
        for ex in exs:
            grey = ex["image"].astype(np.float32).mean(-1) / 255.0
            bg = ndimage.binary_erosion(ex["depth"] == 0, iterations=2)
            energy.append(np.abs(ndimage.laplace(grey))[bg].mean())
            colour.append(ex["image"][ex["mask"][..., 0] > 0].mean(0) / 255.0)
        return np.mean(energy), np.mean(colour, 0)

    e_src, c_src = stats(samples["render"])
    _, c_tgt = stats(samples["capture"])
    assert np.linalg.norm(c_tgt - c_src) > 0.05  # shifted skin tones, cast and highlights
    # Cluttered, textured target scenes: measured before the camera's low resolution and motion
    # blur smooth them (test_low_resolution_and_motion_blur_remove_fine_detail).
    sharp = dataclasses.replace(styles.CAPTURE, motion_blur=(0.0, 0.0), resolution=(1.0, 1.0))
    scenes = samples["capture"] if sharp == styles.CAPTURE else [
        render.render_example(sharp, 0, i, SIZE) for i in range(16)]  # no re-render when equal
    e_tgt, _ = stats(scenes)
    assert e_tgt > 2.5 * e_src


@pytest.mark.parametrize("prior", hand_sampler.PRIORS)
def test_sampled_angles_respect_joint_limits(prior):
    rng = np.random.default_rng(0)
    lim = kinematics.JOINT_LIMITS
    for _ in range(200):
        a = hand_sampler.sample_angles(rng, prior)
        assert np.all(a[..., 0] >= lim[..., 0] - 1e-6) and np.all(a[..., 0] <= lim[..., 1] + 1e-6)
        assert np.all(a[..., 1] >= lim[..., 2] - 1e-6) and np.all(a[..., 1] <= lim[..., 3] + 1e-6)


def test_grasp_prior_closes_the_hand_more_than_the_open_prior():
    rng = np.random.default_rng(1)
    flex = {p: np.mean([hand_sampler.sample_angles(rng, p)[1:, :, 0].mean() for _ in range(100)])
            for p in hand_sampler.PRIORS}
    assert flex["grasp"] > flex["open"]


def test_bad_style_and_prior_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="distance_range"):
        dataclasses.replace(styles.RENDER, distance_range=(600.0, 300.0))
    with pytest.raises(ValueError, match="pose prior"):
        hand_sampler.sample_angles(np.random.default_rng(0), "fist")
    with pytest.raises(ValueError, match="resolution"):
        dataclasses.replace(styles.CAPTURE, resolution=(0.0, 0.5))
    with pytest.raises(ValueError, match="resolution"):
        dataclasses.replace(styles.CAPTURE, resolution=(0.5, 1.5))
    with pytest.raises(ValueError, match="motion_blur"):
        dataclasses.replace(styles.CAPTURE, motion_blur=(-1.0, 2.0))


@pytest.mark.parametrize("length, angle", [(4.0, 0.0), (5.5, np.pi / 2), (3.0, np.pi / 4)])
def test_motion_kernel_is_a_normalised_line_along_its_angle(length, angle):
    k = render.motion_kernel(length, angle)
    assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert np.isclose(k.sum(), 1.0) and np.all(k >= 0)
    ys, xs = np.nonzero(k > 1e-3)
    c = k.shape[0] // 2
    # Every weighted pixel lies within a pixel of the segment through the centre ...
    d = np.abs(-(xs - c) * np.sin(angle) + (ys - c) * np.cos(angle))
    assert np.all(d <= 1.0)
    # ... and the weights spread over about `length` pixels along it (second moment of a
    # uniform segment: length^2 / 12).
    t = (xs - c) * np.cos(angle) + (ys - c) * np.sin(angle)
    spread = np.sqrt(np.sum(k[ys, xs] * t ** 2) * 12)
    assert abs(spread - length) < 1.0


def test_low_resolution_and_motion_blur_remove_fine_detail():
    def detail(style):
        grey = [render.render_example(style, 0, i, SIZE)["image"].astype(np.float32).mean(-1)
                for i in range(6)]
        return np.mean([np.abs(ndimage.laplace(g)).mean() for g in grey])

    sharp = dataclasses.replace(styles.CAPTURE, motion_blur=(0.0, 0.0), resolution=(1.0, 1.0))
    low = dataclasses.replace(sharp, resolution=(0.3, 0.3))
    moving = dataclasses.replace(sharp, motion_blur=(6.0, 6.0))
    assert detail(low) < 0.6 * detail(sharp)
    assert detail(moving) < 0.8 * detail(sharp)
    # The image keeps its size, and its labels are the scene's (the sensor sees the same hand).
    a, b = render.render_example(low, 0, 1, SIZE), render.render_example(sharp, 0, 1, SIZE)
    assert a["image"].shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(a["keypoints_2d"], b["keypoints_2d"])
