"""Evaluates the RGB path of a model over a whole split: every sample counted exactly once.

Usage:

    evaluator = Evaluator(model_rgb_apply, dataset, global_batch_size=64, output_size=64)
    result = evaluator.run(variables)  # EvalResult: metrics, per-joint values, per-sample arrays
    result.metrics["known_root/epe_mean_mm"]

How every sample counts once on any number of devices and processes:
- each process takes its shard of the examples (`tf.data.Dataset.shard`, or every
  process_count-th item of an iterable);
- it batches them into global_batch_size / process_count examples, repeats the last real example to
  fill the last partial batch and marks the copies invalid; the batch is split over the local
  devices and the step is `jax.pmap`-ed with the variables replicated;
- the host keeps the valid rows, the processes exchange theirs with `process_allgather` (padded to
  a common length first), and the union is sorted by `index` and de-duplicated (first occurrence).
Metrics are computed on the host in float64 from the raw per-sample predictions, so every AUC is
exact and the result does not depend on the batching.

3D from the network's 2.5D output (`hand.camera`):
- "known_root" (SemiHand after Zimmermann & Brox): decode with the ground-truth root depth and
  scale, then translate so the predicted root (middle MCP, `skeleton.ROOT`) lies on the true root.
- "recovered_root": root depth from Iqbal et al.'s closed form (`camera.recover_root_depth`) times
  the ground-truth scale; absolute camera-frame errors.
- "recovered_root_lsq": the root depth fitted to all bones by least squares instead.
- "procrustes": the known-root prediction aligned to the ground truth by a similarity transform
  (`metrics.procrustes_align`, reflections allowed as in FreiHAND's evaluation), fitted on all
  joints; errors counted on visible joints like every other 3D metric.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import jax_utils
from jax.experimental import multihost_utils

from hpe_jax.evaluation import metrics as M
from hpe_jax.hand import camera
from hpe_jax.hand.skeleton import ROOT

Array = jnp.ndarray
ApplyFn = Callable[[Any, Array], tuple[Array, Array]]

#: Keys every example must have (shapes for J joints and S x S input images).
EXAMPLE_KEYS: dict[str, str] = {
    "image": "(S, S, 3) float32 input image",
    "uv": "(J, 2) ground-truth uv in output pixels",
    "z": "(J,) ground-truth root-relative depth in reference-bone units",
    "visibility": "(J,) 0/1",
    "keypoints_3d": "(J, 3) mm, camera frame",
    "K": "(3, 3) output-resolution intrinsics: project(keypoints_3d, K) == uv",
    "z_root": "() root depth in mm",
    "scale": "() reference-bone length in mm",
    "index": "() int, unique per example",
}
GROUPS_3D = ("known_root", "recovered_root", "recovered_root_lsq", "procrustes")
#: Suffix of the metrics that count every joint; the unsuffixed (headline) ones count visible
#: joints only.
ALL_JOINTS = "_all_joints"


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Result of `Evaluator.run`.

    metrics: name -> float (see `compute_metrics` for the names).
    per_joint: name -> (J,) values (NaN for joints without visible samples).
    curves: name -> (thresholds (T,) mm, mean PCK (T,)).
    info: name -> a sentence saying which protocol a metric follows.
    arrays: per-sample arrays sorted by index, N = number of distinct examples:
      index (N,) int64; pred_uv, gt_uv (N, J, 2) output px; pred_z, gt_z (N, J) bone units;
      pred_3d (N, J, 3) mm (known root), pred_3d_recovered_root, pred_3d_lsq_root (N, J, 3) mm,
      gt_3d (N, J, 3) mm;
      visibility (N, J) float32 0/1; output_size (N,) int32 (square output, pixels).
    """

    metrics: dict[str, float]
    per_joint: dict[str, np.ndarray]
    curves: dict[str, tuple[np.ndarray, np.ndarray]]
    info: dict[str, str]
    arrays: dict[str, np.ndarray]


# ------------------------------------------------------------------------------------------------
# 2.5D -> 3D protocols (jit-able, computed on device next to the network).


