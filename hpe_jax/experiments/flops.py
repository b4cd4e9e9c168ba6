"""Analytic FLOPs of the network and of the train / evaluation steps, from the shapes alone.

Why not XLA's number: `Compiled.cost_analysis()` leaves out operations XLA hands to a library
(cuDNN convolutions on GPU are custom calls with no cost), so a GPU MFU built on it is wrong by
about 90x, and on CPU it differs from torch's counter by about 17% on the same network. This count
is the same on every platform and follows `torch.utils.flop_counter`'s convention, so it can be
checked against `benchmarks/torch_reference.py`:

- a convolution costs 2 * N * H_out * W_out * C_in * C_out * k_h * k_w (one multiply and one add
  per tap, padding taps included, bias left out);
- a transposed convolution costs 2 * N * H_in * W_in * C_in * C_out * k_h * k_w (torch counts
  `ConvTranspose2d` over its *input* positions; an implementation that computes it as a sub-pixel
  convolution computes the same products);
- a dense layer or matrix product (N, K) @ (K, M) costs 2 * N * K * M;
- backward: each operand whose gradient the step needs costs the forward FLOPs again (the
  gradient with respect to the input and the one with respect to the weight are each a
  convolution / matmul of the forward's size). So a trained layer costs 3x its forward, the
  first convolution of an encoder 2x (its input, an image or a stop-gradient depth map, needs no
  gradient), and a forward-only pass (the fine-tuning teacher, evaluation) 1x.

Beyond torch's counter (which sees only matmuls and convolutions) this counts the multiply-adds
of Eq. 1's depth attention (the channel product f . f_bar, 2 * N * C * H * W per site, and the
weights' application, N * C * H * W per stream) and of the integral read-out (uv and z: 6 * N *
s * s * J), which are a fraction of a percent of a step. BatchNorm, activations, pooling, the
softmax, the losses' elementwise work, the pseudo-label correction and the optimizer are not
counted (as in torch's counter).

Every count is for the global batch of one step; divide by the device count for per device.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from hpe_jax.hand import skeleton
from hpe_jax.models.resnet import STAGE_PLANES, resnet_spec, scaled_channels

KINDS = ("conv", "deconv", "dense", "attention", "readout", "contrast")


@dataclasses.dataclass
class FlopCount:
    """Forward and backward FLOPs of one step, by kind of operation (`KINDS`)."""

    forward: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(KINDS, 0.0))
    backward: dict[str, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(KINDS, 0.0))

    @property
    def total(self) -> float:
        """Forward + backward FLOPs of the step."""
        return sum(self.forward.values()) + sum(self.backward.values())

    def add(self, kind: str, flops: float, grads: int) -> None:
        """One operation of `flops` forward FLOPs; `grads` operand gradients (0, 1 or 2) in the
        backward, each costing the forward again."""
        self.forward[kind] += float(flops)
        self.backward[kind] += float(flops) * grads

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly: total, forward and backward totals, and the per-kind split."""
        return {"total": self.total, "forward_total": sum(self.forward.values()),
                "backward_total": sum(self.backward.values()),
                "forward": dict(self.forward), "backward": dict(self.backward)}


def _conv(c: FlopCount, n: int, h_out: int, c_in: int, c_out: int, k: int, train: bool,
          input_grad: bool = True) -> None:
    grads = (1 + int(input_grad)) if train else 0
    c.add("conv", 2.0 * n * h_out * h_out * c_in * c_out * k * k, grads)


def encoder(c: FlopCount, *, depth: int, width: float, in_channels: int, size: int, n: int,
            train: bool, stem_pool: bool = True) -> list[tuple[int, int]]:
    """Adds one pass of `resnet.ResNet` on n (size x size x in_channels) inputs.

    stem_pool: the max-pool after conv1 (`ResNet.stem_pool`); without it every stage runs at
    twice the resolution.

    Returns the five sites' (channels, side) (see `resnet.py`), for the attention and the heads.
    """
    kind, blocks = resnet_spec(depth)
    expansion = 4 if kind == "bottleneck" else 1
    ch = scaled_channels(64, width)
    h = size // 2
    # conv1's input (an image, or a depth map that is data or a stop-gradient) needs no gradient.
    _conv(c, n, h, in_channels, ch, 7, train, input_grad=False)
    sites = [(ch, h)]
    if stem_pool:
        h //= 2
    for stage, (planes, n_blocks) in enumerate(zip(STAGE_PLANES, blocks, strict=True)):
        p = scaled_channels(planes, width)
        out = p * expansion
        for k in range(n_blocks):
            stride = 2 if (stage > 0 and k == 0) else 1
            h_out = h // stride
            if kind == "basic":
                _conv(c, n, h_out, ch, p, 3, train)
                _conv(c, n, h_out, p, p, 3, train)
            else:
                _conv(c, n, h, ch, p, 1, train)
                _conv(c, n, h_out, p, p, 3, train)
                _conv(c, n, h_out, p, out, 1, train)
            if stride != 1 or ch != out:
                _conv(c, n, h_out, ch, out, 1, train)
            ch, h = out, h_out
        sites.append((ch, h))
    return sites


