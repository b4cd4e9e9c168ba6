"""A 2D convolution whose kernel gradient reads its input as the forward pass stored it.

XLA:CPU differentiates a convolution's kernel with another convolution that contracts over the
batch, so it first transposes the convolution's input x from (N, H, W, C) to (C, H, W, N). It
does not read the x the forward pass stored: it fuses x's producers (the previous layers'
BatchNorm, ReLU and residual additions, up to three BatchNorm applications) into the
transposing loop and recomputes them there, in the transposed order, which is slow. On the
`make reproduce` network those transposes were a fifth to a third of the pre-training step
(docs/benchmarks.md).

`conv_stored_input` is `lax.conv_general_dilated` with a custom VJP whose kernel gradient takes
x through a conditional whose two branches both return x: XLA cannot fuse through a
conditional, so x is a stored buffer and the transpose a plain copy. (An
`optimization_barrier` does not do it: XLA:CPU removes barriers before fusion.) The forward
pass and both gradients are XLA's own convolutions on the same values: the same function
(tests/models/test_conv.py compares the gradients with XLA's).

`model.conv_grad` picks it: 'xla' (XLA's gradient as is) or 'stored' (this one); 'auto' is
resolved by `training.factory` (per CPU kind, where it was measured).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

CONV_GRADS = ("xla", "stored")


def check_conv_grad(impl: str) -> str:
    """`impl` if the models know it, else a ValueError that names the choices."""
    if impl not in CONV_GRADS:
        raise ValueError(f"model.conv_grad={impl!r} is not one of {CONV_GRADS + ('auto',)}; "
                         "set one of them (auto: the fastest measured for this machine).")
    return impl


def stored(x: Array) -> Array:
    """x itself, as a buffer XLA cannot fuse x's producers through (both branches return x;
    the predicate only has to be one XLA cannot fold)."""
    return lax.cond(jnp.isfinite(x.reshape(-1)[0]), lambda a: a, lambda a: a * 1, x)


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return tuple(_freeze(v) for v in value)
    return value


def _plain(lhs: Array, rhs: Array, params: tuple) -> Array:
    return lax.conv_general_dilated(lhs, rhs, **dict(params))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(lhs: Array, rhs: Array, params: tuple) -> Array:
    return _plain(lhs, rhs, params)


def _conv_fwd(lhs: Array, rhs: Array, params: tuple) -> tuple[Array, tuple[Array, Array]]:
    return _plain(lhs, rhs, params), (stored(lhs), rhs)


def _conv_bwd(params: tuple, residuals: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
    x, w = residuals
    _, vjp = jax.vjp(lambda a, b: _plain(a, b, params), x, w)
    return vjp(g)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_stored_input(
    lhs: Array, rhs: Array, window_strides: Sequence[int],
    padding: str | Sequence[tuple[int, int]], lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None, dimension_numbers: Any = None,
    feature_group_count: int = 1, batch_group_count: int = 1, precision: Any = None,
    preferred_element_type: Any = None,
) -> Array:
    """`lax.conv_general_dilated`'s signature and function (so `nn.Conv(conv_general_dilated=
    ...)` takes it), differentiated with the input stored for the kernel gradient."""
    params = (("window_strides", _freeze(window_strides)), ("padding", _freeze(padding)),
              ("lhs_dilation", _freeze(lhs_dilation)), ("rhs_dilation", _freeze(rhs_dilation)),
              ("dimension_numbers", _freeze(dimension_numbers)),
              ("feature_group_count", feature_group_count),
              ("batch_group_count", batch_group_count), ("precision", precision),
              ("preferred_element_type", preferred_element_type))
    return _conv(lhs, rhs, params)


def conv_function(impl: str) -> Callable[..., Array]:
    """The convolution `nn.Conv` should call for `model.conv_grad` = impl ('xla' or 'stored')."""
    return conv_stored_input if check_conv_grad(impl) == "stored" else lax.conv_general_dilated
