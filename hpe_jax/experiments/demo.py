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

import json
import os
import time
from collections.abc import Callable
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from hpe_jax.data.prepare import prepare_datasets
from hpe_jax.runtime import cli

HEADLINE = (
    ("known_root/epe_mean_mm", "3D EPE (mm, root and scale known)", "lower"),
    ("known_root/auc_20_50", "3D PCK AUC 20-50 mm", "higher"),
    ("procrustes/epe_mean_mm", "PA-EPE (mm)", "lower"),
    ("pck_2d", "2D PCK@0.05", "higher"),
    ("recovered_root_lsq/epe_mean_mm", "3D EPE, root depth fitted (mm)", "lower"),
)
GLOSSARY = (
    ("3D EPE", "mean distance between predicted and true 3D joints, per joint over the test "
     "images then averaged over joints; the root joint (middle MCP) position and the hand's "
     "scale (its middle MCP-PIP bone) are given, as in SemiHand's protocol"),
    ("3D PCK AUC 20-50 mm", "area under the curve of the share of joints within a distance "
     "threshold, thresholds 20 to 50 mm, normalised to [0, 1]"),
    ("PA-EPE", "3D EPE after the best similarity alignment (Procrustes) of each predicted hand "
     "to the truth: the error of the hand's shape alone"),
    ("2D PCK@0.05", "share of visible joints whose predicted 2D position is within 5% of the "
     "heatmap side of the truth"),
    ("3D EPE, root depth fitted", "the absolute 3D error when the root depth is not given but "
     "fitted to all predicted bones by least squares (scale given); it multiplies 2D errors "
     "into depth errors, so it is large for imprecise models"),
    ("gap closed", "(target EPE pre-trained - target EPE fine-tuned) / (target EPE pre-trained "
     "- source EPE pre-trained): the share of the domain gap that adaptation removes"),
    ("kept", "share of unlabelled target images whose pseudo-label passed the confidence test "
     "C(r) <= epsilon in a fine-tuning step"),
)
DOMAINS = ("source", "target")


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
    from hpe_jax.evaluation.run import evaluate_checkpoint

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
    import jax.numpy as jnp

    from hpe_jax.data import pipeline
    from hpe_jax.evaluation import report
    from hpe_jax.evaluation.evaluator import Evaluator

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
    report.write_metrics_json(os.path.join(out_dir, "metrics.json"), result,
                              {"predictor": "mean pose of the split", "dataset": dataset})
    return {"metrics": {k: float(v) for k, v in result.metrics.items()}, "dir": out_dir}


def scalar_curves(train_dir: str, tags: tuple[str, ...],
                  max_step: int | None = None) -> dict[str, list[float]]:
    """Logged scalars from the run's TensorBoard events: {'step': [...], tag: [...], ...} at
    the log steps where every tag was written (a resumed run's repeated steps: the last)."""
    import glob

    import tensorflow as tf
    from tensorflow.core.util import event_pb2

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


def _save_start(config: ml_collections.ConfigDict, train_dir: str) -> None:
    """No pre-training (pretrain.epochs = 0): the initial state (e.g. `model.init_variables`,
    the shipped pre-trained network) becomes checkpoint 0, the baseline that is evaluated."""
    from hpe_jax.training import checkpoint, loop
    from hpe_jax.training.factory import build_model, initial_state

    tx, _ = loop.make_optimizer(config, loop.make_plan(config))
    state = initial_state(config, build_model(config.model, "batch"), tx)
    manager = checkpoint.make_manager(train_dir, config.keep_checkpoints)
    checkpoint.save(manager, state, wait=True)
    manager.wait_until_finished()


def export_pretrained(config: ml_collections.ConfigDict, train_dir: str, step: int,
                      directory: str, evaluations: dict) -> str:
    """Writes the pre-trained (switch) checkpoint's variables where the demo starts from, with
    the config, the commit and the learning curve it came from (meta.json)."""
    import subprocess

    from hpe_jax.training import checkpoint
    from hpe_jax.training.factory import save_variables

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
    from hpe_jax.training import config_checks, loop

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
        stages.run("pre-trained start", lambda: _save_start(config, train_dir), done=have >= 0)
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
        "summary": summarize(models),
        "pseudo_labels": pseudo_label_curve(train_dir),
        "dirs": {k: v["dir"] for k, v in results.items() if isinstance(v, dict) and "dir" in v},
    }
    write_report(workdir, report)
    return report


