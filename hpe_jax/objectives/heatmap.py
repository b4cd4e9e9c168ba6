"""An auxiliary heatmap loss for the integral read-out (beyond the papers; off in their configs).

Why: the 2.5D loss reaches the heatmap logits only through the soft-argmax. At initialisation a
heatmap is nearly flat, so a coordinate error moves each of the s*s logits by about 1/(s*s) of
it and the read-out sits at the map's centre: the mean pose is a strong attractor, and a small
network trained for minutes on a CPU stays there (measured on the embedded benchmark: predictions
whose spread across images was 0.15 of the ground truth's). Supervising the read-out's
probability map directly with a Gaussian around the labelled joint gives every logit a signal
from the first step (the "integral + heatmap" combination of Sun et al., ECCV 2018).

The loss is KL(G_j || p_j) averaged over the joints that lie inside the output map, where p_j is
the decoder's softmax(beta * h_uv[j]) and G_j a Gaussian of standard deviation `sigma` output
pixels centred on the labelled uv_j, normalised over the map. KL (not cross-entropy) so that a
perfect prediction scores 0 whatever sigma.
"""

from __future__ import annotations

import jax.numpy as jnp

Array = jnp.ndarray


def gaussian_targets(uv: Array, size: int, sigma: float) -> Array:
    """(N, J, 2) output-pixel coordinates -> (N, size, size, J) maps that each sum to 1."""
    grid = jnp.arange(size, dtype=jnp.float32)
    du = (grid[None, None, :] - uv[..., 0:1]) ** 2  # (N, J, size) over columns
    dv = (grid[None, None, :] - uv[..., 1:2]) ** 2  # (N, J, size) over rows
    logits = -(dv[:, :, :, None] + du[:, :, None, :]) / (2.0 * sigma ** 2)  # (N, J, row, col)
    logits = logits - jnp.max(logits, axis=(2, 3), keepdims=True)  # far-away joints stay finite
    g = jnp.exp(logits)
    g = g / jnp.sum(g, axis=(2, 3), keepdims=True)
    return jnp.transpose(g, (0, 2, 3, 1))


def heatmap_kl(heatmaps: Array, uv: Array, sigma: float = 1.0,
               weights: Array | None = None) -> Array:
    """Mean over the batch of the joint-averaged KL(G || p); a scalar.

    Args:
      heatmaps: (N, s, s, J) probability maps (the decoder's 'heatmaps').
      uv: (N, J, 2) target coordinates in output pixels (u = column, v = row).
      sigma: the target Gaussian's standard deviation in output pixels.
      weights: optional (N,) per-example weights (e.g. a pseudo-label's keep mask).
    Joints outside [-0.5, s - 0.5] in either coordinate are left out: the map cannot hold them.
    """
    n, s, _, j = heatmaps.shape
    target = gaussian_targets(uv.astype(jnp.float32), s, sigma)
    log_p = jnp.log(jnp.maximum(heatmaps.astype(jnp.float32), 1e-30))
    log_g = jnp.log(jnp.maximum(target, 1e-30))
    kl = jnp.sum(target * (log_g - log_p), axis=(1, 2))  # (N, J)
    inside = jnp.all((uv >= -0.5) & (uv <= s - 0.5), axis=-1).astype(jnp.float32)
    per_example = jnp.sum(kl * inside, -1) / jnp.maximum(jnp.sum(inside, -1), 1.0)
    if weights is not None:
        per_example = jnp.where(weights > 0, per_example, 0.0) * weights
    return jnp.mean(per_example)
