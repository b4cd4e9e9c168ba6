"""The 2.5D pose distance l (SemiHand Eq. 2).

Units (the papers give none; METHOD.md section 2): uv in output-heatmap pixels, z in
reference-bone units (`hand.camera`); the distance is averaged over joints, so one joint off by
one heatmap pixel costs 1/21. The pseudo-label threshold epsilon is in these units.
"""

from __future__ import annotations

import jax.numpy as jnp

Array = jnp.ndarray


def pose_distance_25d(
    uv1: Array, z1: Array, uv2: Array, z2: Array, lambda_z: float = 50.0,
    weights: Array | None = None,
) -> Array:
    """l(p1, p2) = mean_j (||uv1_j - uv2_j||^2 + lambda_z * (z1_j - z2_j)^2); shape (...,).

    Args:
      uv1, uv2: (..., J, 2) pixels; z1, z2: (..., J) reference-bone units.
      weights: optional (..., J) joint weights (e.g. visibility); the mean is then weighted.
    """
    per_joint = jnp.sum((uv1 - uv2) ** 2, axis=-1) + lambda_z * (z1 - z2) ** 2
    if weights is None:
        return jnp.mean(per_joint, axis=-1)
    weights = weights.astype(per_joint.dtype)
    return jnp.sum(per_joint * weights, -1) / jnp.maximum(jnp.sum(weights, -1), 1.0)
