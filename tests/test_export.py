"""The exported inference model: parity with the training-time RGB path, crops and boxes, 3D
output, the predict tool and clear errors. Tiny 32-px network with random variables."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from helpers import tiny_config
from PIL import Image

from hpe_jax import export
from hpe_jax.hand import camera, kinematics, skeleton
from hpe_jax.models.dual_modality import DualModalityNet
from hpe_jax.training import factory
from tools import predict as predict_tool

S, OUT = 32, 8
H, W = 50, 70  # the one "original image" shape used with boxes (one compilation)
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_variables(model, size, seed=0):
    """Variables of the model's RGB path with random values of the usual scale: He-normal
    kernels, and BatchNorm statistics/affines away from the identity so that a lost
    batch_stats entry would change the output. (Real `init` compiles for tens of seconds.)"""
    abstract = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
                              jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
    rng = np.random.default_rng(seed)
    out = {}
    for col, tree in abstract.items():
        flat = {}
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            name, shape = path[-1], leaf.shape
            if name == "kernel":
                value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
            elif name in ("scale", "var"):
                value = rng.uniform(0.5, 1.5, shape)
            elif name == "beta":
                value = np.full(shape, 1.0)
            else:  # biases and running means
                value = 0.1 * rng.normal(size=shape)
            flat[path] = np.asarray(value, leaf.dtype)
        out[col] = traverse_util.unflatten_dict(flat)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = tiny_config()
    model = factory.build_model(config.model, None)
    variables = random_variables(model, S)
    path = export.export_model(config, variables, str(tmp_path_factory.mktemp("exp") / "m"),
                               source={"step": 3})
    return config, model, variables, path, export.load(path)


@pytest.fixture(scope="module")
def crops(setup):
    """Three uint8 S x S crops and the training-time RGB path's (uv, z) on their pipeline-
    normalised versions."""
    _, model, variables, _, _ = setup
    images = np.random.default_rng(1).integers(0, 256, (3, S, S, 3), dtype=np.uint8)
    x = (images / 255.0 - export.IMAGENET_MEAN) / export.IMAGENET_STD
    y = model.apply(variables, jnp.asarray(x, jnp.float32), train=False,
                    method=DualModalityNet.predict_rgb)
    return images, np.asarray(y["uv"]), np.asarray(y["z"])


def paste(crop, row=9, col=21):
    """A black H x W image with `crop` pasted at (row, col)."""
    image = np.zeros((1, H, W, 3), np.uint8)
    image[0, row:row + S, col:col + S] = crop
    return image


def to_input_px(uv_out):
    back = camera.invert_affine(camera.resize_affine(OUT / S))
    return np.asarray(camera.apply_affine(back, jnp.asarray(uv_out)))


def test_export_holds_only_inference_variables_and_a_self_describing_config(setup):
    config, _, variables, path, pred = setup
    assert sorted(os.listdir(path)) == ["config.json", "variables"]
    assert set(pred.variables) == {"params", "batch_stats"}
    assert set(pred.variables["params"]) == {"rgb_encoder", "decoder"}
    # Restored values are the trained ones (BatchNorm statistics included).
    np.testing.assert_array_equal(
        pred.variables["batch_stats"]["decoder"]["deconv0_bn"]["var"],
        variables["batch_stats"]["decoder"]["deconv0_bn"]["var"])
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["input_size"] == S and cfg["output_size"] == OUT
    assert cfg["model"]["resnet_depth"] == 18 and cfg["model"]["width"] == 0.125
    assert len(cfg["joint_names"]) == 21 and cfg["joint_names"][0] == "wrist"
    assert cfg["reference_bone"] == [9, 10] and cfg["default_scale_mm"] == pytest.approx(44.0)
    # The default scale is the template hand's reference bone.
    template = kinematics.template_pose()
    assert export.DEFAULT_SCALE_MM == pytest.approx(float(np.linalg.norm(
        template[skeleton.REFERENCE_BONE[1]] - template[skeleton.REFERENCE_BONE[0]])), rel=1e-6)
    assert cfg["image_normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert cfg["source"] == {"step": 3}


def test_exported_model_predicts_what_the_training_rgb_path_predicts(setup, crops):
    pred = setup[4]
    images, ref_uv, ref_z = crops
    out = pred.predict(images)  # no boxes: each S x S image is its own crop (identity warp)
    np.testing.assert_allclose(out["uv_output"], ref_uv, atol=1e-5, rtol=0)
    np.testing.assert_allclose(out["z"], ref_z, atol=1e-5, rtol=0)
    # Original pixels are input pixels here: output px scaled back by S / OUT.
    np.testing.assert_allclose(out["uv"], to_input_px(ref_uv), atol=4e-5, rtol=0)
    assert out["uv"].shape == (3, 21, 2) and "xyz" not in out


# K for the H x W images (any K gives the same 2D output).
K = np.array([[60.0, 0, (W - 1) / 2], [0, 60.0, (H - 1) / 2], [0, 0, 1]], np.float32)


def test_box_crops_the_hand_like_the_pipeline_and_maps_back_to_image_pixels(setup, crops):
    pred = setup[4]
    images, ref_uv, ref_z = crops
    # A tight box whose square with the 0.2 margin is exactly the pasted crop's pixel area.
    centre, half = np.array([21 + (S - 1) / 2, 9 + (S - 1) / 2]), S / 2 / 1.4
    box = np.concatenate([centre - half, centre + half])[None]
    out = pred.predict(paste(images[0]), boxes=box, K=K)
    np.testing.assert_allclose(out["box"], [[20.5, 8.5, 52.5, 40.5]], atol=1e-4)
    np.testing.assert_allclose(out["uv"], to_input_px(ref_uv[:1]) + [21, 9], atol=1e-3)
    np.testing.assert_allclose(out["z"], ref_z[:1], atol=1e-4)


def test_3d_output_reprojects_and_scales_with_the_hand_scale(setup, crops):
    pred = setup[4]
    image, box = paste(crops[0][1], 12, 30), np.array([[33.0, 14.0, 58.0, 41.0]])
    out = pred.predict(image, boxes=box, K=K)
    assert out["xyz"].shape == (1, 21, 3)
    np.testing.assert_allclose(np.asarray(camera.project(out["xyz"], K)), out["uv"], atol=1e-3)
    bone = np.linalg.norm(out["xyz"][:, 10] - out["xyz"][:, 9], axis=-1)
    np.testing.assert_allclose(bone, 44.0, rtol=1e-3)
    big = pred.predict(image, boxes=box, K=K[None], scale_mm=88.0)
    np.testing.assert_allclose(big["xyz"], 2.0 * out["xyz"], rtol=1e-4)


def test_predict_tool_writes_json_and_overlay_that_match_the_predictor(setup, crops, tmp_path):
    pred = setup[4]
    image = paste(crops[0][2], 5, 10)[0]
    Image.fromarray(image).save(tmp_path / "hand.png")
    box = [12.0, 8.0, 40.0, 34.0]
    records = predict_tool.predict_files(
        setup[3], [str(tmp_path / "hand.png")], str(tmp_path / "out"),
        boxes={"hand.png": box}, K=K.tolist())
    with open(tmp_path / "out" / "hand.json") as f:
        rec = json.load(f)
    assert rec == json.loads(json.dumps(records[0]))
    want = pred.predict(image[None], boxes=np.array([box]), K=K)
    np.testing.assert_allclose(rec["uv"], want["uv"][0], atol=1e-5)
    np.testing.assert_allclose(rec["xyz"], want["xyz"][0], rtol=1e-5, atol=1e-3)
    assert len(rec["joint_names"]) == 21 and (rec["width"], rec["height"]) == (W, H)
    with Image.open(tmp_path / "out" / "hand_overlay.png") as im:
        assert im.size == (W, H)
        assert np.any(np.asarray(im.convert("RGB")) != image)  # something was drawn
    assert os.path.isfile(tmp_path / "out" / "predictions.json")


def test_bad_inputs_give_clear_errors(setup, tmp_path):
    config, model, variables, path, pred = setup
    img = np.zeros((S, S, 3), np.uint8)
    with pytest.raises(ValueError, match=r"uint8 RGB batch \(N, H, W, 3\).*images\[None\]"):
        pred.predict(img)
    with pytest.raises(ValueError, match="uint8"):
        pred.predict(img[None].astype(np.float32))
    with pytest.raises(ValueError, match=r"boxes must be \(1, 4\)"):
        pred.predict(img[None], boxes=np.array([[10, 10, 5, 20]]))
    with pytest.raises(ValueError, match="K must be"):
        pred.predict(img[None], K=np.eye(4))
    with pytest.raises(FileNotFoundError, match="not an export directory"):
        export.load(str(tmp_path))
    with pytest.raises(FileExistsError, match="already holds an export"):
        export.export_model(config, variables, path)
    wide = tiny_config()
    wide.model.width = 0.25
    with pytest.raises(ValueError, match="has shape .* in the weights but .* in the model"):
        export.export_model(wide, variables, str(tmp_path / "wide"))


def test_predict_tool_on_an_unreadable_image_prints_one_clear_message(setup, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "tools.predict", f"--model={setup[3]}", "--images",
         str(tmp_path / "broken.png"), f"--output_dir={tmp_path / 'o'}"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    # Skipped with a warning (tests/test_predict_tool.py); predictions.json is still written.
    assert "cannot read image" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("tools.predict: 1 of 1 images skipped")


def test_saved_model_export_or_a_clear_missing_dependency_message(setup, tmp_path):
    pred = setup[4]
    try:
        import orbax.export  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install orbax-export"):
            export.save_saved_model(pred, str(tmp_path / "sm"))
        return
    import tensorflow as tf

    path = export.save_saved_model(pred, str(tmp_path / "sm"))
    images = np.random.default_rng(5).integers(0, 256, (2, S, S, 3), dtype=np.uint8)
    served = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    out = pred.predict(images)
    np.testing.assert_allclose(served["uv"].numpy(), out["uv"], atol=1e-4)
    np.testing.assert_allclose(served["z"].numpy(), out["z"], atol=1e-5)


def test_inference_variables_of_a_scanned_model_are_unrolled():
    # A model trained with model.scan_blocks=True exports the unrolled encoder layout that
    # RGBPoseNet (and every earlier export) has.
    from hpe_jax.models.resnet import scan_variables

    rng = np.random.default_rng(0)
    encoder = {"conv1": {"kernel": rng.normal(size=(7, 7, 3, 2))},
               **{f"layer3_{k}": {"conv1": {"kernel": rng.normal(size=(1, 1, 2, 2))}}
                  for k in range(3)}}
    stats = {f"layer3_{k}": {"bn1": {"mean": rng.normal(size=(2,))}} for k in range(3)}
    decoder = {"beta": np.ones(())}
    scanned = {"params": {"rgb_encoder": scan_variables(encoder), "decoder": decoder},
               "batch_stats": {"rgb_encoder": scan_variables(stats)}}
    assert "layer3_blocks" in scanned["params"]["rgb_encoder"]
    inf = export.inference_variables(scanned)
    assert sorted(inf["params"]["rgb_encoder"]) == ["conv1", "layer3_0", "layer3_1", "layer3_2"]
    np.testing.assert_array_equal(inf["params"]["rgb_encoder"]["layer3_2"]["conv1"]["kernel"],
                                  encoder["layer3_2"]["conv1"]["kernel"])
    np.testing.assert_array_equal(inf["batch_stats"]["rgb_encoder"]["layer3_1"]["bn1"]["mean"],
                                  stats["layer3_1"]["bn1"]["mean"])
