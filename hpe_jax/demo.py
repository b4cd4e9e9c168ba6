"""The embedded-benchmark demo: prepare data, pre-train, evaluate, fine-tune, evaluate, report.

Each stage is resumable: the datasets are cached in data_dir, training resumes from its
checkpoints (a finished run is not repeated), and the report compares the synthetic-only baseline
(the pre-trained checkpoint) with the fine-tuned model on the target test split.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import ml_collections
from absl import logging

HEADLINE = (
    ("known_root/epe_mean_mm", "3D EPE (mm, root and scale known)", "lower"),
    ("known_root/epe_median_mm", "3D median EPE (mm)", "lower"),
    ("known_root/auc_20_50", "3D PCK AUC 20-50 mm", "higher"),
    ("known_root/auc_0_50", "3D PCK AUC 0-50 mm", "higher"),
    ("procrustes/epe_mean_mm", "PA-EPE (mm)", "lower"),
    ("recovered_root/epe_mean_mm", "3D EPE, root depth recovered (mm)", "lower"),
    ("pck_2d", "2D PCK@0.05", "higher"),
    ("pck_2d_tllib", "2D PCK@0.05 (TLlib/RegDA)", "higher"),
)


def prepare_datasets(config: ml_collections.ConfigDict) -> None:
    """Builds (once) the rendered datasets the config names, with parallel rendering.

    Only `synthetic_hands` is built here: it needs no download. Real datasets are built by the
    user with tools/tfds_build.py from their own download (the pipeline says so if one is
    missing).
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415

    import hpe_jax.data  # noqa: F401, PLC0415  (registers the builders)

    os.environ.setdefault("HPE_JAX_RENDER_WORKERS", str(os.cpu_count() or 1))
    for name in (config.data.source, config.data.target):
        if not name.startswith("synthetic_hands"):
            continue
        builder = tfds.builder(name, data_dir=config.data.data_dir or None)
        if not builder.is_prepared():
            logging.info("Rendering %s into %s", name, builder.data_dir)
            builder.download_and_prepare()


def _timed(stages: dict, name: str, fn: Callable, *args, **kwargs):
    logging.info("=== %s ===", name)
    start = time.time()
    out = fn(*args, **kwargs)
    stages[name] = round(time.time() - start, 1)
    logging.info("=== %s done in %.1f s ===", name, stages[name])
    return out


def override(config: ml_collections.ConfigDict, fields: dict) -> ml_collections.ConfigDict:
    """A copy of `config` with dotted fields replaced, e.g. {"loss.use_depth": False}."""
    config = ml_collections.ConfigDict(config.to_dict())
    for key, value in fields.items():
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise KeyError(f"config has no field {key!r}")
        node[leaf] = value
    return config


def run_demo(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Runs every stage; writes workdir/report.md and report.json; returns the report dict."""
    from hpe_jax.evaluation.run import evaluate_checkpoint  # noqa: PLC0415
    from hpe_jax.training import loop  # noqa: PLC0415

    train_dir = os.path.join(workdir, "train")
    stages: dict[str, float] = {}
    _timed(stages, "prepare data", prepare_datasets, config)
    plan = loop.make_plan(config)
    # Stop at the switch so the synthetic-only baseline can be evaluated, then resume.
    _timed(stages, "pre-training", loop.train_and_evaluate,
           override(config, {"stop_after_steps": plan.pretrain_steps}), train_dir)
    baseline = _timed(stages, "evaluate pre-trained", evaluate_checkpoint, config, train_dir,
                      plan.pretrain_steps, os.path.join(workdir, "eval_pretrained"))
    _timed(stages, "fine-tuning", loop.train_and_evaluate, config, train_dir)
    final = _timed(stages, "evaluate fine-tuned", evaluate_checkpoint, config, train_dir, None,
                   os.path.join(workdir, "eval_finetuned"))
    report = {
        "config": config.to_dict(),
        "plan": {"pretrain_steps": plan.pretrain_steps, "finetune_steps": plan.finetune_steps},
        "dataset": {"source": config.data.source, "target": config.data.target,
                    "eval_split": config.data.eval_split},
        "stages_seconds": stages,
        "total_seconds": round(sum(stages.values()), 1),
        "pretrained": {"step": baseline.step, "metrics": baseline.metrics,
                       "dir": baseline.output_dir},
        "finetuned": {"step": final.step, "weights": final.weights, "metrics": final.metrics,
                      "dir": final.output_dir},
    }
    b, f = baseline.metrics, final.metrics
    report["epe_ratio"] = f["known_root/epe_mean_mm"] / b["known_root/epe_mean_mm"]
    write_report(workdir, report)
    return report


def write_report(workdir: str, report: dict) -> None:
    """report.json and a markdown report.md with the metrics table, timings and figures."""
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    b, f_ = report["pretrained"]["metrics"], report["finetuned"]["metrics"]
    lines = [
        "# hpe_jax demo: synthetic render -> capture",
        "",
        f"Target: `{report['dataset']['target']}` split `{report['dataset']['eval_split']}` "
        f"({int(f_['num_samples'])} images). Source: `{report['dataset']['source']}`.",
        f"Pre-training {report['plan']['pretrain_steps']} steps, fine-tuning "
        f"{report['plan']['finetune_steps']} steps (EMA teacher's weights evaluated: "
        f"{report['finetuned']['weights']}).",
        "",
        "| metric | synthetic-only (pre-trained) | fine-tuned | better |",
        "|---|---|---|---|",
    ]
    for key, label, better in HEADLINE:
        if key in b and key in f_:
            lines.append(f"| {label} | {b[key]:.4g} | {f_[key]:.4g} | {better} |")
    lines += [
        "",
        f"EPE ratio fine-tuned / baseline: **{report['epe_ratio']:.3f}** "
        "(the paper: 0.61-0.78 on real data).",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in report["stages_seconds"].items()],
        f"| total | {report['total_seconds']} |",
        "",
    ]
    for tag, key in (("pre-trained", "pretrained"), ("fine-tuned", "finetuned")):
        rel = os.path.relpath(report[key]["dir"], workdir)
        lines += [f"## {tag}", "", f"![PCK curve]({rel}/pck_curve.png)",
                  f"![predictions (colour) vs ground truth]({rel}/qualitative.png)", ""]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines))
