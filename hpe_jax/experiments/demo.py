"""The embedded-benchmark experiment: data, pre-training, evaluation, fine-tuning, report.

`make demo` (configs/demo.py) and `make reproduce` (configs/reproduce.py) both run
`run_experiment`. Every stage is resumable: the datasets are cached in data_dir, training resumes
from its checkpoints, finished evaluations are kept in `workdir/stages.json` (with each stage's
seconds, summed over interrupted runs), so re-running the same command continues where it
stopped and ends with the same report.

The report compares three predictors on each domain's labelled evaluation split (`eval_splits`):
- mean_pose: one constant 2.5D pose (the evaluated split's own mean uv and z) for every image,
  lifted with the known root and scale: what a model that learned nothing about the image scores;
- pretrained: the checkpoint at the switch (labelled synthetic source data only);
- finetuned: the final checkpoint (the EMA teacher's weights where there is one).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import ml_collections
import tensorflow as tf
from absl import logging
from tensorflow.core.util import event_pb2

from hpe_jax.data import pipeline
from hpe_jax.data.prepare import prepare_datasets
from hpe_jax.evaluation.evaluator import Evaluator
from hpe_jax.evaluation.report import (
    DOMAINS,
    summarize_experiment,
    write_experiment_report,
    write_metrics_json,
)
from hpe_jax.evaluation.run import evaluate_checkpoint
from hpe_jax.runtime import cli
from hpe_jax.training import checkpoint, config_checks, loop
from hpe_jax.training.factory import save_variables


def _stopping_at(config: ml_collections.ConfigDict, step: int) -> ml_collections.ConfigDict:
    """A copy of `config` whose training stops after `step` (the pre-training stage's end)."""
    stopping = config.copy_and_resolve_references()
    stopping.stop_after_steps = step
    return stopping


class _Stages:
    """Stage results and seconds in workdir/stages.json, so that a re-run skips finished stages.

    The seconds of a stage add up over runs (an interrupted stage keeps what it spent)."""

    def __init__(self, workdir: str, key: dict):
        self.path = os.path.join(workdir, "stages.json")
        data = {}
        if os.path.exists(self.path):
            with open(self.path) as f:
                data = json.load(f)
        if data.get("key") != key:  # another config in this workdir: start the bookkeeping over
            data = {"key": key, "seconds": {}, "results": {}}
        self.data = data

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=float)
        os.replace(tmp, self.path)

    def run(self, name: str, fn: Callable[[], Any], done: bool = False) -> Any:
        if name in self.data["results"] or done:
            return self.data["results"].get(name)
        # The console shows a stage once, when it ends, with its time (--verbose: also its start).
        logging.log(logging.INFO if cli.verbose() else logging.DEBUG, "%s ...", name)
        start = time.time()
        try:
            out = fn()
        finally:
            seconds = self.data["seconds"]
            seconds[name] = round(seconds.get(name, 0.0) + time.time() - start, 1)
            self._save()
        self.data["results"][name] = out
        self._save()
        logging.warning("=== %s: %.0f s ===", name, self.data["seconds"][name])
        return out


def _latest_step(train_dir: str) -> int:
    """The newest checkpoint step in train_dir/checkpoints, -1 if there is none."""
    path = os.path.join(train_dir, "checkpoints")
    steps = [int(d) for d in os.listdir(path) if d.isdigit()] if os.path.isdir(path) else []
    return max(steps, default=-1)


def _evaluate(config, train_dir, step, out_dir, dataset, split) -> dict:
    r = evaluate_checkpoint(config, train_dir, step, out_dir, dataset=dataset, split=split)
    return {"step": r.step, "weights": r.weights, "dir": r.output_dir,
            "metrics": {k: float(v) for k, v in r.metrics.items()}}


