"""ImageNet initialisation: torchvision ResNet weights -> the Flax encoders (`resnet.ResNet`).

Name mapping (torchvision -> Flax, `resnet.py` module docstring for the tree):
  conv1.weight                      -> params/conv1/kernel            (O,I,kh,kw) -> (kh,kw,I,O)
  bn1.{weight,bias}                 -> params/bn1/{scale,bias}
  bn1.{running_mean,running_var}    -> batch_stats/bn1/{mean,var}
  layer{s}.{k}.conv{i}.weight       -> params/layer{s}_{k}/conv{i}/kernel
  layer{s}.{k}.bn{i}.*              -> params|batch_stats/layer{s}_{k}/bn{i}/*
  layer{s}.{k}.downsample.0.weight  -> params/layer{s}_{k}/downsample_conv/kernel
  layer{s}.{k}.downsample.1.*       -> params|batch_stats/layer{s}_{k}/downsample_bn/*
`num_batches_tracked` and the classifier `fc.*` are dropped. The width multiplier is read from
the state dict (conv1's output channels / 64), so reduced-width torchvision-style models convert
too.

In a `DualModalityNet` the encoders live at `params['rgb_encoder']` and `params['depth_encoder']`
(same for `batch_stats`); `load_pretrained_encoders` fills both, the depth encoder's first
convolution being the mean of the RGB kernel over its three input channels (a 1-channel input),
stacking the blocks (`resnet.scan_variables`) when the model has `scan_blocks=True`. Converted
files are always in the unrolled layout.

Files: a torchvision `.pth` (read here with numpy only, torch is not needed), a `.npz` of the
state dict's arrays under torchvision's names, or the `.npz` written by
`tools/convert_torchvision.py` (`save_converted`: keys 'params/<path>' and 'batch_stats/<path>').
The RGB input then expects torchvision's normalisation, `IMAGENET_MEAN` / `IMAGENET_STD` on [0, 1]
pixel values.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hpe_jax.models.resnet import (
    SCANNED_SUFFIX,
    ResNet,
    resnet_spec,
    scan_variables,
    unscan_variables,
)

#: torchvision's ImageNet normalisation (RGB, of [0, 1] pixel values) that converted weights
#: expect: the one definition, used by the input pipeline (`data.preprocess`) and `export`.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
ENCODERS = ("rgb_encoder", "depth_encoder")

_BN_FIELDS = {"weight": ("params", "scale"), "bias": ("params", "bias"),
              "running_mean": ("batch_stats", "mean"), "running_var": ("batch_stats", "var")}
_KEY = re.compile(
    r"^(?:(?P<stem>conv1|bn1)|layer(?P<stage>[1-4])\.(?P<block>\d+)\."
    r"(?P<mod>conv[1-3]|bn[1-3]|downsample\.[01]))\.(?P<field>\w+)$")


def torchvision_to_flax(state_dict: Mapping[str, Any], depth: int) -> tuple[dict, dict]:
    """Converts a torchvision ResNet state dict to the encoder's (params, batch_stats).

    Args:
      state_dict: torchvision names -> arrays (numpy, or anything `np.asarray` takes).
      depth: the ResNet depth the weights belong to (18, 34, 50, 101); checked against the keys.
    Returns:
      Nested dicts of float32 numpy arrays for `resnet.ResNet(depth, width)`, width inferred from
      the state dict; every expected entry is present with the expected shape.
    """
    resnet_spec(depth)
    params: dict[str, Any] = {}
    batch_stats: dict[str, Any] = {}
    unknown = []
    for key, value in state_dict.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        m = _KEY.match(key)
        if m is None:
            unknown.append(key)
            continue
        if m["stem"]:
            module_path: tuple[str, ...] = (m["stem"],)
        else:
            mod = {"downsample.0": "downsample_conv", "downsample.1": "downsample_bn"}.get(
                m["mod"], m["mod"])
            module_path = (f"layer{m['stage']}_{m['block']}", mod)
        array = np.asarray(value, dtype=np.float32)
        if module_path[-1].startswith("conv") or module_path[-1] == "downsample_conv":
            if m["field"] != "weight" or array.ndim != 4:
                unknown.append(key)
                continue
            params[module_path + ("kernel",)] = array.transpose(2, 3, 1, 0)
        elif m["field"] in _BN_FIELDS:
            collection, leaf = _BN_FIELDS[m["field"]]
            (params if collection == "params" else batch_stats)[module_path + (leaf,)] = array
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"not a torchvision ResNet state dict: unexpected keys {unknown[:5]}"
                         f"{' ...' if len(unknown) > 5 else ''}.")
    if ("conv1", "kernel") not in params:
        raise ValueError("not a torchvision ResNet state dict: 'conv1.weight' is missing.")
    kernel = params[("conv1", "kernel")]
    width = kernel.shape[-1] / 64
    expected = jax.eval_shape(
        lambda x: ResNet(depth=depth, width=width).init(jax.random.PRNGKey(0), x, train=False),
        jax.ShapeDtypeStruct((1, 64, 64, kernel.shape[2]), jnp.float32))
    for collection, got in (("params", params), ("batch_stats", batch_stats)):
        _check_tree(got, traverse_util.flatten_dict(expected[collection]), collection, depth)
    return traverse_util.unflatten_dict(params), traverse_util.unflatten_dict(batch_stats)


def _check_tree(got: dict, want: dict, collection: str, depth: int) -> None:
    missing = sorted("/".join(k) for k in want.keys() - got.keys())
    extra = sorted("/".join(k) for k in got.keys() - want.keys())
    if missing or extra:
        raise ValueError(
            f"state dict does not match ResNet-{depth} ({collection}): missing {missing[:4]}, "
            f"unexpected {extra[:4]}; is --depth/resnet_depth right for this file?")
    for k, v in want.items():
        if got[k].shape != v.shape:
            raise ValueError(f"ResNet-{depth} {collection}/{'/'.join(k)}: the state dict gives "
                             f"shape {got[k].shape}, the model expects {v.shape}.")


def check_weights_file(path: str | os.PathLike) -> str:
    """`path` as a str; FileNotFoundError naming it and where to get it when it is not a file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file; download the torchvision checkpoint (e.g. "
            "https://download.pytorch.org/models/resnet18-f37072fd.pth) and pass its path")
    return path


