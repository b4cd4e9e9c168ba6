"""The experiment driver behind `make demo` / `make reproduce`, on the tiny synthetic configs."""

import json
import os

import jax
import numpy as np
import pytest
from helpers import TRAINING_GROUP, tiny_run_config

from hpe_jax.experiments import demo
from hpe_jax.training import loop, switch


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_experiment_reports_three_predictors_on_both_splits_and_resumes(tiny_data_dir,
                                                                        tmp_path):
    config = tiny_run_config(tiny_data_dir)
    workdir = str(tmp_path / "run")
    export = str(tmp_path / "shipped")
    report = demo.run_experiment(config, workdir, export_dir=export)

    with open(os.path.join(workdir, "report.json")) as f:
        saved = json.load(f)
    for model in ("mean_pose", "pretrained", "finetuned"):
        for split in ("source", "target"):
            metrics = saved["models"][model][split]
            assert np.isfinite(metrics["known_root/epe_mean_mm"]), (model, split)
            assert 0.0 <= metrics["pck_2d"] <= 1.0
    assert saved["models"]["pretrained"]["step"] == 4
    assert saved["models"]["finetuned"]["step"] == 8
    assert saved["seconds"]["total"] >= saved["seconds"]["pre-training"] > 0
    assert saved["pseudo_labels"]["step"] == [5, 6, 7, 8]
    assert all(0.0 <= k <= 1.0 for k in saved["pseudo_labels"]["kept"])
    # epsilon was calibrated at the switch (quantile 0.5 of the first teacher's C) and saved.
    with open(os.path.join(workdir, "train", switch.EPSILON_FILE)) as f:
        eps = json.load(f)
    assert eps["quantile"] == 0.5 and np.isfinite(eps["epsilon"])
    assert eps["confidence_quantiles"]["0.25"] <= eps["epsilon"]
    assert eps["epsilon"] <= eps["confidence_quantiles"]["0.75"]
    md = open(os.path.join(workdir, "report.md")).read()
    assert "## Glossary" in md and "gap closed" in md
    for png in ("pck_curves.png", "pseudo_labels.png", "qualitative.png"):
        assert os.path.getsize(os.path.join(workdir, png)) > 1000, png

    # A re-run trains nothing and evaluates nothing again: every stage is reused.
    before = dict(saved["seconds"])
    again = demo.run_experiment(config, workdir)
    assert again["seconds"] == before
    assert again["models"] == report["models"]

    # The exported pre-trained network starts a run without pre-training (the demo's path):
    # its step-0 evaluation is the pre-trained model's, number for number.
    with open(os.path.join(export, "meta.json")) as f:
        meta = json.load(f)
    assert meta["step"] == 4 and meta["learning_curve"]["step"]
    config.pretrain.epochs = 0
    config.model.init_variables = export
    config.finetune.epochs = 0
    shipped = demo.run_experiment(config, str(tmp_path / "from_shipped"))
    for split in ("source", "target"):
        np.testing.assert_allclose(
            shipped["models"]["pretrained"][split]["known_root/epe_mean_mm"],
            report["models"]["pretrained"][split]["known_root/epe_mean_mm"], rtol=1e-5)


@pytest.mark.xdist_group(TRAINING_GROUP)
def test_init_variables_refuses_a_network_of_another_shape(tiny_data_dir, tmp_path):
    from hpe_jax.training import factory

    config = tiny_run_config(tiny_data_dir)
    model = factory.build_model(config.model, None)
    tx = loop.make_optimizer(config, loop.make_plan(config))[0]
    # The file holds every variable of this config's network (values do not matter here).
    zeros = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                   factory.variable_shapes(config, model))
    factory.save_variables(str(tmp_path / "v"), zeros, {"note": "test"})
    config.model.init_variables = str(tmp_path / "v")
    loaded = factory.initial_state(config, model, tx)  # loads without compiling the init
    assert all(not np.any(x) for x in jax.tree_util.tree_leaves(loaded.variables))
    config.model.deconv_features = 8  # another decoder width
    other = factory.build_model(config.model, None)
    with pytest.raises(ValueError, match="does not fit this config's network"):
        factory.initial_state(config, other, tx)
