"""Depth attention (DM-HPE Eq. 1) and an introspection helper that finds where it is applied.

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

Both functions are wrapped in a named `jax.jit` so that `attention_sites` can find every call in
a traced program (the nested jit is inlined by XLA; it costs nothing at run time).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def _depth_attention_weights(f: Array, eps: float) -> Array:
    f32 = f.astype(jnp.float32)
    f_bar = jnp.mean(f32, axis=(1, 2), keepdims=True)  # (N, 1, 1, C)
    s = jnp.sum(f32 * f_bar, axis=-1, keepdims=True)  # (N, H, W, 1)
    w = (s + eps) / (jnp.mean(s, axis=(1, 2), keepdims=True) + eps)
    return w.astype(f.dtype)


def _self_attention(weights: Array, f: Array) -> Array:
    return weights * f


def _fused_attention(weights: Array, f: Array) -> Array:
    return weights * f


_weights_jit = jax.jit(_depth_attention_weights, static_argnames="eps")
_self_jit = jax.jit(_self_attention)
_fused_jit = jax.jit(_fused_attention)


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
    return _weights_jit(f, eps=float(eps))


def self_attend(weights: Array, depth_features: Array) -> Array:
    """Att(f^D) * f^D: (N, H, W, 1) weights times (N, H, W, C) depth features."""
    return _self_jit(weights, depth_features)


def fuse(weights: Array, rgb_features: Array) -> Array:
    """Att(f^D) * f^R: depth weights (N, H, W, 1) times (N, H, W, C) RGB features."""
    return _fused_jit(weights, rgb_features)


_SITE_NAMES = {
    "_depth_attention_weights": "weights",
    "_self_attention": "self",
    "_fused_attention": "fused",
}


def attention_sites(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, list]:
    """Traces `fn(*args, **kwargs)` and lists every Eq. 1 computation and application.

    Returns a dict with keys 'weights' (where Eq. 1 is evaluated), 'self' (depth features
    multiplied by their weights) and 'fused' (RGB features multiplied by depth weights); each maps
    to the list of (H, W, C) feature shapes at those calls, in program order. Nothing is run:
    the function is only traced (`jax.make_jaxpr`), so this is cheap even for ResNet-101.
    """
    closed = jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args)
    found: dict[str, list] = {v: [] for v in _SITE_NAMES.values()}
    _walk(closed.jaxpr, found)
    return found


def count_attention_sites(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, int]:
    """Like `attention_sites` but returns the number of calls of each kind."""
    return {k: len(v) for k, v in attention_sites(fn, *args, **kwargs).items()}


def _walk(jaxpr: Any, found: dict[str, list]) -> None:
    for eqn in jaxpr.eqns:
        kind = _SITE_NAMES.get(str(eqn.params.get("name", "")))
        if kind is not None:
            features = eqn.invars[0] if kind == "weights" else eqn.invars[1]
            found[kind].append(tuple(features.aval.shape[1:]))
            continue
        for sub in _sub_jaxprs(eqn.params):
            _walk(sub, found)


def _sub_jaxprs(params: dict) -> list:
    subs = []
    for value in params.values():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                subs.append(v.jaxpr)
            elif isinstance(v, jax.extend.core.Jaxpr):
                subs.append(v)
    return subs
