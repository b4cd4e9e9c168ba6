"""`make real`: adaptation on a real set's unlabelled pool, judged on its labelled val split
(hgc_real in a fixture of its layout, the tiny network)."""

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from helpers import TRAINING_GROUP, tiny_run_config
from hgc_fixture import write_hgc_fixture

from configs import real
from hpe_jax.experiments import demo


def test_make_real_passes_the_folder_and_the_config():
    out = subprocess.run(["make", "-n", "real", "REAL_DIR=/some/where/hgc"], capture_output=True,
                         text=True, check=True, cwd=os.path.dirname(os.path.dirname(
                             os.path.dirname(__file__)))).stdout
    line = next(x for x in out.splitlines() if "tools.demo" in x)
    assert "--config=configs/real.py" in line and "--workdir=runs/real" in line
    assert "--config.data.image_folder=/some/where/hgc" in out
    c = real.get_config()
    assert (c.data.target, c.data.target_split, c.data.target_eval_split) == (
        "hgc_real", "pool", "val")
    assert c.pretrain.epochs == 0 and c.model.init_variables  # starts from a network


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_real_run_adapts_on_the_pool_and_reports_val(tiny_data_dir, tmp_path):
    write_hgc_fixture(tmp_path / "hgc", n=48, withheld=[i for i in range(48) if i % 4],
                      size=64)
    data_dir = str(tmp_path / "data")
    shutil.copytree(f"{tiny_data_dir}/synthetic_hands", f"{data_dir}/synthetic_hands")
    config = tiny_run_config(data_dir)
    ours = real.get_config()
    for key in ("target", "target_split", "target_eval_split"):
        config.data[key] = ours.data[key]
    config.data.image_folder = str(tmp_path / "hgc")
    report = demo.run_demo(config, str(tmp_path / "real"))

    with open(tmp_path / "real" / "report.json") as f:
        saved = json.load(f)
    assert "real photographs" in saved["title"]
    assert saved["dataset"]["target"] == "hgc_real"
    assert saved["dataset"]["target_eval_split"] == "val"
    assert saved["plan"]["finetune_steps"] == 3  # 36 pool photos, unlabelled batches of 16
    for model in ("mean_pose", "pretrained", "finetuned"):
        assert np.isfinite(saved["models"][model]["target"]["known_root/epe_mean_mm"])
    with open(os.path.join(report["dirs"]["evaluate fine-tuned (target)"],
                           "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["split"] == "val" and metrics["num_samples"] == 12
    md = open(tmp_path / "real" / "report.md").read()
    assert "target's `val` split" in md
    assert os.path.getsize(tmp_path / "real" / "qualitative.png") > 1000
