"""Depth attention (DM-HPE Eq. 1).

Eq. 1: for a depth feature map f (h x w positions, c channels) with channel vector
f_bar = mean_ij f_ij (the spatial mean, one value per channel),

    w_ij = <f_bar, f_ij> / sum_kl <f_bar, f_kl> * (h * w),

so the weights average to 1 over positions. The weight map is broadcast over channels and
multiplies either the depth features themselves (self-attention) or the RGB features at the same
place (fusion). Attention is only ever computed from depth features.

Epsilon guard (the project's choice; the paper has none): the five sites follow a ReLU, so every
inner product s_ij = <f_bar, f_ij> is >= 0, but an all-zero map (e.g. a blank depth crop, or dead
channels) would divide 0 by 0. We add eps to every s_ij:

    w_ij = (s_ij + eps) / (mean_kl s_kl + eps),

which equals Eq. 1 when eps << mean s (eps = 1e-6 against inner products of O(1e-2..1e2) for
BatchNorm-ed features), keeps the mean of the weights exactly 1 for any eps, and turns an all-zero
map into uniform weights 1 (attention becomes the identity rather than NaN or zeroing the RGB
stream). The weights are computed in float32 whatever the compute dtype, then cast back.

Where the weights are computed and applied is recorded by the network itself
(`dual_modality.DualModalityNet` sows them in the 'intermediates' collection).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array


@functools.partial(jax.jit, static_argnames="eps")
def _depth_attention_weights(f: Array, eps: float) -> Array:
    # Jitted so that an eager call computes exactly what the network does inside its jit (one
    # fused computation; inlined there by XLA, so free at run time).
    f32 = f.astype(jnp.float32)
    f_bar = jnp.mean(f32, axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    s = jnp.sum(f32 * f_bar, axis=-1, keepdims=True)  # (N, H, W, 1)
    w = (s + eps) / (jnp.mean(s, axis=(1, 2), keepdims=True) + eps)
    return w.astype(f.dtype)


def depth_attention_weights(f: Array, eps: float = 1e-6) -> Array:
    """Eq. 1 with the epsilon guard of the module docstring.

    Args:
      f: (N, H, W, C) non-negative depth feature map (post-ReLU), any float dtype.
      eps: guard added to every inner product (and hence to their mean); must be >= 0.
    Returns:
      (N, H, W, 1) weights in f's dtype; their mean over the H*W positions is 1.
    """
    if f.ndim != 4:
        raise ValueError(f"depth_attention_weights expects (N, H, W, C) features, got {f.shape}.")
    if eps < 0:
        raise ValueError(f"attention eps must be >= 0, got {eps}.")
    return _depth_attention_weights(f, eps=float(eps))


def self_attend(weights: Array, depth_features: Array) -> Array:
    """Att(f^D) * f^D: (N, H, W, 1) weights times (N, H, W, C) depth features."""
    return weights * depth_features


def fuse(weights: Array, rgb_features: Array) -> Array:
    """Att(f^D) * f^R: depth weights (N, H, W, 1) times (N, H, W, C) RGB features."""
    return weights * rgb_features
