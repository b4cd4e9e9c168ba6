"""ResNet-18/34/50/101 encoders with torchvision's topology, NHWC, exposing five feature sites.

Topology (torchvision `resnet{18,34,50,101}`, "v1.5"): a 7x7/2 stem convolution with BatchNorm and
ReLU, a 3x3/2 max-pool, then four stages of BasicBlocks (18, 34) or Bottlenecks (50, 101). A
bottleneck puts its stride on the 3x3 convolution; a block whose stride or width changes has a
1x1 convolution + BatchNorm shortcut. BatchNorm epsilon is torchvision's 1e-5 and Flax's momentum
0.9 is torchvision's momentum 0.1.

The five sites (where DM-HPE places its depth attention: depth self-attention in E_D, depth
attention on the RGB features in E_R) are the ends of
  0: conv1    (after its ReLU, before the max-pool)   stride 2,  64 * width channels
  1: conv2_x  (torchvision `layer1`)                  stride 4,  64 * e * width
  2: conv3_x  (`layer2`)                              stride 8, 128 * e * width
  3: conv4_x  (`layer3`)                              stride 16, 256 * e * width
  4: conv5_x  (`layer4`)                              stride 32, 512 * e * width
with e = 1 (BasicBlock) or 4 (Bottleneck). All five follow a ReLU, so they are non-negative.
An optional `site_hook(index, features) -> features` is applied at each site and its result is
what the rest of the network sees (this is where depth attention goes, `dual_modality.py`).

Parameter tree (mirrors torchvision's names, see `convert.py`): `conv1`, `bn1`, then blocks
`layer{1..4}_{k}` each with `conv1`, `bn1`, `conv2`, `bn2` (+ `conv3`, `bn3` for bottlenecks) and,
where present, `downsample_conv`, `downsample_bn`. No classifier: torchvision's `fc` is dropped.

With `scan_blocks=True` the blocks k >= 1 of a stage (identical in shape: stride 1, no
downsample) run as one `flax.linen.scan` loop, so XLA compiles one block body per stage instead
of up to 22 (ResNet-101's conv4_x); what is computed is the same. Their variables then live under
one module per stage, `layer{s}_blocks`, every leaf stacked on a leading axis of length
(blocks in the stage - 1): index j holds block k = j + 1 (`layer{s}_blocks/conv1/kernel[j]` is
`layer{s}_{j+1}/conv1/kernel`). `layer{s}_0` is unchanged. `scan_variables` / `unscan_variables`
convert a variables tree between the two layouts (pure functions, any leaf type).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.models.conv import conv_function

Array = jax.Array
SiteHook = Callable[[int, Array], Array]

# depth -> (block type, blocks per stage), as torchvision builds them.
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STAGE_PLANES = (64, 128, 256, 512)
BN_EPSILON = 1e-5  # torchvision's BatchNorm2d default
NUM_SITES = 5


def resnet_spec(depth: int) -> tuple[str, tuple[int, int, int, int]]:
    """(block type, blocks per stage) for a ResNet depth; a clear error for unsupported depths."""
    if depth not in RESNET_SPECS:
        raise ValueError(
            f"resnet_depth={depth} is not supported; use one of {sorted(RESNET_SPECS)}.")
    return RESNET_SPECS[depth]


def scaled_channels(channels: int, width: float) -> int:
    """Channels of a convolution under the width multiplier: round(channels * width), at least 1."""
    return max(1, int(round(channels * width)))


def site_channels(depth: int, width: float) -> tuple[int, ...]:
    """Channel counts of the five sites (see the module docstring)."""
    block, _ = resnet_spec(depth)
    expansion = 4 if block == "bottleneck" else 1
    return (scaled_channels(64, width),) + tuple(
        scaled_channels(p, width) * expansion for p in STAGE_PLANES)


#: Name suffix of a stage's scanned blocks: `layer{s}_blocks` (module docstring).
SCANNED_SUFFIX = "blocks"


class _Block(nn.Module):
    """One BasicBlock or Bottleneck; `planes` is already width-scaled."""

    kind: str
    planes: int
    strides: int
    conv: Callable[..., nn.Module]
    norm: Callable[..., nn.Module]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        expansion = 4 if self.kind == "bottleneck" else 1
        out_channels = self.planes * expansion
        s = (self.strides, self.strides)
        if self.kind == "basic":
            y = self.conv(self.planes, (3, 3), s, padding=((1, 1), (1, 1)), name="conv1")(x)
            y = nn.relu(self.norm(name="bn1")(y))
            y = self.conv(self.planes, (3, 3), padding=((1, 1), (1, 1)), name="conv2")(y)
            y = self.norm(name="bn2")(y)
        else:
            y = self.conv(self.planes, (1, 1), padding="VALID", name="conv1")(x)
            y = nn.relu(self.norm(name="bn1")(y))
            # v1.5: the stride sits on the 3x3 convolution.
            y = self.conv(self.planes, (3, 3), s, padding=((1, 1), (1, 1)), name="conv2")(y)
            y = nn.relu(self.norm(name="bn2")(y))
            y = self.conv(out_channels, (1, 1), padding="VALID", name="conv3")(y)
            y = self.norm(name="bn3")(y)
        if self.strides != 1 or x.shape[-1] != out_channels:
            x = self.conv(out_channels, (1, 1), s, padding="VALID", name="downsample_conv")(x)
            x = self.norm(name="downsample_bn")(x)
        return nn.relu(x + y)



def encoder_stride(stem_pool: bool) -> int:
    """The ResNet's downsampling: 32 with the max-pool after conv1 (torchvision), else 16."""
    return 32 if stem_pool else 16

