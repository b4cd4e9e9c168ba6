"""The shared multimodal decoder D and the integral 2.5D read-out (DM-HPE Sec. 3, SemiHand).

One D, with the same weights, decodes the RGB (s_R), depth (s_D) and attention-fused (s_F)
features into y_R, y_D and y_F.

D follows SimpleBaseline (Xiao et al. 2018): three 4x4 stride-2 transposed convolutions, each with
BatchNorm and ReLU, take the stride-32 encoder features to stride 4 (output = input / 4); then 1x1
convolutions give per-joint 2D heatmap logits h_uv (J), per-joint latent depth maps h_z (J), a hand
mask logit (1) and a depth map (1).

Integral read-out (Iqbal et al. 2018, SemiHand): with p_j = softmax over the s*s positions of
beta * h_uv[j],
    uv_j = sum_g g * p_j(g),    z_j = sum_g h_z[j](g) * p_j(g),
g = (u, v) = (column, row) of an output pixel with pixel centres at integers, so uv is in
output-heatmap pixels (`hand.camera` conventions). beta is a learnable scalar parameter `beta`,
initialised to `beta_init` = 1.0: the heatmap logits themselves are free to sharpen, beta just
gives the temperature its own learning signal. z is whatever the training targets make it (the
project: root-relative, reference-bone units, `hand.camera.encode_25d`).

Every output is float32 whatever the compute dtype (the read-out and the sigmoid run in float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from hpe_jax.models.conv import conv_function
from hpe_jax.models.resnet import BN_EPSILON

Array = jax.Array


def integral_readout(heatmap_logits: Array, latent_depth: Array, beta: Array) -> tuple:
    """The 2.5D integral read-out.

    Args:
      heatmap_logits: (N, s, s, J) h_uv; latent_depth: (N, s, s, J) h_z; beta: scalar.
    Returns:
      uv (N, J, 2) float32 output pixels (u = column, v = row), z (N, J) float32,
      heatmaps (N, s, s, J) float32 probability maps softmax(beta * h_uv) (sum 1 per joint).
    """
    n, h, w, j = heatmap_logits.shape
    logits = beta.astype(jnp.float32) * heatmap_logits.astype(jnp.float32)
    probs = jax.nn.softmax(logits.reshape(n, h * w, j), axis=1).reshape(n, h, w, j)
    cols = jnp.arange(w, dtype=jnp.float32)
    rows = jnp.arange(h, dtype=jnp.float32)
    u = jnp.einsum("nhwj,w->nj", probs, cols)
    v = jnp.einsum("nhwj,h->nj", probs, rows)
    z = jnp.sum(probs * latent_depth.astype(jnp.float32), axis=(1, 2))
    return jnp.stack([u, v], axis=-1), z, probs


DECONV_IMPLS = ("auto", "transpose", "subpixel")


def resolve_deconv_impl(impl: str) -> str:
    """'auto' -> 'subpixel' on CPU (XLA:CPU's transposed convolution is several times slower than
    the equivalent ordinary one), 'transpose' elsewhere (cuDNN / TPU handle it natively)."""
    if impl not in DECONV_IMPLS:
        raise ValueError(f"model.deconv_impl={impl!r} is not one of {DECONV_IMPLS}.")
    if impl == "auto":
        return "subpixel" if jax.default_backend() == "cpu" else "transpose"
    return impl


def subpixel_kernel(kernel: Array) -> Array:
    """The 4x4 stride-2 transposed-convolution kernel as a 3x3 kernel with 4x the outputs.

    With Flax's `ConvTranspose(padding='SAME')` (no kernel flip), output pixel (2m + a, 2n + b)
    is sum over taps ty, tx in {0, 1} of x[m + a + ty - 1, n + b + tx - 1] . W[2 ty + a, 2 tx + b].
    So phase (a, b) is a 2x2 correlation, placed at rows a..a+1, columns b..b+1 of a 3x3 window
    centred on m; the other five taps are zero.

    Args:
      kernel: (4, 4, C_in, C_out) Flax ConvTranspose kernel.
    Returns:
      (3, 3, C_in, 4 * C_out) HWIO kernel; output channels ordered (a, b, c).
    """
    ci, co = kernel.shape[2], kernel.shape[3]
    w2 = kernel.reshape(2, 2, 2, 2, ci, co).transpose(0, 2, 4, 1, 3, 5)  # ty, tx, ci, a, b, co
    w3 = jnp.zeros((3, 3, ci, 2, 2, co), kernel.dtype)
    for a in range(2):
        for b in range(2):
            w3 = w3.at[a:a + 2, b:b + 2, :, a, b].set(w2[:, :, :, a, b])
    return w3.reshape(3, 3, ci, 4 * co)


class Deconv(nn.Module):
    """A bias-free 4x4 stride-2 'SAME' transposed convolution, (N, h, w, C) -> (N, 2h, 2w, F).

    Parameters: 'kernel' (4, 4, C, F), exactly as `nn.ConvTranspose` stores it, so checkpoints do
    not depend on `impl`. 'transpose' calls `nn.ConvTranspose`'s operation; 'subpixel' computes
    the same function as one 3x3 convolution to 4F channels followed by depth-to-space
    (`subpixel_kernel`): equal to float rounding, 2.25x the multiply-adds (the zero taps) but
    several times faster on XLA:CPU, whose transposed convolution is slow.
    """

    features: int
    impl: str = "transpose"
    dtype: Any = jnp.float32
    conv_grad: str = "xla"  # the sub-pixel convolution's kernel gradient (`conv.py`)
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", self.kernel_init, (4, 4, x.shape[-1], self.features),
                            jnp.float32)
        x = x.astype(self.dtype)
        kernel = kernel.astype(self.dtype)
        if self.impl == "transpose":
            return lax.conv_transpose(x, kernel, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
        n, h, w, _ = x.shape
        y = conv_function(self.conv_grad)(x, subpixel_kernel(kernel), (1, 1),
                                          ((1, 1), (1, 1)),
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
        y = y.reshape(n, h, w, 2, 2, self.features).transpose(0, 1, 3, 2, 4, 5)
        return y.reshape(n, 2 * h, 2 * w, self.features)


class PoseDecoder(nn.Module):
    """D: (N, S/32, S/32, C) encoder features -> the prediction y at S/4.

    `num_deconv` (3, SimpleBaseline's) upsampling layers each double the resolution; with an
    encoder of stride 16 (`ResNet.stem_pool=False`) two of them give the same S/4 output.

    Returns a dict of float32 arrays: 'uv' (N, J, 2), 'z' (N, J), 'heatmaps' (N, s, s, J),
    'mask' (N, s, s, 1) sigmoid probability, 'depth_map' (N, s, s, 1) linear (the normalised depth
    representation of the depth input), with s = S/4.
    """

    num_joints: int = 21
    features: int = 256
    beta_init: float = 1.0
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    deconv_impl: str = "auto"
    num_deconv: int = 3
    conv_grad: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> dict[str, Array]:
        impl = resolve_deconv_impl(self.deconv_impl)
        for i in range(self.num_deconv):
            x = Deconv(self.features, impl, self.dtype, self.conv_grad, name=f"deconv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=BN_EPSILON, axis_name=self.bn_axis_name, dtype=self.dtype,
                             param_dtype=jnp.float32, name=f"deconv{i}_bn")(x)
            x = nn.relu(x)

        def head(features: int, name: str) -> Array:
            return nn.Conv(features, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
                           conv_general_dilated=conv_function(self.conv_grad),
                           name=name)(x).astype(jnp.float32)

        heatmap_logits = head(self.num_joints, "heatmap_head")
        latent_depth = head(self.num_joints, "latent_depth_head")
        mask_logit = head(1, "mask_head")
        depth_map = head(1, "depth_map_head")
        beta = self.param("beta", nn.initializers.constant(self.beta_init), (), jnp.float32)
        uv, z, heatmaps = integral_readout(heatmap_logits, latent_depth, beta)
        return {"uv": uv, "z": z, "heatmaps": heatmaps, "mask": jax.nn.sigmoid(mask_logit),
                "depth_map": depth_map}


class ProjectionHead(nn.Module):
    """Two fully connected layers on globally average-pooled features, L2-normalised.

    (N, h, w, C) -> (N, dim) float32 unit vectors (the contrastive embedding z of Eq. 3).
    """

    hidden: int = 512
    dim: int = 128
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(self.dtype)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, param_dtype=jnp.float32,
                             name="fc1")(x))
        x = nn.Dense(self.dim, dtype=self.dtype, param_dtype=jnp.float32, name="fc2")(x)
        x = x.astype(jnp.float32)
        # The epsilon only matters for an exactly-zero vector (then the output is 0, not NaN).
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
