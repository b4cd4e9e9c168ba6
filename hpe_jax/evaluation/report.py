"""Writes an evaluation's files: metrics.json, metrics.md, predictions.npz and two PNGs.

    files = write_report(output_dir, result, meta, samples)   # result: evaluator.EvalResult

- metrics.json: {"metrics", "info", "per_joint", "curves"} of the result (NaN written as null)
  plus everything in `meta` (step, checkpoint, dataset, split, num_samples, ...).
- metrics.md: a markdown table of the headline metrics and one of per-joint values.
- predictions.npz: the result's per-sample arrays (`EvalResult.arrays`: index, pred_uv, gt_uv
  output px, pred_z, gt_z, pred_3d, pred_3d_recovered_root, gt_3d mm, visibility,
  output_size); `evaluator.compute_metrics` recomputes every metric from it.
- pck_curve.png: the 3D PCK curves (0-50 mm) of the three protocols with their AUCs.
- qualitative.png: predicted (red) against ground-truth (green) skeletons on input crops.

An experiment (`experiments.demo`: mean pose, pre-trained and fine-tuned on both domains) has
its own report, `write_experiment_report(workdir, report)`: report.json, report.md (the
comparison table, the domain gap, a glossary, the stages' seconds) and three PNGs.

Plots use matplotlib's Agg canvas directly (no pyplot, no global backend change).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hpe_jax.evaluation.evaluator import GROUPS_3D, EvalResult
from hpe_jax.hand import camera
from hpe_jax.hand.skeleton import BONES, JOINT_NAMES

FILES = ("metrics.json", "metrics.md", "predictions.npz", "pck_curve.png", "qualitative.png")

# Rows of the headline table: (metric key, label, format).
_HEADLINE = (
    ("num_samples", "samples", "{:.0f}"),
    ("pck_2d", "2D PCK@0.05 (continuous)", "{:.4f}"),
    ("pck_2d_tllib", "2D PCK@0.05 (TLlib/RegDA)", "{:.4f}"),
    ("known_root/epe_mean_mm", "3D EPE mean, known root+scale (mm)", "{:.2f}"),
    ("known_root/epe_median_mm", "3D EPE median, known root+scale (mm)", "{:.2f}"),
    ("known_root/auc_20_50", "3D PCK AUC 20-50 mm, known root+scale", "{:.4f}"),
    ("known_root/auc_0_50", "3D PCK AUC 0-50 mm, known root+scale", "{:.4f}"),
    ("known_root/epe_mean_mm_all_joints", "3D EPE mean, known root+scale, all joints (mm)",
     "{:.2f}"),
    ("procrustes/epe_mean_mm", "PA-EPE mean (mm)", "{:.2f}"),
    ("procrustes/auc_0_50", "PA AUC 0-50 mm", "{:.4f}"),
    ("recovered_root/epe_mean_mm", "3D EPE mean, recovered root (mm)", "{:.2f}"),
    ("recovered_root/auc_20_50", "3D PCK AUC 20-50 mm, recovered root", "{:.4f}"),
    ("recovered_root_lsq/epe_mean_mm", "3D EPE mean, least-squares root over all bones (mm)",
     "{:.2f}"),
)

#: Rows of the experiment report's comparison table: (metric key, label, which way is better).
#: Not a copy of `_HEADLINE` (an evaluation's metrics.md): five of its keys, in another order,
#: with the glossary's shorter labels; one table for both would change one report's text.
EXPERIMENT_HEADLINE = (
    ("known_root/epe_mean_mm", "3D EPE (mm, root and scale known)", "lower"),
    ("known_root/auc_20_50", "3D PCK AUC 20-50 mm", "higher"),
    ("procrustes/epe_mean_mm", "PA-EPE (mm)", "lower"),
    ("pck_2d", "2D PCK@0.05", "higher"),
    ("recovered_root_lsq/epe_mean_mm", "3D EPE, root depth fitted (mm)", "lower"),
)
#: The experiment report's glossary: (term, meaning).
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
#: The domains an experiment evaluates on, in the report's order.
DOMAINS = ("source", "target")


def jsonable(x: Any) -> Any:
    """Nested dicts/lists/arrays/numpy scalars -> JSON types; NaN and inf become None."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    return x


