"""image_folder builder: photos with/without boxes, mirroring, skipped files, labelled splits,
and the whole adapt-to-your-photos path (train with it as the target, evaluate on its test)."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import adapt_folder
from hpe_jax.data.builders import common, image_folder


def _photo(path, width=48, height=40, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def _labelled_split(folder, n=4, name="test"):
    """n labelled photos in the hand_folder schema: a hand-sized point cloud 400 mm away."""
    rng = np.random.default_rng(7)
    K = [[60.0, 0.0, 23.5], [0.0, 60.0, 19.5], [0.0, 0.0, 1.0]]
    samples = []
    for i in range(n):
        _photo(folder / "labelled" / f"{i}.png", seed=100 + i)
        xyz = rng.normal(0.0, 30.0, (21, 3)) + [0.0, 0.0, 400.0]
        samples.append({"image": f"labelled/{i}.png", "K": K, "keypoints_3d": xyz.tolist()})
    (folder / f"{name}.json").write_text(json.dumps({"samples": samples}))


def _build(manual_dir, data_dir, split):
    builder = image_folder.prepare(str(manual_dir), str(data_dir))
    return builder, {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split=split))}


def test_without_boxes_each_photo_is_one_whole_image_crop(tmp_path):
    pixels = _photo(tmp_path / "photos" / "a.png", 48, 40)
    _photo(tmp_path / "photos" / "sub" / "b.jpg", 30, 60, seed=1)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    builder, out = _build(tmp_path / "photos", tmp_path / "data", "train")
    assert sorted(out) == ["a.png", "sub/b.jpg"]  # the broken file is skipped, not fatal
    ex = out["a.png"]
    np.testing.assert_array_equal(ex["image"], pixels)  # PNG stored as is
    np.testing.assert_allclose(ex["bbox"], [-0.5, -0.5, 47.5, 39.5])
    np.testing.assert_allclose(ex["K"], [[48, 0, 23.5], [0, 48, 19.5], [0, 0, 1]])
    assert not ex["visibility"].any()
    np.testing.assert_allclose(out["sub/b.jpg"]["K"][:2, :2], np.eye(2) * 60)
    assert list(builder.info.splits) == ["train"]


def test_boxes_json_several_hands_left_side_and_clipping(tmp_path):
    pixels = _photo(tmp_path / "a.png", 48, 40)
    _photo(tmp_path / "b.png", seed=1)
    _photo(tmp_path / "c.png", seed=2)  # not in boxes.json: skipped
    (tmp_path / "boxes.json").write_text(json.dumps({
        "a.png": {"box": [2, 3, 20, 30], "hand_side": "left"},
        "b.png": [[0, 0, 10, 10], [30, 20, 60, 50]],  # the second one runs off the image
    }))
    _, out = _build(tmp_path, tmp_path / "data", "train")
    assert sorted(out) == ["a.png", "b.png#0", "b.png#1"]
    left = out["a.png"]
    np.testing.assert_array_equal(left["image"], pixels[:, ::-1])
    np.testing.assert_allclose(left["bbox"], [47 - 20, 3, 47 - 2, 30])
    assert left["hand_side"] == 1
    np.testing.assert_allclose(out["b.png#1"]["bbox"], [30, 20, 47.5, 39.5])


def test_boxes_csv(tmp_path):
    _photo(tmp_path / "a.png")
    (tmp_path / "boxes.csv").write_text("image,u_min,v_min,u_max,v_max\na.png,1,2,30,35\n")
    _, out = _build(tmp_path, tmp_path / "data", "train")
    np.testing.assert_allclose(out["a.png"]["bbox"], [1, 2, 30, 35])


@pytest.mark.parametrize("boxes, message", [
    ({"a.png": [100, 100, 120, 130]}, r"box 0 of a.png: box .* no area inside the 48x40 image"),
    ({"a.png": [1, 2, 3]}, r"entry 'a.png': a box is 4 numbers"),
    ({"missing.png": [1, 2, 30, 30]}, r"names 1 image\(s\) not in the folder.*'missing.png'"),
])
def test_bad_boxes_name_the_entry(tmp_path, boxes, message):
    _photo(tmp_path / "a.png")
    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    with pytest.raises(common.CorruptFileError, match=message):
        _build(tmp_path, tmp_path / "data", "train")


def test_a_folder_of_unreadable_photos_names_them_not_an_empty_split(tmp_path):
    for i in range(3):
        (tmp_path / "photos" / f"{i}.jpg").parent.mkdir(exist_ok=True)
        (tmp_path / "photos" / f"{i}.jpg").write_text("not a photo")
    with pytest.raises(common.CorruptFileError, match=r"none of the 3 photo\(s\) in .*photos "
                                                      r"can be read \(e\.g\. cannot decode") as e:
        _build(tmp_path / "photos", tmp_path / "data", "train")
    assert "BytesIO" not in str(e.value)  # PIL's in-memory file, not the user's


def test_unprepared_without_folder_says_what_to_pass(tmp_path):
    with pytest.raises(common.ManualDirError, match=r"--config.data.image_folder=DIR"):
        image_folder.prepare("", str(tmp_path))


def test_labelled_split_is_read_and_its_photos_leave_train(tmp_path):
    _photo(tmp_path / "a.png")
    _labelled_split(tmp_path, n=3)
    builder, train = _build(tmp_path, tmp_path / "data", "train")
    assert sorted(train) == ["a.png"]
    assert builder.info.splits["test"].num_examples == 3
    test = {ex["id"].decode(): ex for ex in tfds.as_numpy(builder.as_dataset(split="test"))}
    assert np.abs(test["labelled/0.png"]["keypoints_3d"]).sum() > 0


@pytest.mark.slow
def test_adapt_to_a_photo_folder_end_to_end(tiny_data_dir, tmp_path):
    """Pre-train on source_tiny, fine-tune on 32 photos as the target, evaluate on test.json."""
    from helpers import tiny_config

    from hpe_jax.evaluation.run import evaluate_checkpoint
    from hpe_jax.training import loop

    folder = tmp_path / "photos"
    for i in range(32):
        _photo(folder / f"p{i:02d}.jpg", 48, 40, seed=i)
    _labelled_split(folder, n=4)
    data_dir = str(tmp_path / "data")
    image_folder.prepare(str(folder), data_dir)

    # configs/adapt_folder.py's data fields on the smoke-sized network and source.
    ours = adapt_folder.get_config()
    config = tiny_config(data_dir)
    for key in ("target", "target_split", "eval_split", "image_folder"):
        config.data[key] = ours.data[key]
    assert config.data.target == "image_folder" and config.data.eval_split == "test"
    # source_tiny lives in the shared tiny data_dir: copy its prepared files next to the photos.
    import shutil
    shutil.copytree(f"{tiny_data_dir}/synthetic_hands", f"{data_dir}/synthetic_hands")

    plan = loop.make_plan(config)
    assert plan.finetune_steps == 2  # 32 photos / unlabelled batch 16, one epoch
    state = loop.train(config, str(tmp_path / "run"))
    assert int(state.step) == plan.total_steps and state.teacher_params is not None

    res = evaluate_checkpoint(config, str(tmp_path / "run"), num_qualitative=0)
    assert res.metrics["num_samples"] == 4
    assert np.isfinite(res.metrics["known_root/epe_mean_mm"])


def test_a_changed_folder_is_rebuilt_not_silently_reused(tmp_path):
    for i in range(2):
        _photo(tmp_path / "a" / f"{i}.png", seed=i)
    for i in range(3):
        _photo(tmp_path / "b" / f"{i}.png", seed=10 + i)
    _, first = _build(tmp_path / "a", tmp_path / "data", "train")
    assert len(first) == 2
    _, other = _build(tmp_path / "b", tmp_path / "data", "train")  # another folder
    assert len(other) == 3
    _photo(tmp_path / "b" / "new.png", seed=20)  # the same folder, a photo added
    _, grown = _build(tmp_path / "b", tmp_path / "data", "train")
    assert sorted(grown) == ["0.png", "1.png", "2.png", "new.png"]


@pytest.mark.parametrize("photos", [0, 3])
def test_too_few_photos_fail_in_one_line_before_the_source_is_rendered(tmp_path, photos):
    from hpe_jax.data.prepare import prepare_datasets

    for i in range(photos):
        _photo(tmp_path / "photos" / f"{i}.png", seed=i)
    (tmp_path / "photos").mkdir(exist_ok=True)
    config = adapt_folder.get_config()
    config.data.data_dir = str(tmp_path / "data")
    config.data.image_folder = str(tmp_path / "photos")
    with pytest.raises(ValueError, match=rf"--config.data.image_folder=.* holds {photos} "
                                         r".*at least 16"):
        prepare_datasets(config)
    assert not (tmp_path / "data" / "synthetic_hands").exists()  # nothing rendered