def lift_known_root(
    uv: Array, z: Array, K: Array, z_root: Array, scale: Array, gt_root: Array
) -> Array:
    """Known root and scale: (..., J, 3) mm from uv (..., J, 2) px, z (..., J) bone units,
    K (..., 3, 3), z_root and scale (...,) mm, gt_root (..., 3) mm (the true middle-MCP)."""
    pred = camera.decode_25d(uv, z, K, z_root, scale)
    return pred + (gt_root[..., None, :] - pred[..., ROOT:ROOT + 1, :])


def lift_recovered_root(uv: Array, z: Array, K: Array, scale: Array) -> Array:
    """Root depth recovered by Iqbal et al.'s closed form times the true scale (mm): (..., J, 3)."""
    return camera.lift_25d(uv, z, K, scale)[0]


def lift_lsq_root(uv: Array, z: Array, K: Array, scale: Array) -> Array:
    """Root depth fitted to all bones by least squares (`camera.fit_root_depth_lsq`, template
    proportions) times the true scale (mm): (..., J, 3). A robust variant of
    `lift_recovered_root`, whose closed form rests on the one short reference bone."""
    z_root = camera.fit_root_depth_lsq(uv, z, K) * scale
    return camera.decode_25d(uv, z, K, z_root, scale)


#: What a dataset's joint 0 holds: "wrist" (the network's joint 0) or "palm", STB's palm centre,
#: which predictions are converted to as 0.5 (wrist + middle MCP), the way the labels define it.
JOINT0_CHOICES = ("wrist", "palm")


def dataset_joint0(name: str) -> str:
    """"palm" for STB's palm configuration ("stb" alone is it: its first builder config), else
    "wrist"."""
    base, _, config = name.partition("/")
    return "palm" if base == "stb" and config in ("", "palm") else "wrist"


def wrist_to_palm(pred: dict[str, Array], z_root: Array, scale: Array, K: Array
                  ) -> dict[str, Array]:
    """Replaces joint 0 of every prediction by the palm centre 0.5 (wrist + middle MCP).

    The 3D poses take the midpoint in 3D; uv is the projection of the midpoint of the pose decoded
    with the true root depth, and z the mean of the two joints' relative depths (the palm centre's
    exactly: depth is linear along the segment).

    Args:
      pred: 'pred_uv' (..., J, 2), 'pred_z' (..., J) and 3D poses 'pred_3d*' (..., J, 3) mm.
      z_root, scale: (...,) mm; K: (..., 3, 3).
    """
    out = dict(pred)
    uv, z = pred["pred_uv"], pred["pred_z"]
    xyz = camera.decode_25d(uv, z, K, z_root, scale)
    palm = 0.5 * (xyz[..., 0, :] + xyz[..., ROOT, :])
    out["pred_uv"] = uv.at[..., 0, :].set(camera.project(palm[..., None, :], K)[..., 0, :])
    out["pred_z"] = z.at[..., 0].set(0.5 * (z[..., 0] + z[..., ROOT]))
    for key in pred:
        if key.startswith("pred_3d"):
            x = pred[key]
            out[key] = x.at[..., 0, :].set(0.5 * (x[..., 0, :] + x[..., ROOT, :]))
    return out


def _eval_step(variables: Any, batch: dict[str, Array], *, apply_fn: ApplyFn,
               joint0: str = "wrist") -> dict[str, Array]:
    uv, z = apply_fn(variables, batch["image"])
    uv, z = uv.astype(jnp.float32), z.astype(jnp.float32)
    k, scale = batch["K"], batch["scale"]
    out = {
        "pred_uv": uv,
        "pred_z": z,
        "pred_3d": lift_known_root(uv, z, k, batch["z_root"], scale,
                                   batch["keypoints_3d"][..., ROOT, :]),
        "pred_3d_recovered_root": lift_recovered_root(uv, z, k, scale),
        "pred_3d_lsq_root": lift_lsq_root(uv, z, k, scale),
    }
    # The roots are recovered from the network's own joints (a wrist) before joint 0 is
    # converted: the bone-length criteria assume a wrist.
    return wrist_to_palm(out, batch["z_root"], scale, k) if joint0 == "palm" else out


