"""The tf.data geometry must equal `hpe_jax.hand.camera` (same conventions), and warps must move
pixels exactly where the label affine moves the labels."""

import numpy as np
import pytest
import tensorflow as tf

from hpe_jax.data import preprocess as pp
from hpe_jax.hand import camera


def test_crop_affine_resize_and_projection_match_camera_module():
    rng = np.random.default_rng(0)
    for _ in range(5):
        lo = rng.uniform(0, 60, 2)
        box = np.concatenate([lo, lo + rng.uniform(10, 60, 2)]).astype(np.float32)
        rot, scale, shift = rng.uniform(-3, 3), rng.uniform(0.7, 1.3), rng.uniform(-5, 5, 2)
        A_tf = pp.crop_affine(box, 64, rot, scale, shift.astype(np.float32)).numpy()
        A_np = np.asarray(camera.crop_affine(box, 64, rot, scale, shift.astype(np.float32)))
        np.testing.assert_allclose(A_tf, A_np, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(pp.resize_affine(0.25).numpy(), camera.resize_affine(0.25))
    xyz = np.concatenate([rng.normal(0, 40, (21, 2)), rng.uniform(300, 500, (21, 1))], -1)
    xyz = xyz.astype(np.float32)
    K = np.array([[150, 0, 60], [0, 160, 70], [0, 0, 1]], np.float32)
    got = [t.numpy() for t in pp.encode_25d(tf.constant(xyz), tf.constant(K))]
    want = [np.asarray(t) for t in camera.encode_25d(xyz, K)]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
    uv = rng.uniform(0, 50, (21, 2)).astype(np.float32)
    np.testing.assert_allclose(pp.apply_affine(tf.constant(A_tf), uv).numpy(),
                               camera.apply_affine(A_np, uv), rtol=1e-5, atol=1e-4)
    sq = pp.square_box(tf.constant([10.0, 20.0, 30.0, 60.0]), 0.25).numpy()
    np.testing.assert_allclose(sq, camera.square_box(np.array([[10.0, 20.0], [30.0, 60.0]]), 0.25))


@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_warp_moves_a_dot_to_where_apply_affine_maps_it(method):
    img = np.zeros((40, 40, 1), np.float32)
    img[12:15, 21:24] = 1.0  # a 3x3 blob centred at (u, v) = (22, 13)
    A = pp.crop_affine(tf.constant([0.0, 0.0, 39.0, 39.0]), 64, 0.7, 1.3, tf.constant([3.0, -4.0]))
    out = pp.warp(img, A, 64, method).numpy()[..., 0]
    v, u = np.nonzero(out > 0.5)
    want = pp.apply_affine(A, tf.constant([[22.0, 13.0]])).numpy()[0]
    np.testing.assert_allclose([u.mean(), v.mean()], want, atol=0.6)


def test_normalize_depth_representation():
    depth = np.array([[500.0, 520.0, 0.0, 900.0]], np.float32).reshape(1, 4, 1)
    mask = np.array([1, 1, 1, 0], np.float32).reshape(1, 4, 1)
    d = pp.normalize_depth(depth, mask, 500.0, 300.0).numpy().ravel()
    # On the hand: (depth - root) / 150 clipped; no measurement and background: +1 (far).
    np.testing.assert_allclose(d, [0.0, 20.0 / 150.0, 1.0, 1.0], atol=1e-6)
    d = pp.normalize_depth(depth, None, 500.0, 300.0).numpy().ravel()
    np.testing.assert_allclose(d, [0.0, 20.0 / 150.0, 1.0, 1.0], atol=1e-6)  # cube decides


def test_normalize_image_uses_imagenet_statistics():
    x = pp.normalize_image(tf.fill([2, 2, 3], tf.constant(255, tf.uint8))).numpy()
    np.testing.assert_allclose(x[0, 0], (1.0 - pp.IMAGENET_MEAN) / pp.IMAGENET_STD, rtol=1e-6)
