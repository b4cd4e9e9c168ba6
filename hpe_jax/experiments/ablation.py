"""Re-runs the paper's ablations (Tables 3 and 4) on a config, one training run per row.

Table 4 (components, cumulative): M(y_R) -> +M(y_D) -> +M(y_F) -> +L_c -> +L_l -> +L_d.
The first four rows are pre-training only; +L_l and +L_d fine-tune from the +L_c row's
pre-trained checkpoint (copied into their workdirs), so that row is pre-trained once.
Table 3 (pre-training alternatives): l1 feature alignment, intra-modal contrast, intra-modal plus
direct RGB-depth contrast, ours; pre-training only.
Table "4ft" (the fine-tuning rows only, from one shared pre-trained checkpoint, e.g. the one
`make reproduce` wrote): no adaptation, +L_l, +L_l +L_d (the method, EMA teacher), the same with
the paper's online teacher, with BatchNorm statistics shared across the passes, with L_l
and L_d both off (the fine-tuning phase's other changes alone), and with one-pass
pseudo-labels (the RGB pass alone).
Each row runs once per seed and is evaluated on the target's val and test splits (val chooses,
test reports); the tables, with the mean and every seed's value, go to
<workdir>/table{3,4,4ft}.md/.json.
"""

from __future__ import annotations

import json
import os
import shutil

import ml_collections
import numpy as np
from absl import logging

from hpe_jax.data.prepare import prepare_datasets

_PRE = {"finetune.epochs": 0}
TABLE4 = (
    ("M(y_R)", dict(_PRE, **{"loss.use_depth": False, "loss.use_fused": False,
                             "loss.use_contrast": False})),
    ("+M(y_D)", dict(_PRE, **{"loss.use_fused": False, "loss.use_contrast": False})),
    ("+M(y_F)", dict(_PRE, **{"loss.use_contrast": False})),
    ("+L_c", dict(_PRE)),
    ("+L_l", {"loss.use_distill": False}),
    ("+L_d", {}),
)
TABLE3 = (
    ("l1 feature alignment", dict(_PRE, **{"loss.contrast_mode": "l1_align"})),
    ("intra-modal contrast", dict(_PRE, **{"loss.contrast_mode": "intra"})),
    ("intra + RGB-depth contrast", dict(_PRE, **{"loss.contrast_mode": "intra_cross"})),
    ("ours", dict(_PRE)),
)
TABLE4_FINETUNE = (
    ("pre-trained, no adaptation", None),
    ("+L_l (EMA teacher)", {"loss.use_distill": False}),
    ("+L_l +L_d (EMA teacher)", {}),
    ("+L_l +L_d, online teacher (the paper)", {"finetune.teacher": "online"}),
    ("+L_l +L_d, BatchNorm statistics shared", {"finetune.bn_stats": "shared"}),
    # The same fine-tuning with the target terms off: what the pseudo-labels and the distillation
    # add beyond what the fine-tuning phase does without them (the config's source
    # augmentations, AdaBN and BatchNorm statistics, more steps of L_s). Appended, so the
    # indices --rows names stay those of the rows above.
    ("L_s only (no L_l, no L_d)", {"loss.use_pseudo": False, "loss.use_distill": False}),
    # Eq. 8's pseudo-label from the RGB pass alone (p_R and rho(p_R)): the paper's claim that
    # the second, depth-attended pass makes better labels.
    ("+L_l +L_d, one-pass pseudo-labels", {"loss.pseudo_label_passes": 1}),
)
COLUMNS = (("known_root/epe_mean_mm", "EPE (mm)"), ("known_root/auc_20_50", "AUC 20-50"),
           ("pck_2d", "PCK@0.05"))


