"""The ablation rows' config overrides: dotted fields set on a copy, misspellings refused."""

import pytest
from helpers import TRAINING_GROUP, tiny_config, tiny_run_config

from hpe_jax.experiments import ablation


def test_row_fields_are_set_on_a_copy_and_a_misspelt_field_is_refused():
    config = tiny_config()
    row = ablation._with_fields(config, {"loss.use_depth": False, "finetune.epochs": 0})
    assert row.loss.use_depth is False and row.finetune.epochs == 0
    assert config.loss.use_depth is True and config.finetune.epochs != 0
    assert not row.is_locked  # later stages may still add derived fields
    with pytest.raises(KeyError):
        ablation._with_fields(config, {"loss.lamda_c": 1.0})
    # Every row of the tables names real fields.
    for _, fields in ablation.TABLE3 + ablation.TABLE4 + ablation.TABLE4_FINETUNE:
        ablation._with_fields(config, fields or {})


def test_table_4ft_refuses_a_pretrained_dir_without_checkpoints_before_any_work(tmp_path):
    from hpe_jax.runtime.cpu import UsageError

    config = tiny_config()
    config.data.data_dir = str(tmp_path / "data")
    with pytest.raises(UsageError, match=r"--pretrained=.*nope holds neither checkpoints/"):
        ablation.run_table(config, str(tmp_path / "w"), "4ft", str(tmp_path / "nope"))
    assert not (tmp_path / "data").exists()  # nothing rendered


def test_rows_report_the_mean_and_each_seeds_value_per_split(tmp_path):
    runs = [{"step": 9, "val": {"known_root/epe_mean_mm": 30.0, "known_root/auc_20_50": 0.5,
                                "pck_2d": 0.2},
             "test": {"known_root/epe_mean_mm": 32.0, "known_root/auc_20_50": 0.4,
                      "pck_2d": 0.1}},
            {"step": 9, "val": {"known_root/epe_mean_mm": 34.0, "known_root/auc_20_50": 0.7,
                                "pck_2d": 0.4},
             "test": {"known_root/epe_mean_mm": 36.0, "known_root/auc_20_50": 0.6,
                      "pck_2d": 0.3}}]
    row = ablation._summarise("+L_c", {}, (0, 1), runs)
    epe = row["splits"]["val"]["known_root/epe_mean_mm"]
    assert epe == {"mean": 32.0, "values": [30.0, 34.0]} and row["seeds"] == [0, 1]
    ablation._write(str(tmp_path), "4", [row], ("val", "test"))
    md = (tmp_path / "table4.md").read_text()
    assert "seeds 0, 1" in md and "| +L_c | 32 (30, 34) |" in md and "(test)" in md
    # A row written by another process is kept, in the table's order.
    other = dict(row, row="M(y_R)")
    merged = ablation._merged(str(tmp_path), "4", ablation.TABLE4, [other])
    assert [r["row"] for r in merged] == ["M(y_R)", "+L_c"]


@pytest.mark.slow  # two fine-tunings and eight evaluations: about 4 minutes on a 2-core VM
@pytest.mark.xdist_group(TRAINING_GROUP)
def test_table_4ft_runs_each_row_per_seed_on_val_and_test(tiny_data_dir, tmp_path):
    from hpe_jax.training import loop

    config = tiny_run_config(tiny_data_dir)
    pre = config.copy_and_resolve_references()
    pre.stop_after_steps = loop.make_plan(config).pretrain_steps
    loop.train(pre, str(tmp_path / "pre"))
    rows = ablation.run_table(config, str(tmp_path / "abl"), "4ft", str(tmp_path / "pre"),
                              rows=(0, 2), seeds=(0, 1))
    assert [r["row"] for r in rows] == ["pre-trained, no adaptation", "+L_l +L_d (EMA teacher)"]
    base, method = rows
    for split in ("val", "test"):
        values = method["splits"][split]["known_root/epe_mean_mm"]["values"]
        assert len(values) == 2 and all(v == v for v in values)
        # No adaptation: both seeds evaluate the same switch checkpoint.
        same = base["splits"][split]["known_root/epe_mean_mm"]["values"]
        assert same[0] == same[1]
    assert method["splits"]["val"] != method["splits"]["test"]
    assert (tmp_path / "abl" / "table4ft" / ablation._slug(method["row"]) / "seed1").is_dir()
    # From a network file (the student at the switch): no pre-training, checkpoint 0 is the
    # baseline, and the one-pass row fine-tunes from it.
    from hpe_jax.training import checkpoint
    from hpe_jax.training.factory import save_variables

    switch = loop.make_plan(config).pretrain_steps
    variables, _ = checkpoint.load_variables(str(tmp_path / "pre"), switch, prefer_teacher=False)
    save_variables(str(tmp_path / "net"), variables, {"what": "test network"})
    base_f, one_pass = ablation.run_table(config, str(tmp_path / "abl_file"), "4ft",
                                          str(tmp_path / "net"), rows=(0, 6), seeds=(0,),
                                          splits=("val",))
    assert one_pass["row"] == "+L_l +L_d, one-pass pseudo-labels"
    assert base_f["step"] == 0
    assert one_pass["step"] == loop.make_plan(config).finetune_steps
    assert one_pass["splits"]["val"] != base_f["splits"]["val"]