def summarize(models: dict) -> dict[str, float]:
    """The headline numbers: EPEs, the domain gap and the share of it fine-tuning closes."""
    key = "known_root/epe_mean_mm"
    src, tgt = models["pretrained"]["source"][key], models["pretrained"]["target"][key]
    ft = models["finetuned"]["target"][key]
    gap = tgt - src
    return {
        "source_epe_pretrained_mm": src,
        "target_epe_pretrained_mm": tgt,
        "target_epe_finetuned_mm": ft,
        "target_over_source": tgt / src,
        "gap_closed": (tgt - ft) / gap if gap > 0 else float("nan"),
        "pck_2d_gain_target": (models["finetuned"]["target"]["pck_2d"]
                               - models["pretrained"]["target"]["pck_2d"]),
        "mean_pose_target_epe_mm": models["mean_pose"]["target"][key],
    }


def write_report(workdir: str, report: dict) -> None:
    """report.json, and report.md with the metrics table, glossary, timings and figures."""
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    _plot_curves(os.path.join(workdir, "pck_curves.png"), report)
    _plot_pseudo(os.path.join(workdir, "pseudo_labels.png"), report["pseudo_labels"])
    _qualitative(os.path.join(workdir, "qualitative.png"), report)
    m, s = report["models"], report["summary"]
    ds = report["dataset"]
    lines = [
        f"# {report['title']}",
        "",
        f"Source (labelled RGB + depth): `{ds['source']}`; target (unlabelled RGB): "
        f"`{ds['target']}`; evaluated on the source's `{ds['eval_split']}` split and the "
        f"target's `{ds.get('target_eval_split', ds['eval_split'])}` split. Pre-training "
        f"{report['plan']['pretrain_steps']} steps, fine-tuning {report['plan']['finetune_steps']}"
        f" steps; fine-tuned weights: {m['finetuned'].get('weights', '?')}.",
        "",
        "| metric | split | mean pose | pre-trained | fine-tuned | better |",
        "|---|---|---|---|---|---|",
    ]
    for key, label, better in HEADLINE:
        for d in DOMAINS:
            vals = [m[k][d].get(key) for k in ("mean_pose", "pretrained", "finetuned")]
            if any(v is None for v in vals):
                continue
            lines.append(f"| {label} | {d} | " + " | ".join(f"{v:.4g}" for v in vals)
                         + f" | {better} |")
    kept = report["pseudo_labels"]["kept"]
    lines += [
        "",
        f"- Domain gap: the pre-trained model's target EPE is **{s['target_over_source']:.2f}x** "
        f"its source EPE ({s['target_epe_pretrained_mm']:.2f} vs "
        f"{s['source_epe_pretrained_mm']:.2f} mm).",
        (f"- Fine-tuning closes **{100 * s['gap_closed']:.0f}%** of that gap on the target "
         if s["gap_closed"] == s["gap_closed"] else
         "- The target scores no worse than the source: there is no gap to close; fine-tuning "
         "moves the target ")
        + f"({s['target_epe_pretrained_mm']:.2f} -> {s['target_epe_finetuned_mm']:.2f} mm); "
        f"2D PCK@0.05 on the target changes by {s['pck_2d_gain_target']:+.3f}.",
    ]
    if kept:
        lines.append(f"- Pseudo-labels kept per step: {min(kept):.2f} to {max(kept):.2f} "
                     f"(first {kept[0]:.2f}, last {kept[-1]:.2f}); see pseudo_labels.png.")
    lines += ["", "## Glossary", ""] + [f"- **{k}**: {v}." for k, v in GLOSSARY]
    lines += ["", "## Time (seconds, this machine)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["seconds"].items()]
    lines += [
        "", "## Figures", "",
        "3D PCK (root and scale known) of the three predictors on both evaluated splits:", "",
        "![PCK curves](pck_curves.png)", "",
        "Pseudo-labels during fine-tuning (kept share and mean confidence C):", "",
        "![pseudo-labels](pseudo_labels.png)", "",
        "Target images of its evaluated split, pre-trained (left of each pair) and fine-tuned "
        "(right) predictions in red, ground truth in green:", "",
        "![qualitative](qualitative.png)", "",
    ]
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write("\n".join(lines))


def _figure(figsize, rows=1, cols=1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _plot_curves(path: str, report: dict) -> None:
    """Both domains side by side, the three predictors' 3D PCK curves in each."""
    fig, axes = _figure((10.0, 4.0), 1, 2)
    for ax, d in zip(axes[0], DOMAINS, strict=True):
        for model, style in (("mean_pose", ":"), ("pretrained", "--"), ("finetuned", "-")):
            src = report["dirs"].get(_stage_name(model, d))
            if not src:
                continue
            with open(os.path.join(src, "metrics.json")) as f:
                data = json.load(f)
            curve = data.get("curves", {}).get("known_root/pck_0_50")
            if curve is None:
                continue
            t, c = np.asarray(curve["thresholds_mm"]), np.asarray(curve["pck"])
            auc = report["models"][model][d].get("known_root/auc_20_50", float("nan"))
            ax.plot(t, c, style, label=f"{model} (AUC 20-50 {auc:.3f})")
        ax.axvspan(20, 50, color="0.93", zorder=0)
        split = report["dataset"].get(f"{d}_eval_split" if d == "target" else "eval_split")
        ax.set(title=f"{d}: {split or 'test'} split", xlabel="threshold (mm)", ylabel="3D PCK",
               xlim=(0, 50), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=100)


def _stage_name(model: str, domain: str) -> str:
    return {"mean_pose": f"mean pose ({domain})",
            "pretrained": f"evaluate pre-trained ({domain})",
            "finetuned": f"evaluate fine-tuned ({domain})"}[model]


def _plot_pseudo(path: str, curve: dict) -> None:
    fig, axes = _figure((6.0, 3.5))
    ax = axes[0, 0]
    if curve["step"]:
        ax.plot(curve["step"], curve["kept"], label="kept share")
        ax2 = ax.twinx()
        ax2.plot(curve["step"], curve["confidence"], color="C1", label="mean C(r)")
        ax2.set_ylabel("mean C(r)")
        ax2.legend(loc="upper right", fontsize=8)
    ax.set(xlabel="step", ylabel="kept share", ylim=(0, 1.02), title="pseudo-labels")
    if curve["step"]:
        ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=100)


def _qualitative(path: str, report: dict, n: int = 6) -> None:
    """Pairs of panels on the first n target test images: pre-trained, then fine-tuned."""
    from hpe_jax.evaluation.report import plot_qualitative

    dirs = [report["dirs"].get(_stage_name(k, "target")) for k in ("pretrained", "finetuned")]
    if not all(dirs):
        return
    preds = [np.load(os.path.join(d, "predictions.npz")) for d in dirs]
    images = _first_images(report, n)
    if images is None:
        return
    idx = np.searchsorted(preds[0]["index"], images["index"])
    pics, pred_uv, gt_uv, vis, titles = [], [], [], [], []
    for row, i in zip(idx, images["index"], strict=True):
        for name, p in zip(("pre-trained", "fine-tuned"), preds, strict=True):
            err = np.linalg.norm(p["pred_uv"][row] - p["gt_uv"][row], axis=-1).mean()
            pics.append(images["image"][list(images["index"]).index(i)])
            pred_uv.append(p["pred_uv"][row])
            gt_uv.append(p["gt_uv"][row])
            vis.append(p["visibility"][row])
            titles.append(f"#{int(i)} {name}: {err:.2f} px")
    plot_qualitative(path, np.stack(pics), np.stack(pred_uv), np.stack(gt_uv), np.stack(vis),
                     int(preds[0]["output_size"][0]), titles, columns=4)


def _first_images(report: dict, n: int) -> dict | None:
    from hpe_jax.data import pipeline
    from hpe_jax.data.preprocess import denormalize_image

    cfg = report["config"]["data"]
    split = cfg.get("target_eval_split") or cfg["eval_split"]
    ds = pipeline.eval_dataset(cfg["target"], split, data_dir=cfg["data_dir"] or None,
                               input_size=cfg["input_size"], output_size=cfg["output_size"])
    images, index = [], []
    for ex in ds.take(n).as_numpy_iterator():
        images.append(np.asarray(denormalize_image(ex["image"])))
        index.append(int(ex["index"]))
    if not images:
        return None
    order = np.argsort(index)
    return {"image": np.stack(images)[order], "index": np.asarray(index)[order]}


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