def _open_npz(path: str):
    """np.load of a weights .npz, with an error naming the file when it is damaged."""
    try:
        return np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{path} cannot be read ({e}); it is truncated or not an .npz of "
                         "weights: convert or download it again") from None


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a state dict from a torch `.pth` (zip format, no torch needed) or a `.npz`.

    A `.pth` holding {'state_dict': ...} or {'model': ...} is unwrapped, and a 'module.' prefix
    (DataParallel) is removed.
    """
    path = check_weights_file(path)
    if path.endswith(".npz"):
        with _open_npz(path) as data:
            sd = {k: data[k] for k in data.files}
    else:
        sd = read_torch_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(sd.get(wrapper), Mapping):
            sd = sd[wrapper]
    return {k.removeprefix("module."): np.asarray(v) for k, v in sd.items()}


def load_pretrained_encoders(
    variables: Mapping[str, Any], source: str | os.PathLike | Mapping[str, Any], resnet_depth: int,
    encoders: tuple[str, ...] = ENCODERS,
) -> dict[str, Any]:
    """Returns `variables` (of a `DualModalityNet`) with the encoders initialised from `source`.

    Args:
      variables: {'params': ..., 'batch_stats': ...} from `DualModalityNet.init`.
      source: a path (`.pth`, a state-dict `.npz`, or a `save_converted` `.npz`) or a state dict.
      resnet_depth: the model's `resnet_depth`.
      encoders: which of 'rgb_encoder' and 'depth_encoder' to fill. For 'depth_encoder' the first
        convolution's kernel is averaged over its RGB input channels.
    Raises:
      ValueError when the file's depth, width or layout do not match the model.
    """
    params, batch_stats = load_converted(source, resnet_depth)
    out = {k: dict(v) for k, v in variables.items()}
    for name in encoders:
        if name not in ENCODERS:
            raise ValueError(f"unknown encoder {name!r}; use {ENCODERS}.")
        p = jax.tree.map(np.copy, params)
        if name == "depth_encoder":
            p["conv1"]["kernel"] = p["conv1"]["kernel"].mean(axis=2, keepdims=True)
        for collection, tree in (("params", p), ("batch_stats", batch_stats)):
            if name not in out.get(collection, {}):
                raise ValueError(f"variables have no {collection}/{name}; initialise the model "
                                 "with both rgb and depth inputs first.")
            if is_scanned(out[collection][name]):
                tree = scan_variables(tree)
            want = traverse_util.flatten_dict(out[collection][name])
            got = traverse_util.flatten_dict(tree)
            try:
                _check_tree(got, want, collection, resnet_depth)
            except ValueError as e:
                raise ValueError(f"{name}: {e} (does the model's `width` match the file's, "
                                 f"conv1 with {params['conv1']['kernel'].shape[-1]} channels?)"
                                 ) from None
            out[collection][name] = jax.tree.map(
                lambda v, ref: jnp.asarray(v, ref.dtype), traverse_util.unflatten_dict(got),
                out[collection][name])
    return out


def is_scanned(encoder_tree: Mapping[str, Any]) -> bool:
    """True when one collection of an encoder's variables is in the scanned layout
    (`resnet.ResNet.scan_blocks=True`: it has `layer{s}_blocks` entries)."""
    return any(str(k).endswith(f"_{SCANNED_SUFFIX}") for k in encoder_tree)


def load_converted(source: str | os.PathLike | Mapping[str, Any], depth: int) -> tuple:
    """(params, batch_stats) of one encoder from a state dict, `.pth` or either kind of `.npz`."""
    if isinstance(source, Mapping):
        return torchvision_to_flax(source, depth)
    path = check_weights_file(source)
    if path.endswith(".npz"):
        with _open_npz(path) as data:
            if any(k.startswith("params/") for k in data.files):
                flat = {tuple(k.split("/")): data[k] for k in data.files}
                tree = traverse_util.unflatten_dict(flat)
                params = unscan_variables(tree.get("params", {}))
                stats = unscan_variables(tree.get("batch_stats", {}))
                # Re-check the layout: cheap, and it catches a file converted for another depth.
                sd = _to_state_dict(params, stats)
                return torchvision_to_flax(sd, depth)
    return torchvision_to_flax(load_state_dict(path), depth)


def save_converted(path: str | os.PathLike, params: Mapping, batch_stats: Mapping) -> None:
    """Writes one encoder's (params, batch_stats) as a flat `.npz` ('params/conv1/kernel', ...),
    always in the unrolled layout (`layer{s}_{k}`; a scanned tree is unstacked first), so the
    file loads into either layout."""
    params, batch_stats = unscan_variables(dict(params)), unscan_variables(dict(batch_stats))
    flat = {"/".join(("params",) + k): np.asarray(v, np.float32)
            for k, v in traverse_util.flatten_dict(dict(params)).items()}
    flat.update({"/".join(("batch_stats",) + k): np.asarray(v, np.float32)
                 for k, v in traverse_util.flatten_dict(dict(batch_stats)).items()})
    np.savez(path, **flat)


def convert_file(source: str | os.PathLike, output: str | os.PathLike, depth: int) -> dict:
    """Converts a torchvision `.pth` (or state-dict `.npz`) to a `save_converted` `.npz`.

    Returns a summary: depth, width, number of parameters (no classifier) and of BN statistics.
    """
    params, batch_stats = torchvision_to_flax(load_state_dict(source), depth)
    save_converted(output, params, batch_stats)
    count = sum(v.size for v in jax.tree.leaves(params))
    return {"depth": depth, "width": params["conv1"]["kernel"].shape[-1] / 64,
            "params": int(count), "batch_stats": int(sum(v.size for v in
                                                         jax.tree.leaves(batch_stats)))}


def _to_state_dict(params: Mapping, batch_stats: Mapping) -> dict[str, np.ndarray]:
    """The inverse name mapping (Flax encoder tree -> torchvision names)."""
    sd = {}
    inverse_bn = {v: k for k, v in _BN_FIELDS.items()}
    for collection, tree in (("params", params), ("batch_stats", batch_stats)):
        for path, v in traverse_util.flatten_dict(dict(tree)).items():
            *mods, leaf = path
            mods = [m.replace("_", ".", 1) if m.startswith("layer") else m for m in mods]
            mods = [{"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(m, m)
                    for m in mods]
            if leaf == "kernel":
                sd[".".join(mods + ["weight"])] = np.asarray(v).transpose(3, 2, 0, 1)
            else:
                sd[".".join(mods + [inverse_bn[(collection, leaf)]])] = np.asarray(v)
    return sd


# --- a numpy-only reader for torch.save's zip format (torch >= 1.6) --------------------------

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    "BFloat16Storage": "bfloat16",
}


def read_torch_file(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a dict of tensors saved with `torch.save` (zip format) into numpy arrays.

    Only tensors, (ordered) dicts, lists and plain values are accepted; any other pickled object
    is refused (no arbitrary code runs). bfloat16 tensors are returned as float32.
    """
    path = os.fspath(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a zip-format torch file (torch >= 1.6): a truncated "
                         "download (download it again) or an older torch file (re-save it with "
                         "torch.save(torch.load(old), new) or export the state dict to .npz).")
    with zipfile.ZipFile(path) as archive:
        pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError(f"{path}: expected one data.pkl in the archive, found {pkl}.")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in archive.namelist():
            byteorder = "<" if archive.read(prefix + "byteorder").strip() == b"little" else ">"

        def storage(kind: Any, key: str, numel: int) -> np.ndarray:
            raw = archive.read(f"{prefix}data/{key}")
            if kind == "bfloat16":
                bits = np.frombuffer(raw, byteorder + "u2")[:numel].astype(np.uint32) << 16
                return bits.view(np.float32)
            return np.frombuffer(raw, np.dtype(kind).newbyteorder(byteorder))[:numel]

        with archive.open(pkl[0]) as f:
            result = _TorchUnpickler(f, storage).load()
    if not isinstance(result, Mapping):
        raise ValueError(f"{path} holds a {type(result).__name__}, not a state dict.")
    return dict(result)


def _rebuild_tensor(storage: np.ndarray, offset: int, size: tuple, stride: tuple,
                    *_: Any) -> np.ndarray:
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * storage.itemsize for s in stride))
    return np.ascontiguousarray(view)


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, storage: Any) -> None:
        super().__init__(file)
        self._storage = storage
        self._cache: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a torch file: only state dicts of plain "
            "tensors are supported; save `model.state_dict()`.")

    def persistent_load(self, pid: Any) -> np.ndarray:
        kind, dtype, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported torch persistent id {pid!r}.")
        if key not in self._cache:
            self._cache[key] = self._storage(dtype, key, numel)
        return self._cache[key]
