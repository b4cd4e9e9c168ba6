"""evaluate_checkpoint / tools/evaluate.py on a tiny training checkpoint and synthetic_hands
target_tiny (32 test examples, batch 12 that does not divide them)."""

import copy
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from helpers import random_params, tiny_config
from PIL import Image

import hpe_jax.data  # noqa: F401  (registers synthetic_hands)
from hpe_jax import export
from hpe_jax.data import pipeline
from hpe_jax.evaluation.evaluator import compute_metrics
from hpe_jax.evaluation.report import FILES
from hpe_jax.evaluation.run import evaluate_checkpoint
from hpe_jax.training import checkpoint, factory
from hpe_jax.training.state import TrainState

SPLIT_SIZE, STEP = 32, 7
ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def data_dir(request, tmp_path_factory):
    """The session's tiny datasets where a conftest provides them (`tiny_data_dir`), else
    target_tiny built here into a tmp dir."""
    try:
        return request.getfixturevalue("tiny_data_dir")
    except pytest.FixtureLookupError:
        pass
    path = str(tmp_path_factory.mktemp("tfds"))
    # Train capped at the test split's size: only the test split is evaluated.
    tfds.builder("synthetic_hands/target_tiny", data_dir=path).download_and_prepare(
        download_config=tfds.download.DownloadConfig(max_examples_per_split=SPLIT_SIZE))
    return path


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """(config, workdir): a fine-tuning-phase checkpoint whose EMA teacher differs from the
    student, and a config on target_tiny with eval batch 12 (does not divide 32)."""
    config = tiny_config()
    config.data.target = "synthetic_hands/target_tiny"
    config.data.data_dir = data_dir
    config.eval_batch_size = 12
    model = factory.build_model(config.model, None)
    state = TrainState.create(random_params(model, 32, 0), optax.adam(1e-3))
    teacher = random_params(model, 32, 1)
    state = state.replace(step=jnp.int32(STEP), teacher_params=teacher["params"],
                          teacher_batch_stats=teacher["batch_stats"])
    workdir = str(tmp_path_factory.mktemp("run"))
    checkpoint.save(checkpoint.make_manager(workdir, 2), state, wait=True)
    return config, workdir


@pytest.fixture(scope="module")
def teacher_eval(run):
    config, workdir = run
    return evaluate_checkpoint(config, workdir)


def test_writes_every_file_with_the_right_contents(run, teacher_eval):
    config, workdir = run
    res = teacher_eval
    assert res.output_dir == os.path.join(workdir, f"eval_{STEP}")
    assert sorted(os.listdir(res.output_dir)) == sorted(FILES)
    assert res.step == STEP and res.weights == "teacher"

    with open(os.path.join(res.output_dir, "metrics.json")) as f:
        doc = json.load(f)
    assert doc["num_samples"] == SPLIT_SIZE == doc["split_size"]
    assert doc["metrics"]["num_samples"] == SPLIT_SIZE
    assert (doc["dataset"], doc["split"], doc["step"]) == ("synthetic_hands/target_tiny", "test",
                                                           STEP)
    assert doc["checkpoint"].endswith(os.path.join("checkpoints", str(STEP)))
    assert doc["weights"] == "teacher"
    assert doc["metrics"]["known_root/epe_mean_mm"] == pytest.approx(
        res.metrics["known_root/epe_mean_mm"])
    assert len(doc["per_joint"]["pck_2d"]) == 21 and "auc_20_50" in doc["info"]

    with np.load(os.path.join(res.output_dir, "predictions.npz")) as npz:
        a = dict(npz)
    np.testing.assert_array_equal(a["index"], np.arange(SPLIT_SIZE))
    for key, shape in (("pred_3d", (SPLIT_SIZE, 21, 3)), ("gt_3d", (SPLIT_SIZE, 21, 3)),
                       ("pred_uv", (SPLIT_SIZE, 21, 2)), ("gt_uv", (SPLIT_SIZE, 21, 2)),
                       ("visibility", (SPLIT_SIZE, 21))):
        assert a[key].shape == shape, key
    np.testing.assert_array_equal(a["output_size"], np.full(SPLIT_SIZE, 8))
    # The saved predictions reproduce the reported metrics exactly.
    assert compute_metrics(a)[0] == pytest.approx(res.metrics, nan_ok=True)
    # The ground truth is the eval split's, in order.
    from hpe_jax.data import pipeline

    ds = pipeline.eval_dataset("synthetic_hands/target_tiny", "test",
                               data_dir=config.data.data_dir, input_size=32, output_size=8)
    gt = np.stack([ex["uv"] for ex in ds.as_numpy_iterator()])
    np.testing.assert_allclose(a["gt_uv"], gt, atol=1e-5)

    with open(os.path.join(res.output_dir, "metrics.md")) as f:
        md = f.read()
    assert "| metric | value |" in md and f"| samples | {SPLIT_SIZE} |" in md
    assert "| middle_mcp |" in md
    for name in ("pck_curve.png", "qualitative.png"):
        with Image.open(os.path.join(res.output_dir, name)) as im:
            pixels = np.asarray(im.convert("RGB"))
        assert min(pixels.shape[:2]) > 200 and pixels.std() > 10, name


