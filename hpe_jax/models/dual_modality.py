"""The dual-modality hand-pose network (DM-HPE Sec. 3, Fig. 2).

Two ResNet encoders, E_R (RGB) and E_D (depth map), a shared decoder D and one projection head per
encoder. Three ways in, chosen by which inputs are given:

- 'rgb'   (rgb only or both): E_R alone -> s_R -> D -> y_R; projection by the RGB head.
- 'depth' (depth only or both): E_D with depth self-attention at the five sites -> s_D -> y_D;
  projection by the depth head.
- 'fused' (both): E_R with the depth attention weights applied at the five sites -> s_F -> y_F;
  projection by the RGB head.

Attention placement: the five sites of `resnet.py` (ends of conv1, conv2_x .. conv5_x). At site k
the weights w_k = Eq. 1 of the depth features arriving at k (which were already self-attended at
sites < k); w_k multiplies those depth features (self-attention) and, in the fused pass, the RGB
features at site k. So one depth pass serves both y_D and y_F: with both inputs Eq. 1 is
evaluated exactly five times and applied five times to each stream.

Intermediates: applied with mutable=['intermediates'], every site sows into that collection, in
site order: 'attention_weights' (N, h, w, 1), the Eq. 1 weights; 'self_attended' (N, h, w, c),
the self-attended depth features; 'fused' (N, h, w, c), the RGB features times the weights (fused
pass only). `model.apply(..., mutable=['intermediates'])[1]['intermediates']` maps each name to a
tuple of five arrays (or none). Without that collection mutable, sowing does nothing.

Inputs: rgb (N, S, S, 3), normalised as the pipeline chooses (ImageNet mean/std,
`convert.IMAGENET_MEAN/STD`, when the encoders come from torchvision); depth (N, S, S, 1), any
float map (the project's normalised depth: about [-1, 1], background 1). S must be divisible by
the encoder's stride (32, or 16 without the stem pool: `resnet.encoder_stride`); outputs are at
s = S / stride * 2**num_deconv.

Parameter tree: `rgb_encoder`, `depth_encoder` (`resnet.ResNet`, unrolled or, with
`scan_blocks`, stacked blocks), `decoder` (`decoder.PoseDecoder`,
holds the scalar `beta`), `rgb_projection`, `depth_projection` (`decoder.ProjectionHead`).
BatchNorm statistics live under the same names in `batch_stats`. In a training call each module's
running statistics are updated once per pass that uses it (the shared decoder up to three times).

Initialise with both inputs so that every path gets its variables:
`jax.jit(functools.partial(model.init, train=False))({'params': key}, rgb, depth)`; jitting `init`
matters on CPU, where the eager version compiles one random kernel per parameter shape.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hpe_jax.models import attention
from hpe_jax.models.decoder import PoseDecoder, ProjectionHead
from hpe_jax.models.resnet import ResNet, encoder_stride, resnet_spec

Array = jax.Array


class DualModalityNet(nn.Module):
    """E_R, E_D, the shared decoder and the two projection heads.

    Attributes:
      resnet_depth: 18, 34, 50 or 101 (both encoders).
      width: multiplier on every encoder convolution's channels (e.g. 0.25 for CPU demos).
      num_joints: J.
      deconv_features: channels of the three decoder deconvolutions (not scaled by `width`).
      proj_hidden, proj_dim: widths of the two projection layers.
      attention_eps: Eq. 1 guard (`attention.depth_attention_weights`).
      beta_init: initial value of the decoder's learnable soft-argmax sharpness beta.
      bn_axis_name: named device axis over which BatchNorm statistics are averaged in training
        (e.g. 'batch' under pmap); None for per-device statistics.
      bn_momentum: Flax momentum of BatchNorm running statistics.
      stem_pool: the encoders' max-pool after conv1 (`resnet.ResNet.stem_pool`).
      scan_blocks: run each encoder stage's identical blocks as one `nn.scan` loop
        (`resnet.ResNet.scan_blocks`: the same function, far less to compile; the encoders'
        variables then have the stacked `layer{s}_blocks` layout).
      num_deconv: the decoder's upsampling layers (`decoder.PoseDecoder.num_deconv`); the output
        stride is 32 / 2**num_deconv, halved without the stem pool.
      deconv_impl: how the decoder computes its transposed convolutions ('auto', 'transpose',
        'subpixel'; the same function and parameters, `decoder.Deconv`).
      conv_grad: how every convolution's kernel gradient is computed ('xla',
        'stored'; the same function, `conv.py`).
      dtype: compute dtype (float32 or bfloat16); parameters are float32, outputs float32.
    """

    resnet_depth: int = 18
    width: float = 1.0
    num_joints: int = 21
    deconv_features: int = 256
    proj_hidden: int = 512
    proj_dim: int = 128
    attention_eps: float = 1e-6
    beta_init: float = 1.0
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    deconv_impl: str = "auto"
    stem_pool: bool = True
    scan_blocks: bool = False
    num_deconv: int = 3
    conv_grad: str = "xla"
    dtype: Any = jnp.float32

    def setup(self) -> None:
        resnet_spec(self.resnet_depth)  # fails early and clearly on an unsupported depth
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}.")
        common = dict(depth=self.resnet_depth, width=self.width, bn_axis_name=self.bn_axis_name,
                      bn_momentum=self.bn_momentum, stem_pool=self.stem_pool,
                      scan_blocks=self.scan_blocks, conv_grad=self.conv_grad, dtype=self.dtype)
        self.rgb_encoder = ResNet(**common)
        self.depth_encoder = ResNet(**common)
        self.decoder = PoseDecoder(num_joints=self.num_joints, features=self.deconv_features,
                                   bn_axis_name=self.bn_axis_name, bn_momentum=self.bn_momentum,
                                   beta_init=self.beta_init, deconv_impl=self.deconv_impl,
                                   num_deconv=self.num_deconv, conv_grad=self.conv_grad,
                                   dtype=self.dtype)
        self.rgb_projection = ProjectionHead(self.proj_hidden, self.proj_dim, self.dtype)
        self.depth_projection = ProjectionHead(self.proj_hidden, self.proj_dim, self.dtype)

    def __call__(self, rgb: Array | None = None, depth: Array | None = None, *,
                 train: bool, ways: tuple[str, ...] | None = None
                 ) -> dict[str, dict[str, Array]]:
        """Runs every way in that the inputs allow.

        Args:
          rgb: (N, S, S, 3) or None. depth: (N, S, S, 1) or None. At least one is needed.
          train: BatchNorm in training mode (pass mutable=['batch_stats'] to apply).
          ways: which of 'rgb', 'depth', 'fused' to compute (default: all the inputs allow).
            The second pass of fine-tuning asks for ('fused',) alone: the depth encoder still
            runs (its attention weights drive the fused pass), but neither E_R's plain pass nor
            the depth head does.
        Returns:
          {'rgb': y_R, 'depth': y_D, 'fused': y_F} restricted to the available ways; each value
          is the decoder dict ('uv' (N, J, 2), 'z' (N, J), 'heatmaps' (N, s, s, J), 'mask',
          'depth_map' (N, s, s, 1)) plus 'projection' (N, proj_dim), all float32.
        """
        _check_inputs(rgb, depth, encoder_stride(self.stem_pool))
        available = (("rgb",) if rgb is not None else ()) + (
            ("depth",) if depth is not None else ()) + (
            ("fused",) if rgb is not None and depth is not None else ())
        ways = available if ways is None else tuple(ways)
        if not ways or not set(ways) <= set(available):
            raise ValueError(f"ways={ways} needs inputs that were not given; with these inputs "
                             f"the ways are {available}.")
        outs: dict[str, dict[str, Array]] = {}
        if "rgb" in ways:
            s_r = self.rgb_encoder(rgb, train=train)[-1]
            outs["rgb"] = self._head(s_r, self.rgb_projection, train)
        if "depth" in ways or "fused" in ways:
            weights: list[Array] = []

            def self_attention_hook(site: int, f: Array) -> Array:
                w = attention.depth_attention_weights(f, self.attention_eps)
                weights.append(w)
                self.sow("intermediates", "attention_weights", w)
                attended = attention.self_attend(w, f)
                self.sow("intermediates", "self_attended", attended)
                return attended

            def fusion_hook(site: int, f: Array) -> Array:
                fused = attention.fuse(weights[site], f)
                self.sow("intermediates", "fused", fused)
                return fused

            s_d = self.depth_encoder(depth, train=train, site_hook=self_attention_hook)[-1]
            if "depth" in ways:
                outs["depth"] = self._head(s_d, self.depth_projection, train)
            if "fused" in ways:
                s_f = self.rgb_encoder(rgb, train=train, site_hook=fusion_hook)[-1]
                # z_F through the RGB head: s_F is E_R's features re-weighted by depth
                # attention, from the same encoder (the paper's figure leaves it open).
                outs["fused"] = self._head(s_f, self.rgb_projection, train)
        return outs

    def predict_rgb(self, rgb: Array, *, train: bool = False) -> dict[str, Array]:
        """The RGB-only prediction y_R (evaluation and export): the 'rgb' dict of `__call__`."""
        return self(rgb=rgb, train=train)["rgb"]

    def two_pass(self, rgb: Array, *, train: bool = False, keep_first_pass_stats: bool = False
                 ) -> tuple[dict[str, Array], dict[str, Array]]:
        """The fine-tuning teacher's and student's inference on RGB alone: pass 1 (E_R + D)
        gives y_R with its depth map d_R; pass 2 feeds the image with d_R (upsampled to the
        input size, clipped, a stop-gradient input: pass 2 refines, it does not train pass 1's
        depth head through the depth encoder) through E_D and the attention, giving y_F.

        Args:
          rgb: (N, S, S, 3). train: BatchNorm in training mode (apply with
            mutable=['batch_stats']: the running statistics are threaded through both passes).
          keep_first_pass_stats: in training mode, also sow the running statistics as they
            stand after pass 1 into the 'first_pass' collection (apply with it mutable), for
            callers that keep pass 1's statistics for the RGB path (`finetune.bn_stats`).
        Returns:
          (y_R, y_F), each the decoder dict of `__call__`.
        """
        y_r = self(rgb=rgb, train=train, ways=("rgb",))["rgb"]
        if train and keep_first_pass_stats:
            # A copy of the containers: `self.variables` is a live view that pass 2's updates
            # would overwrite (the arrays themselves are immutable).
            self.sow("first_pass", "batch_stats",
                     jax.tree_util.tree_map(lambda x: x, self.variables["batch_stats"]))
        return y_r, self.fused_pass(rgb, y_r, train=train)

    def fused_pass(self, rgb: Array, y_r: dict[str, Array], *, train: bool = False
                   ) -> dict[str, Array]:
        """Pass 2 of `two_pass`: the fused way on `rgb` with y_R's depth map (upsampled to the
        input size, clipped, a stop-gradient input) in place of a measured depth: y_F. The
        labelled pass with `pretrain.fused_depth='predicted'` (`training.steps.apply_labelled`)
        runs it after its own first pass, so both phases feed the fused way alike."""
        d_r = jax.lax.stop_gradient(upsample_depth(y_r["depth_map"], rgb.shape[1]))
        return self(rgb=rgb, depth=d_r, train=train, ways=("fused",))["fused"]

    def _head(self, s: Array, projection: nn.Module, train: bool) -> dict[str, Array]:
        y = self.decoder(s, train=train)
        y["projection"] = projection(s)
        return y


def upsample_depth(depth_map: Array, size: int) -> Array:
    """(N, s, s, 1) predicted normalised depth map -> (N, size, size, 1) depth-encoder input:
    bilinear, clipped to the normalised range [-1, 1]."""
    n = depth_map.shape[0]
    up = jax.image.resize(depth_map, (n, size, size, 1), method="bilinear")
    return jnp.clip(up, -1.0, 1.0)


def _check_inputs(rgb: Array | None, depth: Array | None, stride: int) -> None:
    if rgb is None and depth is None:
        raise ValueError("DualModalityNet needs rgb (N, S, S, 3), depth (N, S, S, 1) or both.")
    for name, x, c in (("rgb", rgb, 3), ("depth", depth, 1)):
        if x is None:
            continue
        if x.ndim != 4 or x.shape[-1] != c or x.shape[1] != x.shape[2] or x.shape[1] % stride:
            raise ValueError(
                f"{name} must be (N, S, S, {c}) with S divisible by the encoder's stride "
                f"{stride}, got shape {x.shape}; "
                f"crop/resize to e.g. 256 x 256 (add a trailing channel axis to a depth map).")
    if rgb is not None and depth is not None and rgb.shape[:3] != depth.shape[:3]:
        raise ValueError(
            f"rgb {rgb.shape} and depth {depth.shape} must share batch size and image size.")