class ResNet(nn.Module):
    """A torchvision-topology ResNet encoder (no classifier).

    Attributes:
      depth: 18, 34, 50 or 101.
      width: multiplier on every convolution's output channels (1.0 = torchvision).
      bn_axis_name: BatchNorm statistics are averaged over this named device axis in training
        (e.g. 'batch' under pmap); None: per-device statistics.
      bn_momentum: Flax momentum of the running statistics (0.9 = torchvision's 0.1).
      stem_pool: torchvision's 3x3/2 max-pool after conv1 (True). False drops it (no
        parameters change): every later site has half the stride (16 at conv5_x), for small
        inputs where a stride-32 map would be 2x2.
      scan_blocks: run the identical blocks k >= 1 of each stage under `nn.scan` (stacked
        variables `layer{s}_blocks`, module docstring): the same function, compiled once per
        stage instead of once per block, which cuts XLA compile time several-fold for ResNet-101.
        Changes the variables' layout, not their values (`scan_variables`).
      conv_grad: how the convolutions' kernel gradients are computed ('xla',
        'stored'; the same function, `conv.py`).
      dtype: compute dtype; parameters stay float32.
    """

    depth: int = 18
    width: float = 1.0
    bn_axis_name: str | None = None
    bn_momentum: float = 0.9
    stem_pool: bool = True
    scan_blocks: bool = False
    conv_grad: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, *, train: bool, site_hook: SiteHook | None = None) -> list[Array]:
        """Runs the encoder.

        Args:
          x: (N, H, W, C) input, any C (3 for RGB, 1 for a depth map); H, W divisible by 32.
          train: BatchNorm uses batch statistics (and updates `batch_stats`) when True.
          site_hook: optional `f(site_index, features) -> features` applied at the five sites.
        Returns:
          The five site feature maps [(N, H/2, W/2, C0), (N, H/4, ..), .., (N, H/32, W/32, C4)]
          after the hook, in `self.dtype`.
        """
        kind, blocks = resnet_spec(self.depth)
        # He-normal fan-out initialisation, as torchvision's.
        conv = functools.partial(
            nn.Conv, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
            conv_general_dilated=conv_function(self.conv_grad),
            kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"))
        norm = functools.partial(
            nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
            epsilon=BN_EPSILON, axis_name=self.bn_axis_name, dtype=self.dtype,
            param_dtype=jnp.float32)
        hook = site_hook if site_hook is not None else (lambda _, f: f)

        x = jnp.asarray(x, self.dtype)
        x = conv(scaled_channels(64, self.width), (7, 7), (2, 2), padding=((3, 3), (3, 3)),
                 name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x))
        x = hook(0, x)
        sites = [x]
        if self.stem_pool:
            # Padding with -inf, as torch's MaxPool2d(3, 2, 1) does.
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, (planes, n_blocks) in enumerate(zip(STAGE_PLANES, blocks, strict=True)):
            width_planes = scaled_channels(planes, self.width)
            x = _Block(kind, width_planes, 2 if stage > 0 else 1, conv, norm,
                       name=f"layer{stage + 1}_0")(x)
            if self.scan_blocks and n_blocks > 1:
                # Blocks 1.. keep x's shape, so they can be one loop; each iteration gets its own
                # slice of the stacked params and batch_stats (and, at init, its own key).
                blocks_loop = nn.scan(
                    _scan_body, variable_axes={"params": 0, "batch_stats": 0},
                    split_rngs={"params": True}, length=n_blocks - 1)
                x, _ = blocks_loop(_Block(kind, width_planes, 1, conv, norm,
                                          name=f"layer{stage + 1}_{SCANNED_SUFFIX}"), x, None)
            else:
                for k in range(1, n_blocks):
                    x = _Block(kind, width_planes, 1, conv, norm,
                               name=f"layer{stage + 1}_{k}")(x)
            x = hook(stage + 1, x)
            sites.append(x)
        return sites