@functools.lru_cache(maxsize=16)
def _pmapped_step(apply_fn: ApplyFn, devices: tuple[Any, ...], joint0: str = "wrist"
                  ) -> Callable:
    # Cached so that evaluators built again for the same model and devices reuse the compiled step.
    return jax.pmap(functools.partial(_eval_step, apply_fn=apply_fn, joint0=joint0),
                    axis_name="batch", devices=list(devices))


# ------------------------------------------------------------------------------------------------
# Metrics from per-sample arrays (also usable on a saved predictions.npz).


def compute_metrics(
    arrays: Mapping[str, np.ndarray], auc_20_50_protocol: str = M.DEFAULT_AUC_20_50,
    procrustes_reflection: bool = True,
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, tuple], dict[str, str]]:
    """All metrics from the per-sample arrays of an `EvalResult`.

    Names: num_samples; pck_2d, pck_2d_tllib; for each group in GROUPS_3D:
    <group>/epe_mean_mm and /epe_median_mm (EvalUtil: mean over joints of per-joint mean / median),
    /epe_pooled_mean_mm and /epe_pooled_median_mm (over all visible joints), /auc_20_50 (the
    chosen variant), /auc_20_50_<variant> for every variant in `metrics.AUC_20_50_GRIDS`, and
    /auc_0_50 (100 steps). All of these count visible joints only (the headline); pck_2d and
    <group>/epe_mean_mm, /epe_median_mm, /auc_20_50, /auc_0_50 are repeated over every joint
    with the suffix `ALL_JOINTS` ("_all_joints"), as are the per-joint pck_2d and epe_mm.

    Returns:
      (metrics, per_joint, curves, info) as in `EvalResult`.
    """
    if auc_20_50_protocol not in M.AUC_20_50_GRIDS:
        raise ValueError(f"unknown auc_20_50_protocol {auc_20_50_protocol!r}; "
                         f"choose one of {sorted(M.AUC_20_50_GRIDS)}")
    vis = np.asarray(arrays["visibility"]) > 0
    if vis.ndim != 2 or vis.shape[0] == 0:
        raise ValueError(f"need (N, J) visibility with N > 0 samples, got shape {vis.shape}")
    size = int(np.asarray(arrays["output_size"]).reshape(-1)[0])
    out: dict[str, float] = {"num_samples": float(vis.shape[0])}
    per_joint: dict[str, np.ndarray] = {}
    curves: dict[str, tuple] = {}
    for name, fn in (("pck_2d", M.pck_2d), ("pck_2d_tllib", M.pck_2d_tllib)):
        res = fn(arrays["pred_uv"], arrays["gt_uv"], vis, size)
        out[name], per_joint[name] = res.mean, res.per_joint
    gt = np.asarray(arrays["gt_3d"], np.float64)
    errors = {
        "known_root": M.joint_errors(arrays["pred_3d"], gt),
        "recovered_root": M.joint_errors(arrays["pred_3d_recovered_root"], gt),
        # Absent from predictions saved before the variant existed.
        **({"recovered_root_lsq": M.joint_errors(arrays["pred_3d_lsq_root"], gt)}
           if "pred_3d_lsq_root" in arrays else {}),
        "procrustes": M.procrustes_errors(arrays["pred_3d"], gt, procrustes_reflection),
    }
    for group, err in errors.items():
        full = M.auc_0_50(err, vis)
        out[f"{group}/epe_mean_mm"], out[f"{group}/epe_median_mm"] = full.epe_mean, full.epe_median
        pooled = M.pooled_epe(err, vis)
        out[f"{group}/epe_pooled_mean_mm"], out[f"{group}/epe_pooled_median_mm"] = pooled
        out[f"{group}/auc_0_50"] = full.auc
        per_joint[f"{group}/epe_mm"] = full.per_joint_epe_mean
        curves[f"{group}/pck_0_50"] = (full.thresholds, full.curve)
        for variant in M.AUC_20_50_GRIDS:
            res = M.auc_20_50(err, vis, variant)
            out[f"{group}/auc_20_50_{variant}"] = res.auc
            if variant == auc_20_50_protocol:
                out[f"{group}/auc_20_50"] = res.auc
                per_joint[f"{group}/auc_20_50"] = res.per_joint_auc
                curves[f"{group}/pck_20_50"] = (res.thresholds, res.curve)
    # All-joint variants beside the headline (visible joints): a split that marks joints
    # invisible (occluded, or pushed off the crop) scores them too, under a _all_joints suffix.
    # Always written, so every split has the same keys (equal values when all are visible).
    every = np.ones_like(vis)
    res = M.pck_2d(arrays["pred_uv"], arrays["gt_uv"], every, size)
    out["pck_2d" + ALL_JOINTS], per_joint["pck_2d" + ALL_JOINTS] = res.mean, res.per_joint
    for group, err in errors.items():
        full = M.auc_0_50(err, every)
        out[f"{group}/epe_mean_mm{ALL_JOINTS}"] = full.epe_mean
        out[f"{group}/epe_median_mm{ALL_JOINTS}"] = full.epe_median
        out[f"{group}/auc_0_50{ALL_JOINTS}"] = full.auc
        out[f"{group}/auc_20_50{ALL_JOINTS}"] = M.auc_20_50(err, every, auc_20_50_protocol).auc
        per_joint[f"{group}/epe_mm{ALL_JOINTS}"] = full.per_joint_epe_mean
    grid = M.AUC_20_50_GRIDS[auc_20_50_protocol]
    info = {
        "joints": f"headline metrics count visible joints only (hand3d EvalUtil, the papers' "
                  f"protocol); keys ending {ALL_JOINTS} count every joint; "
                  f"{100 * (1 - vis.mean()):.1f}% of this split's joints are marked invisible",
        "pck_2d": f"continuous uv, error < 0.05 x output size ({size} px), visible joints, "
                  "per joint then mean over joints",
        "pck_2d_tllib": "TLlib/RegDA: rounded (argmax) uv, normalised by size/10, < 0.5, GT x>1 "
                        "and y>1, per joint then mean over joints with data",
        "auc_20_50": f"{auc_20_50_protocol}: hand3d EvalUtil on thresholds {np.round(grid, 2)} mm",
        "auc_0_50": "hand3d EvalUtil on linspace(0, 50, 100) mm",
        "epe_mean_mm": "hand3d EvalUtil: mean over joints of the per-joint mean over visible "
                       "samples",
        "known_root": "decode_25d with GT root depth and scale, predicted root moved onto GT root",
        "recovered_root": "root depth from recover_root_depth (Iqbal et al.'s closed form on the "
                          "reference bone; root chosen by the other bones) x GT scale, absolute; "
                          "one px of noise on that short bone moves the root by ~35 mm at 64 px",
        "recovered_root_lsq": "root depth fitted to all bones by least squares "
                              "(fit_root_depth_lsq, template proportions) x GT scale, absolute",
        "procrustes": "known_root aligned by scale+rotation+translation on all joints, "
                      + ("reflections allowed (FreiHAND)" if procrustes_reflection
                         else "proper rotations only"),
    }
    return out, per_joint, curves, info


