"""The shared multimodal decoder D and the integral 2.5D read-out (METHOD.md sections 2 and 3).

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

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

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


class PoseDecoder(nn.Module):
    """D: (N, S/32, S/32, C) encoder features -> the prediction y at S/4.

    Returns a dict of float32 arrays: 'uv' (N, J, 2), 'z' (N, J), 'heatmaps' (N, s, s, J),
    'mask' (N, s, s, 1) sigmoid probability, 'depth_map' (N, s, s, 1) linear (the normalised depth
    representation of the depth input), with s = S/4.
    """

    num_joints: int = 21
    features: int = 256
    beta_init: float = 1.0
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool) -> dict[str, Array]:
        for i in range(3):
            x = nn.ConvTranspose(self.features, (4, 4), strides=(2, 2), padding="SAME",
                                 use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
                                 name=f"deconv{i}")(x)
            x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=BN_EPSILON, axis_name=self.bn_axis_name, dtype=self.dtype,
                             param_dtype=jnp.float32, name=f"deconv{i}_bn")(x)
            x = nn.relu(x)

        def head(features: int, name: str) -> Array:
            return nn.Conv(features, (1, 1), dtype=self.dtype, param_dtype=jnp.float32,
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