def test_student_flag_and_checkpoint_selection(run, teacher_eval, tmp_path):
    config, workdir = run
    res = evaluate_checkpoint(config, workdir, checkpoint=str(STEP),
                              output_dir=str(tmp_path / "s"), student=True, num_qualitative=0)
    assert res.weights == "student" and res.metrics["num_samples"] == SPLIT_SIZE
    assert "qualitative.png" not in os.listdir(tmp_path / "s")
    # Same labels, different weights -> different predictions.
    np.testing.assert_array_equal(res.arrays["gt_3d"], teacher_eval.arrays["gt_3d"])
    assert not np.allclose(res.arrays["pred_uv"], teacher_eval.arrays["pred_uv"])


def test_online_teacher_run_is_evaluated_with_the_student_weights(run, teacher_eval):
    """finetune.teacher="online": the run's model is its student (its teacher follows the
    student), so evaluation reads the student even from a checkpoint whose teacher differs (as
    `load_training_checkpoint` does, tests/training/test_checkpoint.py)."""
    config, workdir = run
    online = copy.deepcopy(config)
    online.finetune.teacher = "online"
    res = evaluate_checkpoint(online, workdir, num_qualitative=0)
    assert res.weights == "student"
    assert not np.allclose(res.arrays["pred_uv"], teacher_eval.arrays["pred_uv"])


def test_exported_checkpoint_on_raw_images_and_boxes_reproduces_the_evaluation(
        run, teacher_eval, tmp_path):
    """Export (teacher weights) -> load -> predict on the dataset's raw images with its hand
    boxes and K: the Predictor's crop is the eval pipeline's, so its 2.5D output and its
    recovered-root 3D (with the true hand scale) equal the evaluator's."""
    config, workdir = run
    ck = checkpoint.load_training_checkpoint(config, workdir)
    pred = export.load(export.export_model(config, ck.variables, str(tmp_path / "exp")))
    # The stored JPEGs decoded as the pipeline decodes them (accurate IDCT), not with TFDS's
    # default fast IDCT: the same pixels the evaluator saw.
    raw = list(tfds.load("synthetic_hands/target_tiny", split="test[:4]",
                         data_dir=config.data.data_dir,
                         decoders={"image": tfds.decode.SkipDecoding()}).as_numpy_iterator())
    images = np.stack([pipeline.decode_image(ex["image"]).numpy() for ex in raw])
    gt = np.stack([ex["keypoints_3d"] for ex in raw])
    scale = np.linalg.norm(gt[:, 10] - gt[:, 9], axis=-1)
    out = pred.predict(images,
                       boxes=np.stack([ex["bbox"] for ex in raw]),
                       K=np.stack([ex["K"] for ex in raw]), scale_mm=scale)
    a = teacher_eval.arrays
    np.testing.assert_allclose(out["uv_output"], a["pred_uv"][:4], atol=1e-4)
    np.testing.assert_allclose(out["z"], a["pred_z"][:4], atol=1e-4)
    np.testing.assert_allclose(out["xyz"], a["pred_3d_recovered_root"][:4], rtol=1e-3)


def test_missing_checkpoint_or_wrong_config_give_clear_errors(run, tmp_path):
    config, workdir = run
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_checkpoint(config, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no checkpoint found"):
        evaluate_checkpoint(config, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 99 .* steps \[7\]"):
        evaluate_checkpoint(config, workdir, checkpoint=99)
    partial = tiny_config()
    del partial["eval_batch_size"]
    with pytest.raises(ValueError, match=r"no field config.eval_batch_size"):
        evaluate_checkpoint(partial, workdir)


def test_command_line_missing_checkpoint_prints_one_clear_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", "--config=configs/default.py",
         f"--workdir={tmp_path / 'nowhere'}"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tools.evaluate: ") and "does not exist" in last


def test_rgb_apply_is_cached_per_model_value():
    """Equal model configs (also ones differing only in fields the network does not take) share
    one apply function, hence the evaluator's compiled step; another network gets its own."""
    from hpe_jax.evaluation.run import _rgb_apply

    config = tiny_config()
    same = copy.deepcopy(config)
    same.model.init_from = "elsewhere"
    other = copy.deepcopy(config)
    other.model.proj_dim = config.model.proj_dim * 2
    fn = _rgb_apply(factory.build_model(config.model, None))
    assert _rgb_apply(factory.build_model(same.model, None)) is fn
    assert _rgb_apply(factory.build_model(other.model, None)) is not fn


def test_command_line_unknown_dataset_is_a_usage_error_with_few_suggestions(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", "--config=configs/smoke.py",
         f"--workdir={tmp_path / 'nowhere'}", "--dataset=synthetic_hands/targte_tiny"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("tools.evaluate: --dataset='synthetic_hands/targte_tiny' is not a "
                           "dataset") and "synthetic_hands/target_tiny" in last
