"""The synthetic_hands TFDS builder: offline build, configs, features, deterministic content."""

import numpy as np
import tensorflow_datasets as tfds

from hpe_jax.data import pipeline, render, styles
from hpe_jax.data.builders import synthetic_hands


def test_tiny_configs_build_offline_with_the_right_splits_and_features(tiny_data_dir):
    src = tfds.builder("synthetic_hands/source_tiny", data_dir=tiny_data_dir)
    tgt = tfds.builder("synthetic_hands/target_tiny", data_dir=tiny_data_dir)
    assert src.info.splits["train"].num_examples == 64
    assert src.info.splits["test"].num_examples == 32
    assert {"depth", "mask"} <= set(src.info.features)
    assert not {"depth", "mask"} & set(tgt.info.features)  # the target is RGB only
    assert {"keypoints_2d", "keypoints_3d", "visibility", "K", "bbox", "id"} <= set(
        tgt.info.features)


def test_stored_examples_are_the_seeded_renders(tiny_data_dir):
    ds = tfds.load("synthetic_hands/source_tiny", split="test", data_dir=tiny_data_dir)
    by_id = {ex["id"].decode(): ex for ex in tfds.as_numpy(ds)}
    ex = by_id["test_000005"]
    want = render.render_example(styles.RENDER, 0, 5, 128, synthetic_hands.SPLIT_IDS["test"])
    np.testing.assert_array_equal(ex["image"], want["image"])
    np.testing.assert_array_equal(ex["depth"], want["depth"])
    np.testing.assert_array_equal(ex["mask"], want["mask"])
    np.testing.assert_array_equal(ex["keypoints_3d"], want["keypoints_3d"])


def test_config_from_any_style():
    style = styles.Style(name="dim", ambient_range=(0.05, 0.1))
    cfg = synthetic_hands.config_from_style(style, image_size=64, num_train=3, num_test=2)
    builder = tfds.builder("synthetic_hands", config=cfg, data_dir="/nonexistent")
    assert builder.builder_config.name == "dim"
    assert builder.info.features["image"].shape == (None, None, 3)


def test_stored_target_images_read_back_as_the_rendered_pixels(tiny_data_dir):
    # The capture style's JPEG is stored as written; the pipeline's decoder (accurate IDCT) must
    # give back exactly the pixels the renderer produced, not TF's fast-IDCT approximation.
    builder = tfds.builder("synthetic_hands/target_tiny", data_dir=tiny_data_dir)
    ds = builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()})
    for ex in tfds.as_numpy(ds.take(3)):
        index = int(ex["id"].decode().split("_")[1])
        want = render.render_example(styles.CAPTURE, 0, index, 128,
                                     synthetic_hands.SPLIT_IDS["test"])
        assert ex["image"] == want["image_jpeg"]
        np.testing.assert_array_equal(pipeline.decode_image(ex["image"]).numpy(), want["image"])


def test_render_progress_is_four_lines_a_split_with_the_time_left(monkeypatch):
    """A large split's render logs each quarter with the seconds left; a small one is silent."""
    from absl import logging

    from hpe_jax.data.builders import synthetic_hands

    clock = {"t": 0.0}

    def tick():
        clock["t"] += 0.5
        return clock["t"]

    monkeypatch.setattr(synthetic_hands.time, "time", tick)
    lines = []
    monkeypatch.setattr(logging, "warning", lambda fmt, *a: lines.append(fmt % a))
    assert list(synthetic_hands._with_progress(range(4000), "x train", 4000)) == list(range(4000))
    assert [line.split(": ")[1].split()[0] for line in lines] == [
        "1000/4000", "2000/4000", "3000/4000", "4000/4000"]
    assert "s left" in lines[0] and "left" not in lines[-1]
    lines.clear()
    list(synthetic_hands._with_progress(range(500), "x val", 500))
    assert lines == []
