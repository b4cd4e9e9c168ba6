"""Pose metrics as pure numpy functions.

The papers evaluate 2D PCK at 0.05 of the heatmap size, and 3D mean EPE (mm) and the AUC of the 3D
PCK curve over 20-50 mm with the root (middle MCP) and the hand scale taken as known (SemiHand,
after Zimmermann & Brox); Procrustes-aligned EPE and AUC over 0-50 mm are added, as FreiHAND-style
benchmarks report them.

Units: 2D coordinates in output (heatmap) pixels with pixel centres at integers (`hand.camera`);
3D coordinates and errors in millimetres. Arrays are (N, J, D) for N samples and J joints;
`visibility` (N, J) is 0/1 or bool and selects the joints that count.

What is here:
- `pck_2d`: PCK at 0.05 of the output size on continuous coordinates (the project's default).
- `pck_2d_tllib_heatmaps` / `pck_2d_tllib`: the TLlib/RegDA convention behind the paper's 2D table
  (Transfer-Learning-Library's keypoint accuracy), on heatmaps exactly, or on coordinates
  quantised as an argmax would.
- `joint_errors`, `pooled_epe`: 3D end-point errors, pooled mean and median.
- `evalutil_measures`: hand3d's `EvalUtil`: per joint over visible samples, PCK on a
  threshold grid, trapezoid AUC normalised by the grid's range, averaged over joints with data.
- `auc_20_50` (the grids public codes use, default `DEFAULT_AUC_20_50`) and `auc_0_50`.
- `procrustes_align`, `procrustes_errors`: similarity alignment as in FreiHAND's evaluation.

Every function keeps per-joint values so that a caller can report them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Threshold grids (mm) of the "AUC 20-50 mm" variants: public codes compute it on different grids,
# so values are not exactly comparable across them. They differ in the grid only; the integral is
# always hand3d's: trapezoid over the grid / trapezoid of ones.
AUC_20_50_GRIDS: dict[str, np.ndarray] = {
    # bihand: EvalUtil.get_measures(20, 50, 20) in mm.
    "bihand": np.linspace(20.0, 50.0, 20),
    # hand3d eval_full.py: get_measures(0, 0.05 m, 20), curve kept from index 8 on (21.05-50 mm).
    "hand3d": np.linspace(0.0, 50.0, 20)[8:],
    # Zhang et al.'s reference curves: 20, 25, ..., 50 mm.
    "zhang": np.linspace(20.0, 50.0, 7),
}
#: The variant reported as "auc_20_50": EvalUtil on an even 20-step grid spanning exactly 20-50 mm,
#: the most literal reading of the papers' "AUC over 20-50 mm" with hand3d's utility.
DEFAULT_AUC_20_50 = "bihand"


class PCK2D(NamedTuple):
    """2D PCK. mean: average over joints with data (NaN if none); per_joint (J,) (NaN where a
    joint has no data); counts (J,) the number of samples that count per joint."""

    mean: float
    per_joint: np.ndarray
    counts: np.ndarray


class CurveMeasures(NamedTuple):
    """hand3d EvalUtil measures. Scalars are means over joints with data; per-joint arrays (J,)
    hold NaN for joints without data. thresholds (T,) mm; curve (T,) the mean PCK curve."""

    epe_mean: float
    epe_median: float
    auc: float
    curve: np.ndarray
    thresholds: np.ndarray
    per_joint_epe_mean: np.ndarray
    per_joint_epe_median: np.ndarray
    per_joint_auc: np.ndarray
    counts: np.ndarray


def _as_points(name: str, x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"{name} must have shape (N, J, {dim}), got {x.shape}")
    return x


def _as_mask(name: str, mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {shape} (N, J), got {mask.shape}")
    return mask.astype(bool)


def _same_shape(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names} must have the same shape, got {a.shape} and {b.shape}")


def _hw(output_size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (output_size, output_size) if np.isscalar(output_size) else output_size
    if h <= 0 or w <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    return int(h), int(w)


def _per_joint_rate(hit: np.ndarray, counted: np.ndarray) -> PCK2D:
    """(N, J) hits and counted masks -> per-joint rate over counted samples, mean over joints."""
    counts = counted.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_joint = np.where(counts > 0, (hit & counted).sum(0) / counts, np.nan)
    mean = float(np.nanmean(per_joint)) if np.any(counts > 0) else float("nan")
    return PCK2D(mean, per_joint, counts)


# ------------------------------------------------------------------------------------------------
# 2D


def pck_2d(
    pred_uv: np.ndarray, gt_uv: np.ndarray, visibility: np.ndarray | None,
    output_size: int | tuple[int, int], threshold: float = 0.05,
) -> PCK2D:
    """PCK on continuous coordinates: a joint is correct if its error, normalised per axis by the
    output size, is below `threshold` (strictly, as TLlib), i.e. ||pred - gt|| < 0.05 * S for a
    square S x S output. Per joint over visible samples, then averaged over joints with data.

    Args:
      pred_uv, gt_uv: (N, J, 2) output pixels.
      visibility: (N, J) 0/1; None counts every joint.
      output_size: S or (height, width) of the output heatmap in pixels.
    """
    pred_uv, gt_uv = _as_points("pred_uv", pred_uv, 2), _as_points("gt_uv", gt_uv, 2)
    _same_shape(pred_uv, gt_uv, "pred_uv and gt_uv")
    vis = _as_mask("visibility", visibility, gt_uv.shape[:2])
    h, w = _hw(output_size)
    d = np.linalg.norm((pred_uv - gt_uv) / np.array([w, h], np.float64), axis=-1)
    return _per_joint_rate(d < threshold, vis)


def heatmap_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer argmax (x, y) (N, J, 2) and maximum (N, J) of (N, J, H, W) heatmaps.

    As TLlib's `get_max_preds`: the location is set to (0, 0) where the maximum is not positive
    (an empty target heatmap), so such joints fail the x > 1 and y > 1 test downstream.
    """
    heatmaps = np.asarray(heatmaps)
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must have shape (N, J, H, W), got {heatmaps.shape}")
    n, j, _, w = heatmaps.shape
    flat = heatmaps.reshape(n, j, -1)
    idx = np.argmax(flat, axis=-1)
    maxval = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    xy = np.stack([idx % w, idx // w], -1).astype(np.float64)
    return xy * (maxval > 0)[..., None], maxval


def _tllib_rate(
    pred_xy: np.ndarray, gt_xy: np.ndarray, counted: np.ndarray, hw: tuple[int, int],
    threshold: float,
) -> PCK2D:
    # TLlib's `accuracy`: norm = [h, w] / 10 divides (x, y) (x by h/10: irrelevant for square maps).
    norm = np.array([hw[0], hw[1]], np.float64) / 10.0
    counted = counted & (gt_xy[..., 0] > 1) & (gt_xy[..., 1] > 1)
    d = np.linalg.norm(pred_xy / norm - gt_xy / norm, axis=-1)
    return _per_joint_rate(d < threshold, counted)


def pck_2d_tllib_heatmaps(
    pred_heatmaps: np.ndarray, gt_heatmaps: np.ndarray, threshold: float = 0.5
) -> PCK2D:
    """TLlib/RegDA PCK@0.05 (the convention of the paper's 2D table) on heatmaps, exactly.

    Prediction and target are both taken as heatmap argmaxes; the distance is normalised by
    (h/10, w/10) and a joint is correct if it is < `threshold` (0.5, i.e. 5% of the heatmap size).
    A joint counts only if the target's argmax has x > 1 and y > 1 (invisible joints have empty
    target heatmaps). Per-keypoint accuracy over the whole set, averaged over keypoints with data.

    TLlib's training scripts average this per batch (with -1 for joints without data in the
    batch) and then over batches; that depends on the batching, so the dataset-level value here
    is the batch-independent form of the same rule.

    Args:
      pred_heatmaps, gt_heatmaps: (N, J, H, W).
    """
    pred_heatmaps, gt_heatmaps = np.asarray(pred_heatmaps), np.asarray(gt_heatmaps)
    _same_shape(pred_heatmaps, gt_heatmaps, "pred_heatmaps and gt_heatmaps")
    pred_xy, _ = heatmap_argmax(pred_heatmaps)
    gt_xy, _ = heatmap_argmax(gt_heatmaps)
    hw = pred_heatmaps.shape[2:]
    return _tllib_rate(pred_xy, gt_xy, np.ones(pred_xy.shape[:2], bool), hw, threshold)


def pck_2d_tllib(
    pred_uv: np.ndarray, gt_uv: np.ndarray, visibility: np.ndarray | None,
    output_size: int | tuple[int, int], threshold: float = 0.5, sigma: float = 2.0,
) -> PCK2D:
    """TLlib/RegDA PCK@0.05 from coordinates, as `pck_2d_tllib_heatmaps` would score heatmaps.

    The ground truth becomes the argmax of TLlib's Gaussian target: the nearest pixel
    floor(uv + 0.5), clipped to the grid (a Gaussian cut by the border peaks at the border); the
    target is empty (the joint does not count) if the joint is invisible or its 3-sigma window
    misses the grid. The prediction becomes floor(uv + 0.5) clipped to the grid: the argmax of a
    unimodal, symmetric heatmap whose soft-argmax is uv. For a network whose heatmaps are not, this
    is an approximation; use `pck_2d_tllib_heatmaps` where heatmaps are at hand.

    Args:
      pred_uv, gt_uv: (N, J, 2) output pixels; visibility: (N, J) 0/1 or None (all count).
      output_size: S or (height, width) of the heatmap; sigma: TLlib's target sigma in pixels.
    """
    pred_uv, gt_uv = _as_points("pred_uv", pred_uv, 2), _as_points("gt_uv", gt_uv, 2)
    _same_shape(pred_uv, gt_uv, "pred_uv and gt_uv")
    vis = _as_mask("visibility", visibility, gt_uv.shape[:2])
    h, w = _hw(output_size)
    hi = np.array([w - 1, h - 1], np.float64)
    mu = np.floor(gt_uv + 0.5)
    tmp = 3 * sigma
    size = np.array([w, h], np.float64)
    # TLlib zeroes the target when the window [mu - 3 sigma, mu + 3 sigma + 1] misses the map.
    on_grid = np.all((mu - tmp < size) & (mu + tmp + 1 >= 0), axis=-1)
    gt_xy = np.clip(mu, 0, hi)
    pred_xy = np.clip(np.floor(pred_uv + 0.5), 0, hi)
    return _tllib_rate(pred_xy, gt_xy, vis & on_grid, (h, w), threshold)


# ------------------------------------------------------------------------------------------------
# 3D


def joint_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, J) between (N, J, D) predictions and ground truth (same units)."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    _same_shape(pred, gt, "pred and gt")
    if pred.ndim != 3:
        raise ValueError(f"pred and gt must have shape (N, J, D), got {pred.shape}")
    return np.linalg.norm(pred - gt, axis=-1)


def pooled_epe(errors: np.ndarray, visibility: np.ndarray | None = None) -> tuple[float, float]:
    """Mean and median (mm) of (N, J) errors pooled over all visible joints of all samples."""
    errors = np.asarray(errors, np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors must have shape (N, J), got {errors.shape}")
    vals = errors[_as_mask("visibility", visibility, errors.shape)]
    if vals.size == 0:
        return float("nan"), float("nan")
    return float(vals.mean()), float(np.median(vals))


def evalutil_measures(
    errors: np.ndarray, visibility: np.ndarray | None, thresholds: np.ndarray
) -> CurveMeasures:
    """hand3d's `EvalUtil` measures (lmb-freiburg/hand3d, utils/general.py) on a threshold grid.

    Per joint k, over the samples where it is visible: PCK_k(t) = mean(d <= t),
    AUC_k = trapz(PCK_k, t) / trapz(1, t), and its mean and median error. Reported values are means
    over joints with data: the AUC, the "mean EPE" (mean of per-joint means, not pooled), the
    median EPE (mean of per-joint medians) and the curve.

    Args:
      errors: (N, J) distances in mm; visibility: (N, J) 0/1 or None (all count).
      thresholds: (T,) increasing thresholds in mm, T >= 2 (e.g. np.linspace(0, 50, 100)).
    """
    errors = np.asarray(errors, np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors must have shape (N, J), got {errors.shape}")
    vis = _as_mask("visibility", visibility, errors.shape)
    t = np.asarray(thresholds, np.float64)
    if t.ndim != 1 or t.size < 2 or np.any(np.diff(t) <= 0):
        raise ValueError(f"thresholds must be an increasing 1D grid of >= 2 values, got {t}")
    counts = vis.sum(0)
    has = counts > 0
    safe = np.maximum(counts, 1)
    # (T, N, J): hit at each threshold, counted only where visible.
    hits = (errors[None] <= t[:, None, None]) & vis[None]
    curves = hits.sum(1) / safe  # (T, J)
    per_auc = np.trapezoid(curves, t, axis=0) / np.trapezoid(np.ones_like(t), t)
    masked = np.where(vis, errors, np.nan)
    nan = np.full(errors.shape[1], np.nan)
    per_mean, per_median = nan.copy(), nan.copy()
    per_mean[has] = np.nanmean(masked[:, has], axis=0)
    per_median[has] = np.nanmedian(masked[:, has], axis=0)
    per_auc = np.where(has, per_auc, np.nan)
    if not np.any(has):
        return CurveMeasures(np.nan, np.nan, np.nan, np.full(t.shape, np.nan), t, per_mean,
                             per_median, per_auc, counts)
    return CurveMeasures(
        float(per_mean[has].mean()), float(per_median[has].mean()), float(per_auc[has].mean()),
        curves[:, has].mean(1), t, per_mean, per_median, per_auc, counts,
    )


def auc_20_50(
    errors: np.ndarray, visibility: np.ndarray | None, protocol: str = DEFAULT_AUC_20_50
) -> CurveMeasures:
    """"AUC 20-50 mm" of (N, J) errors in mm with one of the named grids in `AUC_20_50_GRIDS`:
    'bihand' (default: linspace(20, 50, 20)), 'hand3d' (linspace(0, 50, 20)[8:]) or 'zhang'
    (20, 25, ..., 50). See `evalutil_measures` for the integral."""
    if protocol not in AUC_20_50_GRIDS:
        raise ValueError(
            f"unknown AUC 20-50 protocol {protocol!r}; choose one of {sorted(AUC_20_50_GRIDS)}"
        )
    return evalutil_measures(errors, visibility, AUC_20_50_GRIDS[protocol])


def auc_0_50(
    errors: np.ndarray, visibility: np.ndarray | None, steps: int = 100
) -> CurveMeasures:
    """AUC over 0-50 mm of (N, J) errors in mm: EvalUtil on linspace(0, 50, steps) (FreiHAND,
    HO-3D and DexYCB use 100 steps; hand3d 20)."""
    return evalutil_measures(errors, visibility, np.linspace(0.0, 50.0, steps))


# ------------------------------------------------------------------------------------------------
# Procrustes


def procrustes_align(
    pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = True,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Aligns each (N, J, 3) prediction to its ground truth with the similarity transform
    (scale, rotation, translation) that minimises the summed squared joint error.

    Closed form (Umeyama): centre both on their (weighted) centroids, R from the SVD of the
    cross-covariance, scale = trace(S D) / |pred_centred|^2. With allow_reflection=True (default)
    the orthogonal factor may be a reflection, as with scipy's `orthogonal_procrustes` in
    FreiHAND's official evaluation (lmb-freiburg/freihand, eval.py); with False, det(R) = +1.
    Translation makes the result root-independent, so it is also "root-relative".

    Args:
      pred, gt: (N, J, 3) in mm.
      weights: optional (N, J) 0/1 joints to fit on (default all; at least 3 should be set).
    Returns:
      (N, J, 3) aligned predictions in mm.
    """
    pred, gt = _as_points("pred", pred, 3), _as_points("gt", gt, 3)
    _same_shape(pred, gt, "pred and gt")
    wts = _as_mask("weights", weights, pred.shape[:2]).astype(np.float64)[..., None]
    wsum = np.maximum(wts.sum(1, keepdims=True), 1.0)
    mu_p, mu_g = (wts * pred).sum(1, keepdims=True) / wsum, (wts * gt).sum(1, keepdims=True) / wsum
    p, g = pred - mu_p, gt - mu_g
    cov = np.einsum("nji,njk->nik", wts * g, p)  # (N, 3, 3) sum_j g_j p_j^T
    u, s, vt = np.linalg.svd(cov)
    d = np.ones_like(s)
    if not allow_reflection:
        d[:, -1] = np.sign(np.linalg.det(u @ vt))
        d[d == 0] = 1.0
    rot = u @ (d[..., None] * vt)  # maps centred pred onto centred gt: g ~ scale * rot @ p
    var_p = (wts * p * p).sum((1, 2))
    scale = (s * d).sum(-1) / np.maximum(var_p, 1e-12)
    return scale[:, None, None] * np.einsum("nik,njk->nji", rot, p) + mu_g


def procrustes_errors(
    pred: np.ndarray, gt: np.ndarray, allow_reflection: bool = True,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """(N, J) errors in mm after `procrustes_align` (see there for the arguments)."""
    return joint_errors(procrustes_align(pred, gt, allow_reflection, weights), gt)