def write_metrics_json(path: str, result: EvalResult, meta: Mapping[str, Any]) -> None:
    """metrics.json: the result's metrics, info, per-joint values and curves, plus `meta`."""
    doc = dict(meta)
    doc.update({
        "metrics": result.metrics, "info": result.info,
        "per_joint": {k: v for k, v in result.per_joint.items()},
        "curves": {k: {"thresholds_mm": t, "pck": c} for k, (t, c) in result.curves.items()},
    })
    with open(path, "w") as f:
        json.dump(jsonable(doc), f, indent=2, allow_nan=False)


def markdown(result: EvalResult, meta: Mapping[str, Any]) -> str:
    """Markdown: a header line from `meta`, the headline table, the per-joint table."""
    m = result.metrics
    fmt = lambda f, v: "n/a" if v is None or not math.isfinite(v) else f.format(v)  # noqa: E731
    head = ", ".join(f"{k}: {meta[k]}" for k in ("dataset", "split", "step", "weights")
                     if k in meta)
    lines = [f"# Evaluation ({head})" if head else "# Evaluation", "",
             "| metric | value |", "| --- | ---: |"]
    lines += [f"| {label} | {fmt(f, m.get(key))} |" for key, label, f in _HEADLINE if key in m]
    if "auc_20_50" in result.info:
        lines += ["", "AUC 20-50 mm: " + " ".join(result.info["auc_20_50"].split()) + "."]
    if "joints" in result.info:  # which joints the headline counts (visible only)
        lines += ["", "Joints: " + result.info["joints"] + "."]
    cols = [k for k in ("pck_2d", *(f"{g}/epe_mm" for g in GROUPS_3D)) if k in result.per_joint]
    lines += ["", "| joint | " + " | ".join(cols) + " |", "| --- |" + " ---: |" * len(cols)]
    for j, name in enumerate(JOINT_NAMES):
        vals = [fmt("{:.4f}" if c.startswith("pck") else "{:.2f}",
                    float(result.per_joint[c][j])) for c in cols]
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def plot_pck_curves(path: str, result: EvalResult) -> None:
    """pck_curve.png: 3D PCK against threshold (0-50 mm) per protocol, AUC in the legend."""
    fig, ax = _figure((6.0, 4.5))
    for group in GROUPS_3D:
        key = f"{group}/pck_0_50"
        if key not in result.curves:
            continue
        t, c = result.curves[key]
        auc = result.metrics.get(f"{group}/auc_0_50", float("nan"))
        ax.plot(t, c, label=f"{group} (AUC 0-50 {auc:.3f})")
    ax.axvspan(20, 50, color="0.92", zorder=0, label="20-50 mm")
    ax.set(xlabel="threshold (mm)", ylabel="3D PCK", xlim=(0, 50), ylim=(0, 1.02),
           title="3D PCK over visible joints")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.savefig(path, dpi=100)


def plot_qualitative(
    path: str, images: np.ndarray, pred_uv: np.ndarray, gt_uv: np.ndarray,
    visibility: np.ndarray, output_size: int, titles: Sequence[str] | None = None,
    columns: int = 4,
) -> None:
    """qualitative.png: a grid of crops with predicted (red) and GT (green) skeletons.

    Args:
      images: (n, S, S, 3) float RGB in [0, 1] (de-normalised network inputs).
      pred_uv, gt_uv: (n, J, 2) output pixels (mapped to input pixels here).
      visibility: (n, J) 0/1; GT joints and bones are drawn only where visible.
      output_size: s, the output side (input px = inverse of `camera.resize_affine(s / S)`).
    """
    n = len(images)
    if n == 0:
        raise ValueError("plot_qualitative needs at least one image")
    size = images.shape[1]
    back = camera.invert_affine(camera.resize_affine(output_size / size))
    pred = np.asarray(camera.apply_affine(back, np.asarray(pred_uv, np.float32)))
    gt = np.asarray(camera.apply_affine(back, np.asarray(gt_uv, np.float32)))
    vis = np.asarray(visibility) > 0
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = _figure((2.4 * cols, 2.5 * rows), rows, cols)
    for i, ax in enumerate(np.ravel(axes)):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.clip(images[i], 0, 1), extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        for a, b in BONES:
            if vis[i, a] and vis[i, b]:
                ax.plot(gt[i, [a, b], 0], gt[i, [a, b], 1], color="lime", lw=1.2)
            ax.plot(pred[i, [a, b], 0], pred[i, [a, b], 1], color="red", lw=1.0)
        ax.scatter(*gt[i][vis[i]].T, s=4, color="lime")
        ax.scatter(*pred[i].T, s=4, color="red")
        ax.set_xlim(-0.5, size - 0.5)
        ax.set_ylim(size - 0.5, -0.5)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    fig.suptitle("green: ground truth (visible joints), red: prediction", fontsize=8)
    fig.savefig(path, dpi=100)


