"""Input pipelines: shapes and dtypes, labels that move with the pixels, determinism and
resumption, and unlabelled batches without labels."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from hpe_jax.data import augment, pipeline, preprocess
from hpe_jax.data.features import LABEL_KEYS

S, s = 64, 16
COMMON = dict(global_batch_size=8, input_size=S, output_size=s, seed=3, process_index=0,
              process_count=1, local_device_count=2)


def _labelled(data_dir, **kw):
    return pipeline.labelled_dataset("synthetic_hands/source_tiny", "train", data_dir=data_dir,
                                     **{**COMMON, "train": True, **kw})


def test_labelled_batch_shapes_and_dtypes(tiny_data_dir):
    b = next(_labelled(tiny_data_dir))
    want = {
        "image": (S, S, 3), "image_pos": (S, S, 3), "depth": (S, S, 1), "depth_pos": (S, S, 1),
        "uv": (21, 2), "z": (21,), "visibility": (21,), "mask": (s, s, 1),
        "depth_target": (s, s, 1), "keypoints_3d": (21, 3), "K": (3, 3), "z_root": (),
        "scale": (),
    }
    assert set(b) == set(want)
    for k, shape in want.items():
        assert b[k].shape == (2, 4, *shape), k
        assert b[k].dtype == np.float32, k
    assert set(np.unique(b["visibility"])) <= {0.0, 1.0}
    assert b["depth"].min() >= -1 and b["depth"].max() == 1.0  # background is far (+1)
    assert not np.allclose(b["image"], b["image_pos"])  # T changed the texture


def test_augmented_labels_move_with_the_pixels(tiny_data_dir):
    b = next(_labelled(tiny_data_dir))
    uv, xyz, K = b["uv"].reshape(-1, 21, 2), b["keypoints_3d"].reshape(-1, 21, 3), b["K"]
    p = np.einsum("nij,nkj->nki", K.reshape(-1, 3, 3), xyz)
    np.testing.assert_allclose(p[..., :2] / p[..., 2:], uv, atol=1e-2)
    # Visible joints land on the warped hand mask (G moved mask and labels alike), and the
    # depth target there is the joint's root-relative depth within a finger's thickness.
    mask = b["mask"].reshape(-1, s, s)
    target = b["depth_target"].reshape(-1, s, s)
    vis = b["visibility"].reshape(-1, 21) > 0
    n, j = np.nonzero(vis)
    pix = np.clip(np.rint(uv[n, j]).astype(int), 0, s - 1)
    on_mask = mask[n, pix[:, 1], pix[:, 0]]
    assert on_mask.mean() > 0.9  # at 1/4 resolution a thin finger can fall between pixels
    z_mm = b["z"].reshape(-1, 21)[n, j] * b["scale"].reshape(-1)[n]
    d_mm = target[n, pix[:, 1], pix[:, 0]] * 150.0
    close = np.abs(d_mm - z_mm)[on_mask > 0] < 35.0
    assert close.mean() > 0.9


def test_weak_to_strong_maps_weak_view_pixels_onto_strong_view_pixels():
    img = np.zeros((64, 64, 3), np.uint8)
    img[30:33, 40:43] = 255  # a dot at (u, v) = (41, 31)
    ex = {"image": tf.constant(img), "bbox": tf.constant([20.0, 15.0, 50.0, 45.0]),
          "K": tf.eye(3)}
    cfg = augment.AugmentConfig(brightness=0, contrast=0, saturation=0, hue=0,
                                blur_probability=0, noise_std=0)
    out = pipeline._unlabelled_example(ex, tf.constant([1, 2], tf.int64), input_size=S,
                                       output_size=s, cfg=cfg, crop_margin=0.2)

    def dot(view):  # dot centre in OUTPUT pixels of a view
        x = preprocess.denormalize_image(out[view].numpy()).mean(-1)
        v, u = np.nonzero(x > 0.5)
        return (np.array([u.mean(), v.mean()]) + 0.5) * (s / S) - 0.5

    w2s = out["weak_to_strong"].numpy()
    mapped = w2s[:2, :2] @ dot("image_weak") + w2s[:2, 2]
    np.testing.assert_allclose(mapped, dot("image_strong"), atol=0.3)


def test_strong_view_occluder_is_one_rectangle_on_the_strong_view_only():
    rng = np.random.default_rng(0)
    ex = {"image": tf.constant(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
          "bbox": tf.constant([20.0, 15.0, 50.0, 45.0]), "K": tf.eye(3)}
    plain = augment.AugmentConfig()
    key = tf.constant([3, 4], tf.int64)

    def views(cfg):
        return pipeline._unlabelled_example(ex, key, input_size=S, output_size=s, cfg=cfg,
                                            crop_margin=0.2)

    base = views(plain)
    occluded = views(augment.AugmentConfig(strong_occlusion_probability=1.0,
                                           strong_occlusion_size=(0.3, 0.4)))
    # The weak view, the geometry and T's other draws are those of the run without occluders.
    np.testing.assert_array_equal(occluded["image_weak"], base["image_weak"])
    np.testing.assert_array_equal(occluded["weak_to_strong"], base["weak_to_strong"])
    changed = np.any(occluded["image_strong"].numpy() != base["image_strong"].numpy(), axis=-1)
    rows, cols = np.nonzero(changed)
    assert rows.size > 0
    # One rectangle (fully inside its bounding box up to the image border) of one colour,
    # sides within 0.3-0.4 of the crop unless the border cuts them.
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    assert changed[rows.min():rows.max() + 1, cols.min():cols.max() + 1].mean() > 0.95
    assert height <= 0.4 * S + 1 and width <= 0.4 * S + 1
    assert (height >= 0.3 * S - 1 or rows.min() == 0 or rows.max() == S - 1)
    fill = occluded["image_strong"].numpy()[changed]
    np.testing.assert_allclose(fill, np.broadcast_to(fill[0], fill.shape), atol=1e-6)
    # Probability 0 (the default) leaves the strong view as it was.
    off = views(augment.AugmentConfig(strong_occlusion_probability=0.0))
    np.testing.assert_array_equal(off["image_strong"], base["image_strong"])
    with pytest.raises(ValueError, match="strong_occlusion_size"):
        augment.AugmentConfig(strong_occlusion_size=(0.0, 0.5))


def _labelled_views(cfg, key=(5, 6)):
    """One synthetic labelled example: a hand (mask) at 400 mm, a forearm beside it at 420 mm
    (depth, no mask), a far wall at 2 m, and a random image."""
    rng = np.random.default_rng(1)
    depth = np.full((64, 64, 1), 2000.0, np.float32)
    depth[20:44, 20:44] = 400.0
    depth[44:64, 26:38] = 420.0                # the forearm, below the hand
    mask = np.zeros((64, 64, 1), np.uint8)
    mask[20:44, 20:44] = 1
    xyz = np.concatenate([rng.uniform(-40, 40, (21, 2)), np.full((21, 1), 400.0)], 1)
    K = np.array([[400.0, 0, 32], [0, 400.0, 32], [0, 0, 1]], np.float32)
    ex = {"image": tf.constant(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
          "depth": tf.constant(depth), "mask": tf.constant(mask),
          "bbox": tf.constant([-0.5, -0.5, 63.5, 63.5]), "K": tf.constant(K),
          "keypoints_3d": tf.constant(xyz, tf.float32), "visibility": tf.ones([21], tf.bool)}
    cfg = dataclasses.replace(cfg, rotation_deg=0.0, scale_range=(1.0, 1.0), translation=0.0)
    return pipeline._labelled_example(
        ex, tf.constant(key, tf.int64), input_size=S, output_size=s, cfg=cfg, with_depth=True,
        cube_mm=300.0, crop_margin=0.0, pos_views=True)


def _assert_same_labels(views, base):
    """Everything but the images (labels, depth, mask) is as without the augmentation."""
    for k in base:
        if k not in ("image", "image_pos"):
            np.testing.assert_array_equal(views[k], base[k], err_msg=k)


def test_source_sleeve_and_occluder_change_the_image_not_the_labels():
    base = _labelled_views(augment.AugmentConfig())
    sleeved = _labelled_views(augment.AugmentConfig(sleeve_probability=1.0))
    _assert_same_labels(sleeved, base)
    changed = np.any(sleeved["image"].numpy() != base["image"].numpy(), axis=-1)
    # Only the forearm (depth near the hand, off the mask) changed, all of it that is lit.
    forearm = np.zeros_like(changed)
    forearm[44:, 26:38] = True  # the crop is the identity here (a 64-px box at margin 0)
    assert changed[forearm].mean() > 0.95
    assert not changed[~forearm].any()
    # One colour, scaled by each pixel's brightness: the colour's direction is shared.
    rgb = preprocess.denormalize_image(sleeved["image"].numpy())[changed]
    direction = rgb / np.linalg.norm(rgb, axis=-1, keepdims=True)
    np.testing.assert_allclose(direction, np.broadcast_to(direction[0], direction.shape),
                               atol=2e-2)
    # The occluder: a rectangle on the labelled image, labels again untouched.
    occluded = _labelled_views(augment.AugmentConfig(source_occlusion_probability=1.0))
    np.testing.assert_array_equal(occluded["uv"], base["uv"])
    assert np.any(occluded["image"].numpy() != base["image"].numpy())
    with pytest.raises(ValueError, match="sleeve_probability"):
        augment.AugmentConfig(sleeve_probability=1.5)


def test_mirrored_crop_is_the_other_hand_with_its_labels():
    base = _labelled_views(augment.AugmentConfig())
    flipped = _labelled_views(augment.AugmentConfig(flip_probability=1.0))
    for key in ("image", "depth", "mask", "depth_target"):
        np.testing.assert_allclose(flipped[key], base[key].numpy()[:, ::-1], atol=1e-5,
                                   err_msg=key)
    # The joints move with the pixels; their relative depths and the hand's size stay.
    np.testing.assert_allclose(flipped["uv"][:, 0], s - 1 - base["uv"].numpy()[:, 0], atol=1e-4)
    np.testing.assert_allclose(flipped["uv"][:, 1], base["uv"][:, 1], atol=1e-4)
    for key in ("z", "z_root", "scale", "visibility"):
        np.testing.assert_array_equal(flipped[key], base[key], err_msg=key)
    assert float(flipped["K"][0, 0]) == -float(base["K"][0, 0])  # a mirrored camera
    # Probability 0 (the default) mirrors nothing; the other draws are the same either way.
    half = [_labelled_views(augment.AugmentConfig(flip_probability=0.5), key=(k, 1))
            for k in range(12)]
    mirrored = [bool(v["K"][0, 0] < 0) for v in half]
    assert 0 < sum(mirrored) < len(mirrored)
    with pytest.raises(ValueError, match="flip_probability"):
        augment.AugmentConfig(flip_probability=2.0)


def test_source_background_clutter_replaces_only_the_background():
    base = _labelled_views(augment.AugmentConfig())
    cluttered = _labelled_views(augment.AugmentConfig(source_background_probability=1.0))
    _assert_same_labels(cluttered, base)
    changed = np.any(cluttered["image"].numpy() != base["image"].numpy(), axis=-1)
    hand = np.zeros_like(changed)
    hand[20:44, 20:44] = True
    forearm = np.zeros_like(changed)
    forearm[44:, 26:38] = True
    # The hand and the forearm (the sleeve's place) keep their pixels; the background changes.
    assert not changed[hand | forearm].any()
    assert changed[~(hand | forearm)].mean() > 0.95
    # Some of the background now has the hand's mean colour (the skin-coloured blobs).
    rgb = preprocess.denormalize_image(cluttered["image"].numpy())
    hand_mean = preprocess.denormalize_image(base["image"].numpy())[hand].mean(0)
    direction = rgb / np.linalg.norm(rgb, axis=-1, keepdims=True)
    target = hand_mean / np.linalg.norm(hand_mean)
    blob = np.all(np.abs(direction - target) < 1e-3, axis=-1) & ~(hand | forearm)
    assert blob.sum() >= 4
    # The draws are the example key's: the same key gives the same clutter, another key another.
    again = _labelled_views(augment.AugmentConfig(source_background_probability=1.0))
    np.testing.assert_array_equal(again["image"], cluttered["image"])
    other = _labelled_views(augment.AugmentConfig(source_background_probability=1.0), key=(7, 8))
    assert np.any(other["image"].numpy() != cluttered["image"].numpy())
    with pytest.raises(ValueError, match="source_background_probability"):
        augment.AugmentConfig(source_background_probability=-0.1)


def test_unlabelled_batches_hold_no_label_keys(tiny_data_dir):
    it = pipeline.unlabelled_dataset("synthetic_hands/target_tiny", "train",
                                     data_dir=tiny_data_dir, **{**COMMON, "train": True})
    b = next(it)
    assert set(b) == {"image_weak", "image_strong", "weak_to_strong", "K_weak"}
    assert not set(b) & set(LABEL_KEYS)
    assert b["image_weak"].shape == (2, 4, S, S, 3)


def test_deterministic_and_resumable_across_epochs(tiny_data_dir):
    # 64 examples / batch 8 = 8 steps per epoch: steps 6..9 cross an epoch boundary.
    run = _labelled(tiny_data_dir)
    batches = [next(run) for _ in range(10)]
    resumed = _labelled(tiny_data_dir, start_step=6)
    for step in range(6, 10):
        b = next(resumed)
        for k in b:
            np.testing.assert_array_equal(b[k], batches[step][k], err_msg=f"{k} @ {step}")
    other = next(_labelled(tiny_data_dir, seed=4))
    assert not np.array_equal(other["image"], batches[0]["image"])


def test_processes_read_disjoint_halves(tiny_data_dir):
    kw = {**COMMON, "train": False, "local_device_count": 1}
    z = [next(_labelled(tiny_data_dir, **{**kw, "process_index": p, "process_count": 2}))
         ["z_root"].ravel() for p in (0, 1)]
    assert z[0].shape == (4,) and not set(z[0].tolist()) & set(z[1].tolist())


def test_eval_dataset_is_unbatched_in_split_order(tiny_data_dir):
    ds = pipeline.eval_dataset("synthetic_hands/source_tiny", "test", data_dir=tiny_data_dir,
                               input_size=S, output_size=s)
    exs = list(ds.take(3).as_numpy_iterator())
    assert [int(e["index"]) for e in exs] == [0, 1, 2]
    assert exs[0]["image"].shape == (S, S, 3) and "image_pos" not in exs[0]
    assert "depth" not in exs[0]
    assert pipeline.num_examples("synthetic_hands/source_tiny", "test", tiny_data_dir) == 32


def test_bad_arguments_fail_clearly(tiny_data_dir):
    with pytest.raises(ValueError, match="divisible"):
        _labelled(tiny_data_dir, global_batch_size=7)
    with pytest.raises(ValueError, match="no depth"):
        pipeline.labelled_dataset("synthetic_hands/target_tiny", "train", data_dir=tiny_data_dir,
                                  **{**COMMON, "train": True})
