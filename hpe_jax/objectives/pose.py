"""The 2.5D pose distance l (SemiHand Eq. 2).

l(p1, p2) = |uv1 - uv2|^2 + lambda_z |z1 - z2|^2 with lambda_z = 50.

Units (the papers give none, so the project fixes them): uv in pixels of a 64 x 64 heatmap (the
paper's output size), z in reference-bone units (`hand.camera`); the distance is averaged over
joints, so one joint off by one such pixel costs 1/21. A model with another output size passes
`uv_scale = 64 / output_size`, which keeps the paper's balance between the uv term, lambda_z, the
mask/depth weights and the pseudo-label threshold epsilon (all in these units).
"""

from __future__ import annotations

import jax.numpy as jnp

Array = jnp.ndarray


def pose_distance_25d(
    uv1: Array, z1: Array, uv2: Array, z2: Array, lambda_z: float = 50.0,
    weights: Array | None = None, uv_scale: float = 1.0, huber_delta: float = 0.0,
) -> Array:
    """l(p1, p2) = mean_j (||uv1_j - uv2_j||^2 + lambda_z * (z1_j - z2_j)^2); shape (...,).

    Args:
      uv1, uv2: (..., J, 2) pixels; z1, z2: (..., J) reference-bone units.
      weights: optional (..., J) joint weights (e.g. visibility); the mean is then weighted.
      uv_scale: multiplies uv differences (64 / output_size: uv in 64-px-heatmap pixels).
      huber_delta: > 0 replaces each joint's squared distance d^2 beyond d = huber_delta by
        2 delta d - delta^2 (same value and slope at delta, then linear): a far-off joint pulls
        with a constant force instead of one growing with its error (0: the paper's l).
    """
    per_joint = (uv_scale ** 2 * jnp.sum((uv1 - uv2) ** 2, axis=-1)
                 + lambda_z * (z1 - z2) ** 2)
    if huber_delta > 0:
        # sqrt of at least delta^2: the linear branch never differentiates sqrt at 0.
        dist = jnp.sqrt(jnp.maximum(per_joint, huber_delta ** 2))
        per_joint = jnp.where(per_joint <= huber_delta ** 2, per_joint,
                              2.0 * huber_delta * dist - huber_delta ** 2)
    if weights is None:
        return jnp.mean(per_joint, axis=-1)
    weights = weights.astype(per_joint.dtype)
    return jnp.sum(per_joint * weights, -1) / jnp.maximum(jnp.sum(weights, -1), 1.0)


def multimodal_loss(
    pred: dict[str, Array],
    target: dict[str, Array],
    *,
    lambda_z: float = 50.0,
    lambda_m: float = 100.0,
    lambda_dm: float = 50.0,
    uv_scale: float = 1.0,
    huber_delta: float = 0.0,
) -> dict[str, Array]:
    """M(y, y_gt) = l(p, p_gt) + lambda_m |m - m_gt|_1 + lambda_dm |dmap - dmap_gt|_1 (Eq. 2).

    Args:
      pred: 'uv' (N, J, 2) output pixels, 'z' (N, J), and where the target has them 'mask'
        (N, s, s, 1) probabilities and 'depth_map' (N, s, s, 1) normalised depth.
      target: 'uv', 'z', optional 'mask', 'depth_target' (same shapes), optional 'weights' (N,)
        per-example weights (e.g. a pseudo-label's keep mask).
    Returns:
      dict with 'pose' (l), 'mask' and 'depth_map' (the L1 terms, mean over pixels) averaged over
      the batch (with 'weights': mean over the batch of weight * term, so rejected examples
      count as zero, as the indicator of Eq. 9 does; a weight-0 example's target is never read,
      so a non-finite one leaves the loss and its gradient finite), and 'total' = the weighted
      sum of the three.
      Terms the target lacks are 0.
    """
    w = target.get("weights")
    if w is not None:
        # A rejected example's target may be garbage (a degenerate pseudo-label: NaN). Replace it
        # before any arithmetic, so that neither the loss nor its gradient sees it: NaN * 0 is
        # NaN, and even jnp.where on the loss alone would leave NaN in the backward pass.
        keep = w > 0
        target = {k: (jnp.where(keep.reshape(keep.shape + (1,) * (v.ndim - 1)), v, 0.0)
                      if k != "weights" else v) for k, v in target.items()}
    per_example = {"pose": pose_distance_25d(pred["uv"], pred["z"], target["uv"], target["z"],
                                             lambda_z, uv_scale=uv_scale,
                                             huber_delta=huber_delta)}
    zero = jnp.zeros_like(per_example["pose"])
    per_example["mask"] = (
        jnp.mean(jnp.abs(pred["mask"] - target["mask"]), axis=(1, 2, 3))
        if "mask" in target else zero
    )
    per_example["depth_map"] = (
        jnp.mean(jnp.abs(pred["depth_map"] - target["depth_target"]), axis=(1, 2, 3))
        if "depth_target" in target else zero
    )
    if w is None:
        out = {k: jnp.mean(v) for k, v in per_example.items()}
    else:
        w = w.astype(jnp.float32)
        out = {k: jnp.mean(jnp.where(keep, v * w, 0.0)) for k, v in per_example.items()}
    out["total"] = out["pose"] + lambda_m * out["mask"] + lambda_dm * out["depth_map"]
    return out
