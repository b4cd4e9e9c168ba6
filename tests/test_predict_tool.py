"""tools.predict's edge cases: too-small images, boxes outside, unreadable files, confidence."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config
from PIL import Image
from test_export import random_variables

from hpe_jax import export
from hpe_jax.training import factory
from tools import predict as predict_tool

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
S = 32  # tiny_config's network input


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = tiny_config()
    variables = random_variables(factory.build_model(config.model, None), S)
    return export.export_model(config, variables, str(tmp_path_factory.mktemp("exp") / "m"),
                               source={"step": 0})


def test_peak_mass_is_one_for_a_point_and_window_share_for_a_flat_map():
    s, j = 8, 3
    flat = jnp.full((1, s, s, j), 1.0 / s**2)
    np.testing.assert_allclose(export.peak_mass(flat), 4.0 / s**2, rtol=1e-6)  # corner argmax
    flat = flat.at[0, 3, 5, :].add(1e-6)  # the peak inside: the full 3 x 3 window
    np.testing.assert_allclose(export.peak_mass(flat), 9.0 / s**2, rtol=1e-4)
    point = jnp.zeros((1, s, s, j)).at[0, 3, 5, :].set(1.0)
    np.testing.assert_allclose(export.peak_mass(point), 1.0)
    # Mass split between the peak and a pixel 2 px away: only the peak's share is counted.
    split = jnp.zeros((1, s, s, j)).at[0, 3, 5, :].set(0.6).at[0, 3, 7, :].set(0.4)
    np.testing.assert_allclose(export.peak_mass(split), 0.6, rtol=1e-6)


def test_bad_images_are_skipped_the_rest_predicted_with_confidence(model_dir, tmp_path):
    rng = np.random.default_rng(0)
    good = rng.integers(0, 256, (40, 50, 3), np.uint8)
    Image.fromarray(good).save(tmp_path / "good.png")
    Image.fromarray(good).save(tmp_path / "far_box.png")
    Image.fromarray(good[:1, :1]).save(tmp_path / "tiny.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    paths = [str(tmp_path / n) for n in ("good.png", "tiny.png", "broken.jpg", "far_box.png")]
    boxes = {"far_box.png": [100, 100, 140, 150]}
    records = predict_tool.predict_files(model_dir, paths, str(tmp_path / "out"), boxes=boxes)
    assert [r["image"] for r in records] == [paths[0]]
    rec = records[0]
    assert len(rec["confidence"]) == 21 and all(0.0 <= c <= 1.0 for c in rec["confidence"])
    assert 0.0 <= rec["hand_score"] <= 1.0
    with open(tmp_path / "out" / "predictions.json") as f:
        written = json.load(f)
    assert [r["image"] for r in written["predictions"]] == [paths[0]]
    reasons = {s["image"]: s["reason"] for s in written["skipped"]}
    assert "smaller than the network input (32x32)" in reasons[paths[1]]
    assert "cannot read image" in reasons[paths[2]]
    assert "mostly outside the 50x40 image" in reasons[paths[3]]


def test_command_line_skips_with_warnings_and_exits_1(model_dir, tmp_path):
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "ok.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "small.png")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.predict", f"--model={model_dir}", "--images",
         f"{tmp_path / 'ok.png'},{tmp_path / 'small.png'}", f"--output_dir={tmp_path / 'o'}"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "skipped: 'small.png'" in proc.stderr.replace(str(tmp_path) + "/", "")
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tools.predict: 1 of 2 images skipped")
    assert os.path.isfile(tmp_path / "o" / "predictions.json")
    assert os.path.isfile(tmp_path / "o" / "ok.json")


SHIPPED = os.path.join(ROOT_DIR, "assets", "demo_pretrained")


def test_the_shipped_network_predicts_through_the_readme_command(tmp_path):
    """The README's own command: tools.predict --model=assets/demo_pretrained on a photo."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (120, 90, 3), np.uint8)).save(tmp_path / "hand.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.predict", f"--model={SHIPPED}",
         f"--output_dir={tmp_path / 'out'}", str(tmp_path / "hand.jpg")],
        capture_output=True, text=True, cwd=ROOT_DIR, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "out" / "hand.json") as f:
        rec = json.load(f)
    assert np.asarray(rec["uv"]).shape == (21, 2) and np.all(np.isfinite(rec["uv"]))
    assert 0.0 <= rec["hand_score"] <= 1.0


def test_a_damaged_network_file_names_the_file(tmp_path):
    import shutil

    shutil.copytree(SHIPPED, tmp_path / "net")
    path = tmp_path / "net" / "variables.npz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"variables.npz cannot be read.*truncated"):
        export.load(str(tmp_path / "net"))


