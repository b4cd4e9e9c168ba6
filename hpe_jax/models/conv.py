"""A 2D convolution whose weight gradient is a matrix product over the input's windows.

XLA:CPU differentiates a convolution's kernel with another convolution that contracts over the
batch, and first transposes every activation gradient from (N, H, W, C) to (C, H, W, N): on the
small channel counts of the CPU configs those transposes cost about a fifth of a training step
(docs/benchmarks.md). `conv_patches_grad` computes the same gradient as
dW[kh, kw, c, o] = sum over (n, h, w) of window(x)[n, h, w, kh, kw, c] * g[n, h, w, o]:
the windows are shifted (strided) slices of the padded input, concatenated, and the sum is one
matrix product. The forward pass and the input gradient are XLA's own; the function is the same,
rounded differently (tests/models/test_conv.py).

`model.conv_grad` picks it: 'xla' (XLA's gradient), 'patches' (this one) or 'auto' ('patches'
when JAX's default backend is the CPU, else 'xla': cuDNN's gradients need no help).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jnp.ndarray

CONV_GRADS = ("auto", "xla", "patches")
_NHWC = ("NHWC", "HWIO", "NHWC")


def resolve_conv_grad(impl: str) -> str:
    """'auto' -> 'patches' on the CPU backend, 'xla' elsewhere; other values are checked."""
    if impl not in CONV_GRADS:
        raise ValueError(f"model.conv_grad={impl!r} is not one of {CONV_GRADS}.")
    if impl == "auto":
        return "patches" if jax.default_backend() == "cpu" else "xla"
    return impl


def _windows(x: Array, kh: int, kw: int, strides: tuple[int, int],
             padding: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    """(N, Ho, Wo, kh * kw * C): the input under each output pixel's window, (kh, kw, C) order."""
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, h, w, c = xp.shape
    sh, sw = strides
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = [lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c),
                      (1, sh, sw, 1))
            for i in range(kh) for j in range(kw)]
    return cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)


def _plain(x: Array, w: Array, strides: tuple[int, int],
           padding: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x: Array, w: Array, strides: tuple[int, int],
          padding: tuple[tuple[int, int], tuple[int, int]]) -> Array:
    return _plain(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
    return _plain(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
    x, w = residuals
    kh, kw, c, o = w.shape
    _, vjp_x = jax.vjp(lambda x_: _plain(x_, w, strides, padding), x)
    (dx,) = vjp_x(g)
    windows = _windows(x, kh, kw, strides, padding)
    dw = jnp.einsum("nhwk,nhwo->ko", windows, g.astype(windows.dtype))
    return dx, dw.reshape(kh, kw, c, o).astype(w.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _explicit_padding(padding: str | Sequence[tuple[int, int]], x: Array, w: Array,
                      strides: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(x.shape[1:3], w.shape[:2], strides, padding)
    else:
        pads = padding
    return tuple((int(lo), int(hi)) for lo, hi in pads)  # type: ignore[return-value]


def conv_patches_grad(
    lhs: Array, rhs: Array, window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
    feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
    preferred_element_type: Any = None,
) -> Array:
    """`lax.conv_general_dilated`'s signature (so `nn.Conv(conv_general_dilated=...)` takes it)
    with the windowed weight gradient above for the plain case: 2D, NHWC / HWIO, no dilation,
    one group. Anything else is passed to `lax.conv_general_dilated` unchanged."""
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    plain = (dn == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
             and lhs.ndim == 4 and feature_group_count == 1 and batch_group_count == 1
             and all(d == 1 for d in (lhs_dilation or (1, 1)))
             and all(d == 1 for d in (rhs_dilation or (1, 1)))
             and precision is None and preferred_element_type is None)
    if not plain:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    strides = tuple(int(s) for s in window_strides)
    return _conv(lhs, rhs, strides, _explicit_padding(padding, lhs, rhs, strides))


def conv_function(impl: str) -> Callable[..., Array]:
    """The convolution `nn.Conv` should call for `model.conv_grad` = impl."""
    return conv_patches_grad if resolve_conv_grad(impl) == "patches" else lax.conv_general_dilated