# ------------------------------------------------------------------------------------------------
# The evaluator.


def _is_tf_dataset(ds: Any) -> bool:
    # Duck-typed so this module does not import TensorFlow.
    return hasattr(ds, "element_spec") and hasattr(ds, "as_numpy_iterator")


class Evaluator:
    """Runs `apply_fn` over a dataset once per `run` and returns exact metrics.

    Args:
      apply_fn: the model's RGB path, `(variables, images (B, S, S, 3) float32) ->
        (uv (B, J, 2) output px, z (B, J) reference-bone units)`; traced once per shape.
      dataset: an UNBATCHED `tf.data.Dataset` or a re-iterable (e.g. a list) of examples with the
        keys in `EXAMPLE_KEYS`. It is iterated afresh on every `run`.
      global_batch_size: examples per step over all processes; divisible by
        process_count * number of devices. Need not divide the dataset size.
      output_size: side of the (square) output heatmap in pixels (the PCK normaliser).
      devices: local devices to pmap over (default `jax.local_devices()`).
      auc_20_50_protocol, procrustes_reflection: see `compute_metrics`.
      shard: (process_index, process_count) to evaluate; default (jax.process_index(),
        jax.process_count()). Only override it to evaluate one shard by hand.
      joint0: what the dataset's joint 0 is: "wrist", or "palm" (STB's palm centre; predictions
        are converted by `wrist_to_palm`). `dataset_joint0(name)` gives it for a TFDS name.
    """

    def __init__(
        self, apply_fn: ApplyFn, dataset: Any, *, global_batch_size: int, output_size: int,
        devices: list[Any] | None = None, auc_20_50_protocol: str = M.DEFAULT_AUC_20_50,
        procrustes_reflection: bool = True, shard: tuple[int, int] | None = None,
        joint0: str = "wrist",
    ) -> None:
        self._devices = list(devices) if devices is not None else jax.local_devices()
        self._process, self._num_processes = (
            shard if shard is not None else (jax.process_index(), jax.process_count()))
        n_dev = len(self._devices)
        if global_batch_size <= 0 or global_batch_size % (self._num_processes * n_dev):
            raise ValueError(
                f"global_batch_size={global_batch_size} must be a positive multiple of "
                f"process_count x local devices = {self._num_processes} x {n_dev}; "
                "choose a batch size divisible by the number of devices")
        if auc_20_50_protocol not in M.AUC_20_50_GRIDS:
            raise ValueError(f"unknown auc_20_50_protocol {auc_20_50_protocol!r}; "
                             f"choose one of {sorted(M.AUC_20_50_GRIDS)}")
        if joint0 not in JOINT0_CHOICES:
            raise ValueError(f"unknown joint0 {joint0!r}; use one of {JOINT0_CHOICES}")
        if _is_tf_dataset(dataset):
            missing = sorted(set(EXAMPLE_KEYS) - set(dataset.element_spec))
            if missing:
                raise ValueError(f"dataset examples lack keys {missing}; each example needs "
                                 f"{list(EXAMPLE_KEYS)}")
        elif isinstance(dataset, Iterator):
            raise ValueError("dataset is a one-shot iterator; pass a re-iterable (e.g. a list) "
                             "or a tf.data.Dataset so that run() can be called more than once")
        self._dataset = dataset
        self._local_batch = global_batch_size // self._num_processes
        self._output_size = int(output_size)
        self._auc_protocol = auc_20_50_protocol
        self._reflection = procrustes_reflection
        try:
            self._step = _pmapped_step(apply_fn, tuple(self._devices), joint0)
        except TypeError:  # an unhashable apply_fn: build (and later compile) a fresh one
            self._step = _pmapped_step.__wrapped__(apply_fn, tuple(self._devices), joint0)

    # -- data --------------------------------------------------------------------------------

    def _local_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """Batches of this process's shard, each with `local_batch` rows (last one padded)."""
        keys = list(EXAMPLE_KEYS)
        if _is_tf_dataset(self._dataset):
            ds = self._dataset.shard(self._num_processes, self._process)
            ds = ds.map(lambda ex: {k: ex[k] for k in keys})
            chunks: Iterable = (dict(b) for b in ds.batch(self._local_batch).as_numpy_iterator())
        else:
            items = itertools.islice(iter(self._dataset), self._process, None,
                                     self._num_processes)
            chunks = (self._stack(group) for group in _grouper(items, self._local_batch))
        for chunk in chunks:
            n = len(chunk["index"])
            pad = self._local_batch - n
            batch = {k: np.concatenate([v, np.repeat(v[-1:], pad, 0)]) if pad else v
                     for k, v in chunk.items()}
            batch["valid"] = np.arange(self._local_batch) < n
            yield batch

    @staticmethod
    def _stack(examples: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        for ex in examples:
            missing = [k for k in EXAMPLE_KEYS if k not in ex]
            if missing:
                raise ValueError(f"an example lacks keys {missing}; each example needs "
                                 f"{list(EXAMPLE_KEYS)}")
        return {k: np.stack([np.asarray(ex[k]) for ex in examples]) for k in EXAMPLE_KEYS}

    # -- evaluation --------------------------------------------------------------------------

    def predict(self, variables: Any, replicated: bool = False) -> dict[str, np.ndarray]:
        """Per-sample arrays (see `EvalResult.arrays`) of every example, gathered, sorted by
        index and de-duplicated. `variables` are host/single-device values unless
        `replicated` (already with a leading axis over this evaluator's devices)."""
        if not replicated:
            variables = jax_utils.replicate(variables, devices=self._devices)
        n_dev = len(self._devices)
        outputs, hosts = [], []
        for batch in self._local_batches():
            dev = {k: batch[k].reshape((n_dev, -1) + batch[k].shape[1:])
                   for k in ("image", "K", "z_root", "scale", "keypoints_3d")}
            dev = {k: v.astype(np.float32) for k, v in dev.items()}
            outputs.append(self._step(variables, dev))  # dispatched asynchronously
            hosts.append({k: batch[k] for k in ("uv", "z", "visibility", "keypoints_3d",
                                                "index", "valid")})
        if not hosts:
            raise ValueError(f"process {self._process} got no examples: the dataset is empty or "
                             "has fewer examples than processes")
        local = {}
        for k in ("pred_uv", "pred_z", "pred_3d", "pred_3d_recovered_root", "pred_3d_lsq_root"):
            local[k] = np.concatenate([np.asarray(o[k]).reshape((-1,) + o[k].shape[2:])
                                       for o in outputs])
        for src, dst in (("uv", "gt_uv"), ("z", "gt_z"), ("visibility", "visibility"),
                         ("keypoints_3d", "gt_3d"), ("index", "index"), ("valid", "valid")):
            local[dst] = np.concatenate([h[src] for h in hosts])
        local = {k: v[local["valid"]] for k, v in local.items()}
        return self._gather(local)

    def _gather(self, local: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """All processes' rows: padded to a common length, all-gathered, sorted, de-duplicated."""
        casts = {"index": np.int64, "visibility": np.float32}
        local = {k: v.astype(casts.get(k, np.float32)) for k, v in local.items()}
        # process_allgather needs equal shapes everywhere: pad to the longest shard, mark validity.
        # With one process it returns the local rows, so this path runs (and is tested) always.
        n = np.asarray(multihost_utils.process_allgather(np.int64(len(local["index"]))))
        longest = int(n.max())
        padded = {k: np.concatenate([v, np.zeros((longest - len(v),) + v.shape[1:], v.dtype)])
                  for k, v in local.items()}
        padded["valid"] = np.arange(longest) < len(local["index"])
        every = multihost_utils.process_allgather(padded, tiled=True)
        every = {k: np.asarray(v) for k, v in every.items()}
        keep = every.pop("valid")
        local = {k: v[keep] for k, v in every.items()}
        _, first = np.unique(local["index"], return_index=True)  # sorted unique, first occurrence
        out = {k: v[first] for k, v in local.items()}
        out["output_size"] = np.full(len(first), self._output_size, np.int32)
        return out

    def run(self, variables: Any, replicated: bool = False) -> EvalResult:
        """Evaluates `variables` (the model's variables, e.g. {'params': ..., 'batch_stats': ...})
        on every example once and returns the metrics and per-sample arrays."""
        arrays = self.predict(variables, replicated)
        metrics, per_joint, curves, info = compute_metrics(
            arrays, self._auc_protocol, self._reflection)
        return EvalResult(metrics, per_joint, curves, info, arrays)


def _grouper(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    it = iter(items)
    while group := list(itertools.islice(it, n)):
        yield group