def _with_fields(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
    """A copy of `config` with the row's dotted fields set (ml_collections' own flattened update,
    on a locked copy so that a misspelt field is a KeyError, not a new field)."""
    row = config.copy_and_resolve_references()
    was_locked = row.is_locked
    row.lock()
    row.update_from_flattened_dict(fields)
    if not was_locked:
        row.unlock()
    return row


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()


def run_table(config: ml_collections.ConfigDict, workdir: str, table: str,
              pretrained: str | None = None, rows: tuple[int, ...] | None = None,
              seeds: tuple[int, ...] = (0,), splits: tuple[str, ...] = ("val", "test")
              ) -> list[dict]:
    """Trains and evaluates every row of `table` ('3', '4' or '4ft') once per seed; writes the
    markdown table (mean and every seed's value, per split).

    pretrained: for '4ft', what every row fine-tunes from: a training workdir (its switch
      checkpoint, step `pretrain_steps` of `config`) or a network file (a directory with
      variables.npz, e.g. assets/demo_pretrained: each row then starts from it with
      `model.init_variables` and no pre-training, its checkpoint 0).
    rows: only these row indices (the others already in table<N>.json are kept), so that rows
      can run in separate processes.
    seeds: `config.seed` of each run (the data order, augmentation and initialisation); one
      run per row and seed in <row>/seed<k>. Finished runs resume to their end, untrained.
    splits: the target splits every run is evaluated on (settings are chosen on val; test is
      reported).
    """
    from hpe_jax.training import loop

    spec = {"3": TABLE3, "4": TABLE4, "4ft": TABLE4_FINETUNE}[table]
    if table == "4ft" and not pretrained:
        raise ValueError("table 4ft fine-tunes a pre-trained run: pass its training workdir "
                         "(e.g. --pretrained=runs/reproduce/train)")
    from_file = table == "4ft" and os.path.isfile(os.path.join(pretrained, "variables.npz"))
    if (table == "4ft" and not from_file
            and not os.path.isdir(os.path.join(pretrained, "checkpoints"))):
        from hpe_jax.runtime.cpu import UsageError

        raise UsageError(f"--pretrained={pretrained} holds neither checkpoints/ nor "
                         "variables.npz; pass the pre-trained run's training workdir (e.g. "
                         "--pretrained=runs/reproduce/train) or a network file (e.g. "
                         "--pretrained=assets/demo_pretrained)")
    prepare_datasets(config)
    done = []
    for index, (label, fields) in enumerate(spec):
        if rows is not None and index not in rows:
            continue
        runs = []
        for seed in seeds:
            row_dir = os.path.join(workdir, f"table{table}", _slug(label), f"seed{seed}")
            overrides = dict(fields or {}, seed=seed)
            if from_file:
                overrides.update({"model.init_variables": pretrained, "pretrain.epochs": 0})
            row_config = _with_fields(config, overrides)
            pretrain_steps = loop.make_plan(row_config).pretrain_steps
            if from_file:
                if not os.path.isdir(os.path.join(row_dir, "checkpoints")):
                    loop.save_start(row_config, row_dir)
            elif table == "4ft":
                _seed_from(pretrained, row_dir, pretrain_steps)
            elif table == "4" and label in ("+L_l", "+L_d"):
                _seed_from(os.path.join(workdir, "table4", _slug("+L_c"), f"seed{seed}"),
                           row_dir, pretrain_steps)
            logging.info("=== Table %s row %s, seed %d ===", table, label, seed)
            if fields is not None:
                loop.train(row_config, row_dir)
            step = None if fields is not None else pretrain_steps
            runs.append(_evaluate_run(row_config, row_dir, step, splits))
        done.append(_summarise(label, fields, seeds, runs))
        _write(workdir, table, _merged(workdir, table, spec, done), splits)
    return done


def _evaluate_run(config: ml_collections.ConfigDict, row_dir: str, step: int | None,
                  splits: tuple[str, ...]) -> dict:
    """{split: {metric: value}} of one run's checkpoint `step` (None: the latest)."""
    from hpe_jax.evaluation.run import evaluate_checkpoint

    out = {}
    for split in splits:
        r = evaluate_checkpoint(config, row_dir, step, os.path.join(row_dir, f"eval_{split}"),
                                split=split, num_qualitative=0)
        out[split] = {key: float(r.metrics[key]) for key, _ in COLUMNS}
        out["step"] = r.step
    return out


def _summarise(label: str, fields: dict | None, seeds: tuple[int, ...], runs: list[dict]
               ) -> dict:
    """A table row: per split and metric the mean over seeds and each seed's value."""
    row = {"row": label, "overrides": fields, "seeds": list(seeds),
           "step": runs[0]["step"], "splits": {}}
    for split in (k for k in runs[0] if k != "step"):
        row["splits"][split] = {key: {"mean": float(np.mean([r[split][key] for r in runs])),
                                      "values": [r[split][key] for r in runs]}
                                for key, _ in COLUMNS}
    return row


def _merged(workdir: str, table: str, spec: tuple, rows: list[dict]) -> list[dict]:
    """table<N>.json's rows (another process may have written some) updated with `rows`, in
    the table's order."""
    path = os.path.join(workdir, f"table{table}.json")
    known = {}
    if os.path.exists(path):
        with open(path) as f:
            known = {r["row"]: r for r in json.load(f) if "splits" in r}
    known.update({r["row"]: r for r in rows})
    return [known[label] for label, _ in spec if label in known]


def _seed_from(source_dir: str, row_dir: str, step: int) -> None:
    """Copies the pre-trained checkpoint of another row so this row only fine-tunes."""
    src = os.path.join(source_dir, "checkpoints", str(step))
    dst = os.path.join(row_dir, "checkpoints", str(step))
    if not os.path.isdir(dst):
        if not os.path.isdir(src):
            raise FileNotFoundError(f"{src} is missing: run the +L_c row (table 4) or the "
                                    "pre-training (table 4ft) first")
        shutil.copytree(src, dst)


def _write(workdir: str, table: str, rows: list[dict], splits: tuple[str, ...]) -> None:
    with open(os.path.join(workdir, f"table{table}.json"), "w") as f:
        json.dump(rows, f, indent=2, default=float)
    title = "4, fine-tuning rows," if table == "4ft" else table
    seeds = rows[0]["seeds"] if rows else []
    lines = [f"# Table {title} on the embedded benchmark (target splits; mean over seeds "
             f"{', '.join(map(str, seeds))}, each seed's value in brackets)", "",
             "| row | " + " | ".join(f"{name} ({split})" for split in splits
                                   for _, name in COLUMNS) + " |",
             "|---|" + "---|" * (len(COLUMNS) * len(splits))]
    for r in rows:
        cells = []
        for split in splits:
            for key, _ in COLUMNS:
                v = r["splits"][split][key]
                cells.append(f"{v['mean']:.4g} ({', '.join(f'{x:.4g}' for x in v['values'])})")
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    with open(os.path.join(workdir, f"table{table}.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
