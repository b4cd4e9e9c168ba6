"""NT-Xent contrastive loss (DM-HPE Eq. 3, tau = 0.5), sharded across devices.

Paper form (default), for anchors z_i and positives z+_i with cosine similarity s and temperature
tau:
    eta_i = -log( exp(s(z_i, z+_i)/tau)
                  / sum_{k != i} [exp(s(z_i, z_k)/tau) + exp(s(z_i, z+_k)/tau)] )
The positive is NOT in the denominator and only z anchors. `variant='simclr'` gives the usual
SimCLR loss instead (both z and z+ anchor, the positive is in the denominator).

Reduction (`reduction`, config loss.contrast_reduction): 'mean' (default) of eta_i over the global
batch B; Eq. 3 sums ('sum'). The mean keeps lambda_c = 0.1 independent of the batch size; with the
sum, the contrastive term's weight grows with B (x140 at the paper's batch).

Under pmap with `axis_name`, z and z+ are all-gathered so each
local anchor is contrasted with the whole global batch, its positive stays local, and the value
returned on every device is the global-batch loss; with gradients `pmean`-ed over devices
(the usual data-parallel step) this equals the single-device loss and gradient on the same batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jnp.ndarray


def _cosine(a: Array, b: Array) -> Array:
    a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)
    b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-12)
    return a @ b.T


def nt_xent(
    z: Array,
    z_pos: Array,
    temperature: float = 0.5,
    axis_name: str | None = None,
    variant: str = "paper",
    reduction: str = "mean",
) -> Array:
    """NT-Xent between (b, d) anchors z and (b, d) positives z_pos; scalar, float32.

    Args:
      z, z_pos: local embeddings (any norm; cosine similarity is used).
      temperature: tau.
      axis_name: pmap axis to gather negatives over (None: the local batch is the whole batch).
      variant: 'paper' (Eq. 3) or 'simclr'.
      reduction: 'mean' (default: over the global batch, so lambda_c does not depend on the batch
        size) or 'sum' (Eq. 3 literally: the mean times the global batch size).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"unknown NT-Xent reduction {reduction!r}; use 'mean' or 'sum'")
    z = z.astype(jnp.float32)
    z_pos = z_pos.astype(jnp.float32)
    b = z.shape[0]
    if axis_name is None:
        z_all, zp_all, offset = z, z_pos, 0
    else:
        z_all = jax.lax.all_gather(z, axis_name, tiled=True)
        zp_all = jax.lax.all_gather(z_pos, axis_name, tiled=True)
        offset = jax.lax.axis_index(axis_name) * b
    n = z_all.shape[0]
    own = jax.nn.one_hot(jnp.arange(b) + offset, n, dtype=bool)  # (b, n): anchor i's own column
    neg_inf = jnp.float32(-jnp.inf)
    if variant == "paper":
        s_zz = _cosine(z, z_all) / temperature
        s_zp = _cosine(z, zp_all) / temperature
        positive = jnp.sum(jnp.where(own, s_zp, 0.0), axis=-1)
        denom = jax.nn.logsumexp(
            jnp.concatenate([jnp.where(own, neg_inf, s_zz), jnp.where(own, neg_inf, s_zp)], -1),
            axis=-1,
        )
        per_anchor = denom - positive
    elif variant == "simclr":
        per_anchor = []
        for anchor, same_all, other_all in ((z, z_all, zp_all), (z_pos, zp_all, z_all)):
            s_same = jnp.where(own, neg_inf, _cosine(anchor, same_all) / temperature)
            s_other = _cosine(anchor, other_all) / temperature
            positive = jnp.sum(jnp.where(own, s_other, 0.0), axis=-1)
            per_anchor.append(jax.nn.logsumexp(jnp.concatenate([s_same, s_other], -1), -1)
                              - positive)
        per_anchor = 0.5 * (per_anchor[0] + per_anchor[1])
    else:
        raise ValueError(f"unknown NT-Xent variant {variant!r}; use 'paper' or 'simclr'")
    loss = jnp.mean(per_anchor)
    if axis_name is not None:
        loss = jax.lax.pmean(loss, axis_name)
    if reduction == "sum":
        loss = loss * n  # n: the global batch (all devices' anchors)
    return loss