def _scan_body(block: _Block, x: Array, _: None) -> tuple[Array, None]:
    """One iteration of a stage's scanned blocks: (carry x, no per-step input) -> (x, None)."""
    return block(x), None


def _stage_blocks(tree: Any) -> dict[int, list[int]]:
    """{stage: sorted block indices k} of the unrolled `layer{s}_{k}` keys in a module dict."""
    found: dict[int, list[int]] = {}
    for key in tree:
        stage, sep, k = str(key).removeprefix("layer").partition("_")
        if str(key).startswith("layer") and sep and stage.isdigit() and k.isdigit():
            found.setdefault(int(stage), []).append(int(k))
    return {s: sorted(ks) for s, ks in found.items()}


def scan_variables(tree: Any) -> Any:
    """An encoder's variables (or one collection of them) from the unrolled layout to the
    scanned one (`ResNet.scan_blocks=True`): for every stage s, the `layer{s}_{k}` entries with
    k >= 1 are stacked (numpy) on a new leading axis into `layer{s}_blocks`; everything else
    is kept.

    Args:
      tree: {'params': {...}, 'batch_stats': {...}} or a single collection's dict, in the
        unrolled layout; leaves are arrays of any kind. A tree already scanned comes back as is.
    Returns:
      A new dict in the scanned layout; leaves of `layer{s}_blocks` are numpy arrays of shape
      (blocks in the stage - 1, *leaf shape), in k order.
    """
    if _is_collections(tree):
        return {col: scan_variables(sub) for col, sub in tree.items()}
    out = dict(tree)
    for stage, ks in _stage_blocks(tree).items():
        rest = [k for k in ks if k >= 1]
        if not rest:
            continue
        if rest != list(range(1, len(rest) + 1)):
            raise ValueError(f"layer{stage}: blocks {ks} are not 0..n-1; not an encoder tree")
        blocks = [out.pop(f"layer{stage}_{k}") for k in rest]
        out[f"layer{stage}_{SCANNED_SUFFIX}"] = jax.tree.map(
            lambda *leaves: np.stack([np.asarray(v) for v in leaves]), *blocks)
    return out


def unscan_variables(tree: Any) -> Any:
    """The inverse of `scan_variables`: every `layer{s}_blocks` entry (leaves with a leading
    axis of length n - 1) becomes `layer{s}_1` .. `layer{s}_{n-1}`; leaves become numpy arrays
    (slices of the stacked ones). A tree already unrolled comes back as is."""
    if _is_collections(tree):
        return {col: unscan_variables(sub) for col, sub in tree.items()}
    out = {}
    for key, value in tree.items():
        stage = str(key).removeprefix("layer").removesuffix(f"_{SCANNED_SUFFIX}")
        if str(key).startswith("layer") and str(key).endswith(f"_{SCANNED_SUFFIX}") and \
                stage.isdigit():
            n = {np.shape(v)[0] for v in jax.tree.leaves(value)}
            if len(n) != 1:
                raise ValueError(f"{key}: stacked leaves disagree on the block count {n}")
            for j in range(n.pop()):
                out[f"layer{stage}_{j + 1}"] = jax.tree.map(lambda v, j=j: np.asarray(v)[j],
                                                            value)
        else:
            out[key] = value
    return out


def _is_collections(tree: Any) -> bool:
    """True for {'params': ..., 'batch_stats': ...}-style trees (collection names at the top)."""
    return bool(tree) and all(k in ("params", "batch_stats") for k in tree)