def eval_splits(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The labelled split each domain is evaluated on: the source's `data.eval_split`, the
    target's `data.target_eval_split` where set (a real target's val), else the same."""
    return {"source": config.data.eval_split,
            "target": config.data.target_eval_split or config.data.eval_split}


def evaluate_mean_pose(config: ml_collections.ConfigDict, dataset: str, out_dir: str,
                       split: str | None = None) -> dict:
    """The constant predictor: the split's mean uv (output px) and z for every image.

    It is lifted to 3D like a model's prediction (known root and scale), so its numbers are the
    floor a model must beat to have learned anything from the image."""
    ds = pipeline.eval_dataset(dataset, split or config.data.eval_split,
                               data_dir=config.data.data_dir or None,
                               input_size=config.data.input_size,
                               output_size=config.data.output_size)
    uv, z, n = 0.0, 0.0, 0
    for ex in ds.as_numpy_iterator():
        uv, z, n = uv + ex["uv"], z + ex["z"], n + 1
    mean_uv, mean_z = jnp.asarray(uv / n, jnp.float32), jnp.asarray(z / n, jnp.float32)

    def constant(variables, images):
        del variables
        b = images.shape[0]
        return (jnp.broadcast_to(mean_uv, (b,) + mean_uv.shape),
                jnp.broadcast_to(mean_z, (b,) + mean_z.shape))

    result = Evaluator(constant, ds, global_batch_size=int(config.eval_batch_size),
                       output_size=config.data.output_size).run({})
    os.makedirs(out_dir, exist_ok=True)
    write_metrics_json(os.path.join(out_dir, "metrics.json"), result,
                       {"predictor": "mean pose of the split", "dataset": dataset})
    return {"metrics": {k: float(v) for k, v in result.metrics.items()}, "dir": out_dir}


def scalar_curves(train_dir: str, tags: tuple[str, ...],
                  max_step: int | None = None) -> dict[str, list[float]]:
    """Logged scalars from the run's TensorBoard events: {'step': [...], tag: [...], ...} at
    the log steps where every tag was written (a resumed run's repeated steps: the last)."""
    rows: dict[int, dict[str, float]] = {}
    for path in sorted(glob.glob(os.path.join(train_dir, "events.out.tfevents.*"))):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for v in event.summary.value:
                if v.tag in tags:
                    value = (float(tf.make_ndarray(v.tensor)) if v.HasField("tensor")
                             else float(v.simple_value))
                    rows.setdefault(int(event.step), {})[v.tag] = value
    steps = sorted(s for s, r in rows.items() if (max_step is None or s <= max_step)
                   and set(tags) & set(r))
    out: dict[str, list[float]] = {"step": steps}
    for tag in tags:
        out[tag] = [rows[s].get(tag, float("nan")) for s in steps]
    return out


def pseudo_label_curve(train_dir: str) -> dict[str, list[float]]:
    """Fine-tuning's logged pseudo-label statistics: {'step', 'kept', 'confidence'} lists."""
    c = scalar_curves(train_dir, ("pseudo/kept", "pseudo/confidence"))
    keep = [i for i, k in enumerate(c["pseudo/kept"]) if k == k]  # fine-tuning steps only
    return {"step": [c["step"][i] for i in keep], "kept": [c["pseudo/kept"][i] for i in keep],
            "confidence": [c["pseudo/confidence"][i] for i in keep]}


def export_pretrained(config: ml_collections.ConfigDict, train_dir: str, step: int,
                      directory: str, evaluations: dict) -> str:
    """Writes the pre-trained (switch) checkpoint's variables where the demo starts from, with
    the config, the commit and the learning curve it came from (meta.json)."""
    variables, _ = checkpoint.load_variables(train_dir, step, prefer_teacher=False)
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", False
    meta = {
        "what": "the dual-modality network pre-trained on synthetic_hands by `make reproduce` "
                "(source data only): the starting point of `make demo`",
        "step": step, "commit": commit, "uncommitted_changes": dirty,
        "config": config.to_dict(),
        "learning_curve": scalar_curves(train_dir, ("loss", "M_rgb/pose", "M_rgb/heatmap",
                                                    "L_s", "L_c"), max_step=step),
        "evaluations": evaluations,
    }
    return save_variables(directory, variables, meta)


def run_experiment(config: ml_collections.ConfigDict, workdir: str,
                   title: str = "hpe_jax on the embedded benchmark",
                   export_dir: str | None = None) -> dict:
    """Runs every stage; writes workdir/report.md and report.json; returns the report dict.

    export_dir: where to write the pre-trained network for the demo (`export_pretrained`).
    """
    config_checks.resolve(config)  # the derived sizes (output_size, uv_scale), once, here
    os.makedirs(workdir, exist_ok=True)
    train_dir = os.path.join(workdir, "train")
    # Finished stages are reused while these stay the same (other edits, e.g. a fine-tuning
    # setting, need the stale entries of stages.json removed, or a new workdir).
    stages = _Stages(workdir, {"source": config.data.source, "target": config.data.target,
                               "input_size": config.data.input_size,
                               "pretrain_epochs": config.pretrain.epochs})
    stages.run("prepare data", lambda: prepare_datasets(config))
    plan = loop.make_plan(config)
    switch = plan.pretrain_steps
    have = _latest_step(train_dir)
    if switch == 0:
        stages.run("pre-trained start", lambda: loop.save_start(config, train_dir), done=have >= 0)
    else:
        # Stop at the switch so the synthetic-only baseline can be evaluated, then resume.
        stages.run("pre-training", lambda: loop.train(
            _stopping_at(config, switch), train_dir) and None,
            done=have >= switch)
    datasets = {"source": config.data.source, "target": config.data.target}
    splits = eval_splits(config)
    for d in DOMAINS:
        stages.run(f"evaluate pre-trained ({d})", lambda d=d: _evaluate(
            config, train_dir, switch, os.path.join(workdir, f"eval_pretrained_{d}"),
            datasets[d], splits[d]))
        stages.run(f"mean pose ({d})", lambda d=d: evaluate_mean_pose(
            config, datasets[d], os.path.join(workdir, f"eval_mean_pose_{d}"), splits[d]))
    if export_dir and switch > 0:
        evaluations = {d: stages.data["results"][f"evaluate pre-trained ({d})"]["metrics"]
                       for d in DOMAINS}
        stages.run("export pre-trained", lambda: export_pretrained(
            config, train_dir, switch, export_dir, evaluations))
    stages.run("fine-tuning", lambda: loop.train(config, train_dir) and None,
               done=have >= plan.total_steps)
    for d in DOMAINS:
        stages.run(f"evaluate fine-tuned ({d})", lambda d=d: _evaluate(
            config, train_dir, None, os.path.join(workdir, f"eval_finetuned_{d}"),
            datasets[d], splits[d]))
    results = stages.data["results"]
    models = {
        "mean_pose": {d: results[f"mean pose ({d})"]["metrics"] for d in DOMAINS},
        "pretrained": {d: results[f"evaluate pre-trained ({d})"]["metrics"] for d in DOMAINS},
        "finetuned": {d: results[f"evaluate fine-tuned ({d})"]["metrics"] for d in DOMAINS},
    }
    models["pretrained"]["step"] = switch
    models["finetuned"]["step"] = results["evaluate fine-tuned (target)"]["step"]
    models["finetuned"]["weights"] = results["evaluate fine-tuned (target)"]["weights"]
    seconds = dict(stages.data["seconds"])
    seconds["total"] = round(sum(seconds.values()), 1)
    report = {
        "title": title,
        "config": config.to_dict(),
        "plan": {"pretrain_steps": plan.pretrain_steps, "finetune_steps": plan.finetune_steps},
        "dataset": {**datasets, "eval_split": splits["source"],
                    "target_eval_split": splits["target"]},
        "seconds": seconds,
        "models": models,
        "summary": summarize_experiment(models),
        "pseudo_labels": pseudo_label_curve(train_dir),
        "dirs": {k: v["dir"] for k, v in results.items() if isinstance(v, dict) and "dir" in v},
    }
    write_experiment_report(workdir, report)
    return report


def run_demo(config: ml_collections.ConfigDict, workdir: str,
             export_dir: str | None = None) -> dict:
    """`make demo` / `make reproduce`: `run_experiment` titled by the workdir's name."""
    name = os.path.basename(os.path.abspath(workdir))
    return run_experiment(config, workdir, title=f"hpe_jax {name}: {domain_names(config)}",
                          export_dir=export_dir)


def domain_names(config: ml_collections.ConfigDict) -> str:
    """'synthetic render -> capture' style words for the report's title, from the datasets."""
    words = {"synthetic_hands": "synthetic render", "hgc_real": "real photographs (hgc_real)",
             "image_folder": "your photos (image_folder)"}

    def name(dataset: str, default: str) -> str:
        base = dataset.split("/")[0]
        if base == "synthetic_hands":
            return default
        return words.get(base, dataset)

    return (f"{name(config.data.source, 'synthetic render')} -> "
            f"{name(config.data.target, 'synthetic capture')}")