def test_overlays_colour_each_finger_and_stay_small(model_dir, tmp_path):
    big = np.full((1500, 2000, 3), 90, np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    predict_tool.predict_files(model_dir, [str(tmp_path / "big.png")], str(tmp_path / "o"),
                               boxes={"big.png": [800, 500, 1200, 900]})
    overlay = np.asarray(Image.open(tmp_path / "o" / "big_overlay.png").convert("RGB"))
    assert max(overlay.shape[:2]) == predict_tool.MAX_OVERLAY_SIDE
    colours = {tuple(c) for c in overlay.reshape(-1, 3)}
    assert sum(c in colours for c in predict_tool.FINGER_COLOURS) == 5  # legend and skeleton


def test_a_photo_missing_from_the_boxes_is_a_warning(model_dir, tmp_path, caplog):
    rng = np.random.default_rng(2)
    for name in ("a.png", "b.png"):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), np.uint8)).save(tmp_path / name)
    with caplog.at_level("WARNING"):
        predict_tool.predict_files(model_dir, [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
                                   str(tmp_path / "o"), boxes={"a.png": [2, 2, 30, 30]})
    assert any("no box" in r.getMessage() and "b.png" in r.getMessage() for r in caplog.records)


def test_a_missing_image_is_called_missing_not_unreadable(tmp_path):
    with pytest.raises(ValueError, match=r"nope.png': no such file$"):
        predict_tool.read_image(str(tmp_path / "nope.png"))


def test_malformed_boxes_name_the_image_and_the_expected_shape():
    with pytest.raises(ValueError, match=r"boxes_json for '/p/a.png' must hold numbers"):
        predict_tool._per_image({"a.png": [1, "a", 3, 4]}, ["/p/a.png"], "boxes_json", (4,),
                                shared_ok=False)
    with pytest.raises(ValueError, match=r"boxes_json for '/p/a.png' must hold numbers"):
        predict_tool._per_image([{"u": 1}], ["/p/a.png"], "boxes_json", (4,), shared_ok=False)


def test_an_inverted_box_is_called_inverted_not_outside():
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(predict_tool.SkippedImage, match="inverted"):
        predict_tool.check_image("a.png", image, np.array([50, 50, 10, 10], np.float32), 32)
    predict_tool.check_image("a.png", image, np.array([10, 10, 50, 50], np.float32), 32)


def test_boxes_naming_no_given_image_are_listed():
    paths = ["/p/a.png", "b.png"]
    assert predict_tool.unmatched_keys({"a.png": 1, "/p/a.png": 1, "b.png": 1}, paths) == []
    assert predict_tool.unmatched_keys({"nothere.png": 1, "b.png": 1}, paths) == ["nothere.png"]
    assert predict_tool.unmatched_keys([[1, 2, 3, 4]], paths) == []


def test_an_output_dir_that_is_a_file_is_refused_before_loading(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"--output_dir=.*f is a file"):
        predict_tool.predict_files(str(tmp_path / "nope"), ["a.png"], str(tmp_path / "f"))


@pytest.mark.parametrize("damage", ["empty_config", "truncated_variables", "half_network"])
def test_a_damaged_export_names_the_file_and_the_fix(model_dir, tmp_path, damage):
    import shutil

    path = tmp_path / "m"
    shutil.copytree(model_dir, path)
    if damage == "empty_config":
        (path / "config.json").write_text("")
        match = r"config.json is damaged .*tools.export"
    elif damage == "truncated_variables":
        for f in (path / "variables").rglob("*"):
            if f.is_file() and f.stat().st_size > 64:
                f.write_bytes(f.read_bytes()[:64])
        match = r"variables cannot be restored .*truncated or damaged.*tools.export"
    else:
        path = tmp_path / "net"
        path.mkdir()
        (path / "variables.npz").write_bytes(b"")
        match = r"holds variables.npz but not meta.json"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        export.load(str(path))


def test_a_truncated_init_variables_file_is_named_before_any_work(tmp_path):
    import shutil

    shutil.copytree(SHIPPED, tmp_path / "net")
    npz = tmp_path / "net" / "variables.npz"
    export.check_network_file(str(tmp_path / "net"))  # intact: fine
    export.check_network_file("")  # unset: fine
    export.check_network_file(str(tmp_path / "nope"))  # missing: the loader names it
    npz.write_bytes(npz.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"--config.model.init_variables=.*net: .*variables.npz "
                                         r"cannot be read, it is truncated"):
        export.check_network_file(str(tmp_path / "net"))
    npz.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\n")
    with pytest.raises(ValueError, match="git-lfs pointer: run git lfs pull"):
        export.check_network_file(str(tmp_path / "net"))
