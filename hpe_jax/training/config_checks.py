"""Start-up checks and derived fields of a training config (configs/default.py).

`resolve(config)` is called first thing by training (`training.loop.train`),
evaluation (`evaluation.run.evaluate_checkpoint`) and export (through `check_config`):

* `data.output_size` and `loss.uv_scale` follow from `data.input_size` and the model; left unset
  (0) they are derived, set explicitly they must agree (a wrong value would otherwise surface as
  a shape error deep inside the pmapped step, or as a silently rescaled loss);
* `model.init_from` may name the placeholder "imagenet" (the paper configs: the paper starts from
  ImageNet weights), which is refused with the steps to get them; "scratch" means no weights.
"""

from __future__ import annotations

import math
from typing import Any

from hpe_jax.models.resnet import encoder_stride  # noqa: F401  (also this module's API)

#: `model.init_from` placeholder of the paper configs: ImageNet weights are wanted, not given yet.
IMAGENET = "imagenet"
#: `model.init_from` value that explicitly asks for a randomly initialised network.
SCRATCH = "scratch"
#: The heatmap size (px) the paper's loss balance (lambda_z, epsilon) is stated in.
PAPER_OUTPUT_SIZE = 64
#: torchvision's ImageNet ResNet-101 (IMAGENET1K_V1, the weights of the paper's time).
TORCHVISION_RESNET101_URL = "https://download.pytorch.org/models/resnet101-63fe2227.pth"


def derived_output_size(input_size: int, stem_pool: bool, num_deconv: int) -> int:
    """The decoder's heatmap side (px) for an `input_size`-px crop.

    output = input / stride * 2**num_deconv, stride 32 (16 without the stem pool). Raises
    ValueError when `input_size` is not a multiple of the stride (the encoder would round).
    """
    stride = encoder_stride(stem_pool)
    if input_size <= 0 or input_size % stride:
        near = max(stride, input_size // stride * stride)
        raise ValueError(
            f"data.input_size={input_size} must be a positive multiple of the encoder's stride "
            f"{stride} (model.stem_pool={stem_pool}); e.g. data.input_size={near}")
    return input_size // stride * 2 ** num_deconv


def derived_uv_scale(output_size: int) -> float:
    """uv unit of the 2.5D loss: 64 / output_size, i.e. uv in 64-px-heatmap pixels."""
    return PAPER_OUTPUT_SIZE / output_size


def resolve(config: Any) -> Any:
    """Fills the derived fields of `config` in place (idempotent) and returns it.

    Raises ValueError naming both values and the fix when an explicit `data.output_size` or
    `loss.uv_scale` disagrees with what the model and `data.input_size` give.
    """
    data, model = config.data, config.model
    want = derived_output_size(int(data.input_size), bool(model.stem_pool),
                               int(model.num_deconv))
    got = int(data.output_size or 0)
    if got and got != want:
        raise ValueError(
            f"data.output_size={got} but data.input_size={data.input_size} with "
            f"model.stem_pool={model.stem_pool} and "
            f"model.num_deconv={model.num_deconv} gives {want}; set "
            f"data.output_size={want} or 0 (derived)")
    data.output_size = want
    scale = derived_uv_scale(want)
    given = float(config.loss.uv_scale or 0.0)
    if given and not math.isclose(given, scale, rel_tol=1e-6):
        raise ValueError(
            f"loss.uv_scale={given:g} but data.output_size={want} gives "
            f"{PAPER_OUTPUT_SIZE} / {want} = {scale:g}; set loss.uv_scale={scale:g} or 0 "
            "(derived)")
    config.loss.uv_scale = scale
    return config


def check_init(config: Any) -> None:
    """Refuses `model.init_from="imagenet"` (the paper configs' placeholder) with the way to get
    the weights; "scratch" and a path pass (a path is read later, by the factory)."""
    init = str(config.model.init_from or "")
    if init.lower() == IMAGENET:
        depth = int(config.model.resnet_depth)
        pth = f"resnet{depth}.pth"
        url = f" ({TORCHVISION_RESNET101_URL})" if depth == 101 else ""
        raise ValueError(
            f"this config starts from ImageNet weights, as the paper does "
            f"(model.init_from={init!r}). Get torchvision's ImageNet ResNet-{depth} state dict"
            f"{url}, e.g. torch.save(torchvision.models.resnet{depth}(weights='IMAGENET1K_V1')"
            f".state_dict(), '{pth}'); convert it with `python -m tools.convert_torchvision "
            f"--input {pth} --depth {depth} --output resnet{depth}.npz` and pass "
            f"--config.model.init_from=resnet{depth}.npz; or pass "
            f"--config.model.init_from={SCRATCH} to train from a random initialisation")


def init_path(config: Any) -> str:
    """The weights file `model.init_from` names, "" for none ("" or "scratch")."""
    init = str(config.model.init_from or "")
    return "" if init.lower() == SCRATCH else init


def check_schedule(config: Any) -> None:
    """Raises ValueError unless config.pretrain.decay_epochs holds numbers of epochs.

    Called before any data work: a word there (`--config.pretrain.decay_epochs=abc`) would
    otherwise surface after the data preparation as Python's "invalid literal for int()"."""
    epochs = config.pretrain.decay_epochs
    items = (epochs,) if isinstance(epochs, (str, bytes)) else tuple(epochs)
    if not all(isinstance(e, (int, float)) and not isinstance(e, bool) for e in items):
        raise ValueError(f"config.pretrain.decay_epochs must be numbers of epochs, e.g. "
                         f"--config.pretrain.decay_epochs='(40, 50)'; got {epochs!r}")


#: Config fields an export (and any evaluation) reads.
CONFIG_FIELDS = ("model.resnet_depth", "model.width", "model.deconv_features", "model.dtype",
                 "model.stem_pool", "model.num_deconv",
                 "data.input_size", "data.output_size")


def check_config(config: Any, fields: tuple[str, ...] = CONFIG_FIELDS) -> None:
    """Raises ValueError naming the problem if `config` failed to load or lacks a field, or if
    its sizes disagree with its model; fills the derived sizes (`resolve`).

    (ml_collections' config flag hands a placeholder that raises OSError on first use when the
    file could not be loaded; this turns that into one message.)"""
    for field in fields:
        node = config
        try:
            for part in field.split("."):
                node = getattr(node, part)
        except OSError as e:
            raise ValueError(f"the config could not be loaded: {e}") from e
        except (AttributeError, KeyError) as e:
            raise ValueError(f"the config has no field config.{field}; pass a config built on "
                             "configs/default.py") from e
    # data.output_size (and loss.uv_scale) may be left 0 = derived from the model: fill them.
    resolve(config)