def write_report(
    output_dir: str, result: EvalResult, meta: Mapping[str, Any],
    samples: Mapping[str, np.ndarray] | None = None,
) -> dict[str, str]:
    """Writes every file of `FILES` into output_dir (qualitative.png only with `samples`).

    Args:
      samples: {'image': (n, S, S, 3) float [0, 1], 'index': (n,)} examples to draw; their
        predictions and labels are looked up in `result.arrays` by index.
    Returns:
      file name -> path of each written file.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {name: os.path.join(output_dir, name) for name in FILES}
    write_metrics_json(paths["metrics.json"], result, meta)
    with open(paths["metrics.md"], "w") as f:
        f.write(markdown(result, meta))
    np.savez_compressed(paths["predictions.npz"], **result.arrays)
    plot_pck_curves(paths["pck_curve.png"], result)
    if samples is None or len(samples["index"]) == 0:
        del paths["qualitative.png"]
        return paths
    a = result.arrays
    rows = np.searchsorted(a["index"], np.asarray(samples["index"]))
    if np.any(a["index"][np.minimum(rows, len(a["index"]) - 1)] != samples["index"]):
        raise ValueError("samples['index'] holds indices that the result does not have")
    err = np.linalg.norm(a["pred_uv"][rows] - a["gt_uv"][rows], axis=-1)
    vis = a["visibility"][rows] > 0
    mean_err = [float(e[v].mean()) if v.any() else float("nan") for e, v in zip(err, vis,
                                                                                strict=True)]
    titles = [f"#{int(i)}  2D err {e:.2f} output px" for i, e in zip(samples["index"], mean_err,
                                                              strict=True)]
    plot_qualitative(paths["qualitative.png"], samples["image"], a["pred_uv"][rows],
                     a["gt_uv"][rows], a["visibility"][rows], int(a["output_size"][0]), titles)
    return paths


def summarize_experiment(models: dict) -> dict[str, float]:
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


def write_experiment_report(workdir: str, report: dict) -> None:
    """An experiment's (experiments.demo) report.json, and report.md with the metrics table,
    glossary, timings and figures."""
    with open(os.path.join(workdir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    _plot_experiment_curves(os.path.join(workdir, "pck_curves.png"), report)
    _plot_pseudo_labels(os.path.join(workdir, "pseudo_labels.png"), report["pseudo_labels"])
    _experiment_qualitative(os.path.join(workdir, "qualitative.png"), report)
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
    for key, label, better in EXPERIMENT_HEADLINE:
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


def _plot_experiment_curves(path: str, report: dict) -> None:
    """Both domains side by side, the three predictors' 3D PCK curves in each."""
    fig, axes = _figure((10.0, 4.0), 1, 2)
    for ax, d in zip(axes[0], DOMAINS, strict=True):
        for model, style in (("mean_pose", ":"), ("pretrained", "--"), ("finetuned", "-")):
            src = report["dirs"].get(_experiment_stage(model, d))
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


def _experiment_stage(model: str, domain: str) -> str:
    """The experiment driver's stage that evaluated `model` on `domain` (keys report['dirs'])."""
    return {"mean_pose": f"mean pose ({domain})",
            "pretrained": f"evaluate pre-trained ({domain})",
            "finetuned": f"evaluate fine-tuned ({domain})"}[model]


def _plot_pseudo_labels(path: str, curve: dict) -> None:
    fig, ax = _figure((6.0, 3.5))
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


def _experiment_qualitative(path: str, report: dict, n: int = 6) -> None:
    """Pairs of panels on the first n target test images: pre-trained, then fine-tuned."""
    dirs = [report["dirs"].get(_experiment_stage(k, "target")) for k in ("pretrained", "finetuned")]
    if not all(dirs):
        return
    preds = [np.load(os.path.join(d, "predictions.npz")) for d in dirs]
    images = _first_target_images(report, n)
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


def _first_target_images(report: dict, n: int) -> dict | None:
    # Imported here: TensorFlow, which `import hpe_jax.evaluation.report` (and .run) must not load.
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


def _figure(figsize: tuple[float, float], rows: int = 1, cols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, (axes[0, 0] if rows == cols == 1 else axes)