def decoder(c: FlopCount, *, in_channels: int, in_side: int, features: int, joints: int, n: int,
            train: bool, all_heads: bool = True, num_deconv: int = 3) -> None:
    """Adds `decoder.PoseDecoder` on (n, in_side, in_side, in_channels) features.

    all_heads: False counts only the heatmap and latent-depth heads (what uv and z need, e.g.
    evaluation, where XLA drops the mask and depth-map heads).
    """
    grads = 2 if train else 0
    ch, h = in_channels, in_side
    for _ in range(num_deconv):  # 4x4 stride-2 transposed convs, counted over input positions
        c.add("deconv", 2.0 * n * h * h * ch * features * 16, grads)
        ch, h = features, 2 * h
    head_channels = 2 * joints + (2 if all_heads else 0)
    c.add("conv", 2.0 * n * h * h * features * head_channels, grads)
    # u and v: probabilities against a constant grid (one gradient); z: probs . h_z (two).
    c.add("readout", 4.0 * n * h * h * joints, 1 if train else 0)
    c.add("readout", 2.0 * n * h * h * joints, grads)


def projection(c: FlopCount, *, in_channels: int, hidden: int, dim: int, n: int,
               train: bool) -> None:
    """Adds `decoder.ProjectionHead` (two dense layers on pooled features) on n examples."""
    c.add("dense", 2.0 * n * (in_channels * hidden + hidden * dim), 2 if train else 0)


def attention(c: FlopCount, sites: list[tuple[int, int]], *, n: int, fused: bool,
              train: bool) -> None:
    """Adds Eq. 1 at the five sites (weights, self-attention) and, if `fused`, the fusion."""
    grads = 2 if train else 0
    for ch, h in sites:
        c.add("attention", 2.0 * n * ch * h * h, grads)  # s = sum_c f * f_bar
        c.add("attention", 1.0 * n * ch * h * h * (2 if fused else 1), grads)  # w * f


def _model_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    m = config.model
    return dict(depth=m.resnet_depth, width=m.width, features=m.deconv_features,
                hidden=m.proj_hidden, dim=m.proj_dim, joints=skeleton.NUM_JOINTS,
                size=config.data.input_size, stem_pool=m.stem_pool,
                num_deconv=m.num_deconv)


def network(c: FlopCount, config: ml_collections.ConfigDict, *, n: int, train: bool,
            ways: tuple[str, ...], heads: tuple[str, ...] = (), projections: tuple[str, ...] = (),
            all_heads: bool = True) -> None:
    """Adds one `DualModalityNet` apply on n examples.

    ways: the encoder passes run ('rgb': E_R; 'depth': E_D with self-attention; 'fused': E_R
      with the depth weights; 'fused' implies E_D's pass, counted once).
    heads: the ways whose decoder output the step uses; projections: those whose projection
      head it uses (XLA drops the others).
    """
    m = _model_config(config)
    enc = dict(depth=m["depth"], width=m["width"], size=m["size"], n=n, train=train,
               stem_pool=m["stem_pool"])
    dec = dict(features=m["features"], joints=m["joints"], n=n, train=train,
               all_heads=all_heads, num_deconv=m["num_deconv"])
    top: dict[str, tuple[int, int]] = {}
    if "rgb" in ways:
        top["rgb"] = encoder(c, in_channels=3, **enc)[-1]
    if "depth" in ways or "fused" in ways:
        sites = encoder(c, in_channels=1, **enc)
        attention(c, sites, n=n, fused="fused" in ways, train=train)
        top["depth"] = sites[-1]
    if "fused" in ways:
        top["fused"] = encoder(c, in_channels=3, **enc)[-1]
    for way in heads:
        ch, h = top[way]
        decoder(c, in_channels=ch, in_side=h, **dec)
    for way in projections:
        ch, _ = top[way]
        projection(c, in_channels=ch, hidden=m["hidden"], dim=m["dim"], n=n, train=train)


