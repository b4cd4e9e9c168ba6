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
    e_tgt, c_tgt = stats(samples["capture"])
    assert e_tgt > 2.5 * e_src  # cluttered, textured target backgrounds
    assert np.linalg.norm(c_tgt - c_src) > 0.05  # shifted skin tones, cast and highlights


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