def _nt_xent(c: FlopCount, n: int, dim: int, variant: str) -> None:
    # 'paper': z z_all^T and z z_pos_all^T; 'simclr': the same for both anchors. Over the devices
    # the local anchors meet the gathered batch, so the global cost is that of the whole batch.
    products = 2 if variant == "paper" else 4
    c.add("contrast", products * 2.0 * n * n * dim, 2)


def pretrain_step(config: ml_collections.ConfigDict) -> FlopCount:
    """FLOPs of `training.steps.pretrain_step` at `config.pretrain.batch_size` (global).

    Both views run through the network (2B examples) when `loss.use_contrast`; the loss switches
    decide which ways, decoder outputs and projections are used, as in the step; with
    `pretrain.fused_depth='predicted'` E_D runs twice (measured depth, then the predicted map).
    """
    loss = config.loss
    b = config.pretrain.batch_size
    n = 2 * b if loss.use_contrast else b
    ways = ("rgb",) + (("depth",) if loss.use_depth else ()) + (
        ("fused",) if loss.use_fused else ())
    terms: list[tuple[str, str]] = []
    if loss.use_contrast:
        mode = loss.contrast_mode
        if mode != "l1_align":
            terms.append(("rgb", "rgb"))
            if loss.use_depth:
                terms.append(("depth", "depth"))
            if mode == "ours" and loss.use_fused:
                terms += [("rgb", "fused")] * 2
            if mode == "intra_cross" and loss.use_depth:
                terms += [("rgb", "depth")] * 2
        else:
            terms.append(("rgb", "depth"))
    projections = tuple(w for w in ways if any(w in t for t in terms))
    c = FlopCount()
    if config.pretrain.fused_depth == "predicted" and loss.use_fused:
        # The fused way in its own apply on the RGB way's depth map: E_D runs a second time.
        first = tuple(w for w in ways if w != "fused")
        network(c, config, n=n, train=True, ways=first, heads=first,
                projections=tuple(p for p in projections if p != "fused"))
        network(c, config, n=n, train=True, ways=("fused",), heads=("fused",),
                projections=tuple(p for p in projections if p == "fused"))
    else:
        network(c, config, n=n, train=True, ways=ways, heads=ways, projections=projections)
    if loss.use_contrast and loss.contrast_mode != "l1_align":
        for _ in terms:
            _nt_xent(c, b, config.model.proj_dim, loss.contrast_variant)
    return c


def finetune_step(config: ml_collections.ConfigDict) -> FlopCount:
    """FLOPs of `training.steps.finetune_step` (global batches `finetune.batch_size` labelled +
    `finetune.unlabelled_batch_size` unlabelled).

    Teacher (forward only, inference mode): pass 1 (E_R -> D) and pass 2 (E_D, fused E_R -> D) on
    the weak target view. Student (trained): the source batch through the ways of the loss
    switches, then both passes on the strong target view. No projection head is used.
    """
    loss = config.loss
    n_s, n_t = config.finetune.batch_size, config.finetune.unlabelled_batch_size
    c = FlopCount()
    two_pass = dict(n=n_t, ways=("fused",), heads=("fused",))
    network(c, config, n=n_t, train=False, ways=("rgb",), heads=("rgb",))
    network(c, config, train=False, **two_pass)
    src_ways = ("rgb",) + (("depth",) if loss.use_depth else ()) + (
        ("fused",) if loss.use_fused else ())
    network(c, config, n=n_s, train=True, ways=src_ways, heads=src_ways)
    network(c, config, n=n_t, train=True, ways=("rgb",), heads=("rgb",))
    # y_F gets gradients from L_l, or from L_d when the distillation target is not stopped.
    f_trained = bool(loss.use_pseudo or (loss.use_distill and not loss.distill_stop_gradient))
    network(c, config, train=f_trained, **two_pass)
    return c


def eval_step(config: ml_collections.ConfigDict, batch_size: int | None = None) -> FlopCount:
    """FLOPs of the RGB path `predict_rgb` -> (uv, z) on `batch_size` (default
    `config.eval_batch_size`) images, inference mode."""
    c = FlopCount()
    network(c, config, n=batch_size or config.eval_batch_size, train=False, ways=("rgb",),
            heads=("rgb",), all_heads=False)
    return c


def resnet_classifier_step(*, depth: int, image_size: int, batch_size: int, width: float = 1.0,
                           num_classes: int = 1000) -> FlopCount:
    """FLOPs of `benchmarking.benchmark_resnet_classifier`'s training step (ResNet + fc)."""
    c = FlopCount()
    ch, _ = encoder(c, depth=depth, width=width, in_channels=3, size=image_size, n=batch_size,
                    train=True)[-1]
    c.add("dense", 2.0 * batch_size * ch * num_classes, 2)
    return c
