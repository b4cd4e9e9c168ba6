"""The inference-only model: export a trained network's RGB path, load it in one call, predict.

    from hpe_jax import export
    export.export_model(config, variables, "runs/demo/export")      # or tools/export.py
    predictor = export.load("runs/demo/export")
    out = predictor.predict(images, boxes=boxes, K=K)   # uint8 (N, H, W, 3) -> 2D and 3D joints

An export directory holds
  config.json   self-describing: format, model fields, input/output size, crop margin, the image
                normalisation, joint names and bones, root joint, reference bone and the default
                hand scale in mm (`DEFAULT_SCALE_MM`), the source checkpoint;
  variables/    an orbax checkpoint of ONLY the inference variables: the 'rgb_encoder' and
                'decoder' subtrees of `params` and `batch_stats` (no depth encoder, no projection
                heads, no optimizer state);
  saved_model/  optional TF SavedModel (`save_saved_model`), for serving without JAX.

`Predictor.predict` crops each image like the evaluation pipeline (`data/pipeline.py`): the box
(a tight hand box [u_min, v_min, u_max, v_max] in pixels) is made square and enlarged by the crop
margin (`camera.square_box`), warped to input_size x input_size (`camera.crop_affine`, bilinear,
black outside the image), scaled to [0, 1] and ImageNet-normalised. Without boxes the whole image
is the crop (no margin; a non-square image is centred and padded black), so pass hand crops then.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from hpe_jax.hand import camera, kinematics, skeleton
from hpe_jax.models.convert import IMAGENET_MEAN, IMAGENET_STD
from hpe_jax.models.decoder import PoseDecoder
from hpe_jax.models.resnet import ResNet, unscan_variables
from hpe_jax.training import config_checks
from hpe_jax.training.checkpoint import check_variables

Array = jax.Array
FORMAT = "hpe_jax.export/1"
CONFIG_FILE = "config.json"
VARIABLES_DIR = "variables"
SAVED_MODEL_DIR = "saved_model"
INFERENCE_MODULES = ("rgb_encoder", "decoder")
#: Default hand scale: the reference bone (middle MCP -> PIP, `skeleton.REFERENCE_BONE`) of the
#: template adult hand, i.e. its middle proximal phalanx (`kinematics.PHALANGES`), 44 mm. Metric
#: 3D output is proportional to it; pass the user's own `scale_mm` when it is known.
DEFAULT_SCALE_MM = float(kinematics.PHALANGES[skeleton.FINGERS.index("middle"), 0])


class RGBPoseNet(nn.Module):
    """E_R + D of `DualModalityNet` (same submodule names, so its variables load unchanged).

    Input rgb (N, S, S, 3) normalised as in training; returns the decoder dict ('uv' (N, J, 2)
    output px, 'z' (N, J) reference-bone units, 'heatmaps', 'mask', 'depth_map'), BatchNorm in
    inference mode.
    """

    resnet_depth: int = 18
    width: float = 1.0
    num_joints: int = 21
    deconv_features: int = 256
    stem_pool: bool = True
    num_deconv: int = 3
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.rgb_encoder = ResNet(depth=self.resnet_depth, width=self.width,
                                  stem_pool=self.stem_pool, dtype=self.dtype)
        self.decoder = PoseDecoder(num_joints=self.num_joints, features=self.deconv_features,
                                   num_deconv=self.num_deconv, dtype=self.dtype)

    def __call__(self, rgb: Array) -> dict[str, Array]:
        return self.decoder(self.rgb_encoder(rgb, train=False)[-1], train=False)


# ------------------------------------------------------------------------------------------------
# Variables


def inference_variables(variables: Mapping[str, Any]) -> dict[str, Any]:
    """The 'rgb_encoder' and 'decoder' subtrees of a DualModalityNet's params and batch_stats.

    The encoder always comes back in the unrolled layout (`resnet.unscan_variables`): a model
    trained with `model.scan_blocks=True` exports the same files as one trained without, so
    an export has one layout (`RGBPoseNet` is unrolled) whatever the training config."""
    out: dict[str, Any] = {}
    for col in ("params", "batch_stats"):
        tree = variables.get(col, {}) or {}
        missing = [m for m in INFERENCE_MODULES if m not in tree]
        if missing and col == "params":
            raise ValueError(f"variables['params'] lack {missing}; pass the variables of a "
                             "DualModalityNet ({'params': ..., 'batch_stats': ...})")
        out[col] = {m: unscan_variables(tree[m]) if m == "rgb_encoder" else tree[m]
                    for m in INFERENCE_MODULES if m in tree}
    return jax.device_get(out)


# ------------------------------------------------------------------------------------------------
# Export

def export_config(
    config: Any, *, crop_margin: float = camera.DEFAULT_CROP_MARGIN, source: Mapping | None = None
) -> dict[str, Any]:
    """The self-describing JSON dict of an export from a training config (`configs/default.py`)."""
    m, d = config.model, config.data
    return {
        "format": FORMAT,
        "model": {"resnet_depth": int(m.resnet_depth), "width": float(m.width),
                  "num_joints": skeleton.NUM_JOINTS, "deconv_features": int(m.deconv_features),
                  "stem_pool": bool(m.stem_pool),
                  "num_deconv": int(m.num_deconv), "dtype": str(m.dtype)},
        "input_size": int(d.input_size),
        "output_size": int(d.output_size),
        "crop_margin": float(crop_margin),
        "image_normalization": {
            "input": "RGB uint8 / 255, then (x - mean) / std per channel",
            # Rounded for reading; float32(round(x, 7)) is the same float32 constant.
            "mean": [round(float(x), 7) for x in IMAGENET_MEAN],
            "std": [round(float(x), 7) for x in IMAGENET_STD]},
        "joint_names": list(skeleton.JOINT_NAMES),
        "bones": [list(b) for b in skeleton.BONES],
        "root_joint": skeleton.ROOT,
        "reference_bone": list(skeleton.REFERENCE_BONE),
        "default_scale_mm": DEFAULT_SCALE_MM,
        "outputs": {
            "uv": "(N, J, 2) original-image pixels, pixel centres at integers",
            "z": "(N, J) depth relative to the root joint / reference-bone length",
            "xyz": "(N, J, 3) mm, camera frame (with K): root depth by Iqbal et al.'s closed "
                   "form x scale_mm",
        },
        "source": dict(source or {}),
    }


def export_model(
    config: Any, variables: Mapping[str, Any], path: str, *, crop_margin: float =
    camera.DEFAULT_CROP_MARGIN, source: Mapping | None = None, overwrite: bool = False,
) -> str:
    """Writes the inference variables (orbax) and config.json into directory `path`.

    Args:
      config: the training config (its `model` and `data` sizes describe the network).
      variables: {'params', 'batch_stats'} of the trained DualModalityNet (e.g. from
        `training.checkpoint.load_training_checkpoint`, which prefers the EMA teacher).
      path: the export directory; it must not exist unless `overwrite`.
      source: free-form provenance stored in config.json (e.g. checkpoint path and step).
    Returns:
      The absolute export path.
    """
    config_checks.check_config(config)
    path = os.path.abspath(path)
    if os.path.exists(os.path.join(path, VARIABLES_DIR)) and not overwrite:
        raise FileExistsError(f"{path} already holds an export; choose another output directory "
                              "or delete it")
    cfg = export_config(config, crop_margin=crop_margin, source=source)
    inf = inference_variables(variables)
    check_variables(_abstract_variables(cfg), inf,
                    "the variables do not belong to the model that config.model describes; use "
                    "the config the checkpoint was trained with")
    os.makedirs(path, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(path, VARIABLES_DIR), inf, force=overwrite)
        ckptr.wait_until_finished()
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(cfg, f, indent=2)
    return path


def _model(cfg: Mapping[str, Any]) -> RGBPoseNet:
    m = cfg["model"]
    return RGBPoseNet(resnet_depth=m["resnet_depth"], width=m["width"],
                      num_joints=m["num_joints"], deconv_features=m["deconv_features"],
                      stem_pool=m.get("stem_pool", True), num_deconv=m.get("num_deconv", 3),
                      dtype=jnp.dtype(m["dtype"]))


def _abstract_variables(cfg: Mapping[str, Any]) -> Any:
    s = cfg["input_size"]
    return jax.eval_shape(_model(cfg).init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32))


# ------------------------------------------------------------------------------------------------
# Load and predict


#: A network file of `training.factory.save_variables` (what `make reproduce` ships in
#: assets/demo_pretrained): the whole network's variables and meta.json with its config.
NETWORK_FILES = ("variables.npz", "meta.json")


def load(path: str) -> Predictor:
    """The Predictor of an export directory written by `export_model` (or tools/export.py), or
    of a network file (`NETWORK_FILES`, e.g. the shipped assets/demo_pretrained)."""
    path = os.path.abspath(path)
    if all(os.path.isfile(os.path.join(path, f)) for f in NETWORK_FILES):
        return _load_network_file(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory; pass an export directory (python -m "
                                "tools.export) or a network file directory such as "
                                "assets/demo_pretrained")
    present = [f for f in NETWORK_FILES if os.path.isfile(os.path.join(path, f))]
    if present:  # half of a network file: name the missing half, not the export layout
        missing = [f for f in NETWORK_FILES if f not in present]
        raise FileNotFoundError(f"{path} holds {present[0]} but not {missing[0]}; restore it "
                                "(git checkout, or write it again with make reproduce)")
    cfg_file = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_file) or not os.path.isdir(os.path.join(path, VARIABLES_DIR)):
        raise FileNotFoundError(f"{path} is not an export directory (needs {CONFIG_FILE} and "
                                f"{VARIABLES_DIR}/); write one with python -m tools.export")
    again = "export the checkpoint again (python -m tools.export)"
    try:
        with open(cfg_file) as f:
            cfg = json.load(f)
        if not isinstance(cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise ValueError(f"{cfg_file} is damaged ({e}); {again}") from None
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{cfg_file} has format {cfg.get('format')!r}, this code reads "
                         f"{FORMAT!r}; export the checkpoint again with this version")
    try:
        abstract = _abstract_variables(cfg)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{cfg_file} is damaged (bad or missing entry {e}); {again}") from None
    try:
        with ocp.StandardCheckpointer() as ckptr:
            variables = ckptr.restore(os.path.join(path, VARIABLES_DIR), abstract)
    except Exception as e:  # noqa: BLE001  (orbax/tensorstore raise many kinds on damaged files)
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"{os.path.join(path, VARIABLES_DIR)} cannot be restored ({reason}); "
                         f"the export is truncated or damaged: {again}") from None
    return Predictor(cfg, variables)


def check_network_file(directory: str, what: str = "--config.model.init_variables") -> None:
    """ValueError naming the file when `directory`'s variables.npz exists but is no zip archive
    (truncated, or a git-lfs pointer): found before any data are prepared or a model is built,
    instead of numpy's bare 'File is not a zip file' when the variables are loaded."""
    import zipfile

    npz = os.path.join(directory, NETWORK_FILES[0]) if directory else ""
    if not npz or not os.path.isfile(npz) or zipfile.is_zipfile(npz):
        return  # unset, missing (the loader names it) or readable
    with open(npz, "rb") as f:
        lfs = f.read(64).startswith(b"version https://git-lfs")
    cause = "a git-lfs pointer: run git lfs pull" if lfs else \
        "truncated or not a network file: restore it (git checkout, or write it again with " \
        "make reproduce)"
    raise ValueError(f"{what}={directory}: {npz} cannot be read, it is {cause}")


def _load_network_file(path: str) -> Predictor:
    """A Predictor from `save_variables`' files: the RGB path of the network meta.json's config
    describes, its variables read from variables.npz and checked leaf by leaf."""
    import zipfile

    import ml_collections
    from flax import traverse_util

    meta_file, npz = (os.path.join(path, f) for f in ("meta.json", "variables.npz"))
    try:
        with open(meta_file) as f:
            meta = json.load(f)
        config = ml_collections.ConfigDict(meta["config"])
        cfg = export_config(config, source={"network_file": path, "step": meta.get("step")})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"{meta_file} is damaged or not a network's meta.json ({e}); "
                         "restore it (git checkout, or write it again with make reproduce)"
                         ) from None
    try:
        with np.load(npz) as data:
            flat = {k: data[k] for k in data.files
                    if k.split("/")[1:2] and k.split("/")[1] in INFERENCE_MODULES}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"{npz} cannot be read ({e}); it is truncated or not a network file: "
                         "restore it (git checkout, or write it again with make reproduce)"
                         ) from None
    variables = traverse_util.unflatten_dict(flat, sep="/")
    variables = {"params": variables.get("params", {}),
                 "batch_stats": variables.get("batch_stats", {})}
    check_variables(_abstract_variables(cfg), variables,
                    f"{npz} does not fit the network its meta.json describes")
    return Predictor(cfg, jax.tree.map(jnp.asarray, variables))


def peak_mass(heatmaps: Array, radius: int = 1) -> Array:
    """Per-joint confidence: the probability mass within `radius` px of each heatmap's peak.

    heatmaps: (N, s, s, J) softmax maps (each sums to 1). Returns (N, J) in [0, 1]: the mass in
    the (2 radius + 1)^2 window around the argmax (clipped at the border), 1.0 for a map
    concentrated there and at most (2 radius + 1)^2 / s^2 for a flat one (the network sees
    nothing it can localise).
    """
    n, s, _, j = heatmaps.shape
    flat = heatmaps.reshape(n, s * s, j)
    peak = jnp.argmax(flat, axis=1)                                      # (N, J)
    py, px = peak // s, peak % s
    grid = jnp.arange(s)
    near_y = jnp.abs(grid[None, :, None] - py[:, None, :]) <= radius     # (N, s, J)
    near_x = jnp.abs(grid[None, :, None] - px[:, None, :]) <= radius
    window = near_y[:, :, None, :] & near_x[:, None, :, :]               # (N, s, s, J)
    return jnp.sum(jnp.where(window, heatmaps, 0.0), axis=(1, 2))


#: Per-image hand scores `predict` returns (N,) each; `hand_score` is the one documented for
#: users (its AUROC, hands against crops without one: docs/results.md).
HAND_SCORES = ("hand_score", "mask_mean", "mask_peak", "peak_mass_mean")


def hand_scores(mask: Array, confidence: Array) -> dict[str, Array]:
    """Hand scores in [0, 1] from the decoder's mask (N, s, s, 1) sigmoid and the joints' peak
    masses (N, J): 'mask_mean' the share of the crop the network calls hand, 'mask_peak' the
    mean of its 5% most hand-like pixels, 'peak_mass_mean' the joints' mean peak mass, and
    'hand_score' = mask_mean, the best of them on the val photos (tools.measure_hand_score;
    docs/results.md)."""
    m = mask.reshape(mask.shape[0], -1)
    k = max(1, m.shape[1] // 20)
    peak = jnp.mean(jax.lax.top_k(m, k)[0], axis=-1)
    mean = jnp.mean(m, axis=-1)
    return {"hand_score": mean, "mask_mean": mean, "mask_peak": peak,
            "peak_mass_mean": jnp.mean(confidence, axis=-1)}


def _crop_and_predict(
    variables: Any, images: Array, boxes: Array, K: Array | None, scale_mm: Array, *,
    model: RGBPoseNet, input_size: int, output_size: int, margin: float, mean: tuple,
    std: tuple,
) -> dict[str, Array]:
    """Jitted body of `Predictor.predict` (see there); `margin` < 0 means 'boxes are crops'."""
    if margin >= 0:
        boxes = camera.square_box(boxes.reshape(-1, 2, 2), margin)
    a_in = camera.crop_affine(boxes, input_size)                         # original px -> input
    a_out = camera.resize_affine(output_size / input_size) @ a_in        # original px -> output
    warp = jax.vmap(functools.partial(camera.warp_image, out_size=input_size))
    crops = warp(images.astype(jnp.float32), a_in) / 255.0
    crops = (crops - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    y = model.apply(variables, crops)
    uv_out, z = y["uv"], y["z"]
    confidence = peak_mass(y["heatmaps"])
    out = {"uv": camera.apply_affine(camera.invert_affine(a_out), uv_out), "z": z,
           "uv_output": uv_out, "crop_affine": a_out, "box": boxes,
           "confidence": confidence, **hand_scores(y["mask"], confidence)}
    if K is not None:
        k_out = camera.affine_intrinsics(a_out, K)
        out["xyz"], out["root_depth_mm"] = camera.lift_25d(uv_out, z, k_out, scale_mm)
    return out


class Predictor:
    """An exported model ready to predict; build it with `load(path)`.

    Attributes:
      config: the export's config.json as a dict.
      variables: the inference variables.
      input_size, output_size, scale_mm (the default hand scale), joint_names.
    """

    def __init__(self, config: Mapping[str, Any], variables: Any) -> None:
        self.config = dict(config)
        self.variables = variables
        self.model = _model(config)
        self.input_size = int(config["input_size"])
        self.output_size = int(config["output_size"])
        self.scale_mm = float(config["default_scale_mm"])
        self.joint_names = tuple(config["joint_names"])
        norm = config["image_normalization"]
        common = dict(model=self.model, input_size=self.input_size,
                      output_size=self.output_size, mean=tuple(norm["mean"]),
                      std=tuple(norm["std"]))
        # Two compiled variants: boxes given (square + margin) or the whole image as the crop.
        self._with_boxes = jax.jit(functools.partial(
            _crop_and_predict, margin=float(config["crop_margin"]), **common))
        self._whole = jax.jit(functools.partial(_crop_and_predict, margin=-1.0, **common))
        self._apply = jax.jit(self.model.apply)

    def predict(
        self, images: np.ndarray, boxes: np.ndarray | None = None, K: np.ndarray | None = None,
        scale_mm: float | np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """2D and 3D hand keypoints of a batch of images.

        Args:
          images: uint8 (N, H, W, 3) RGB, any H and W (one compilation per shape).
          boxes: optional (N, 4) tight hand boxes [u_min, v_min, u_max, v_max] in pixels; each is
            made square and enlarged by config['crop_margin'] per side. None: each whole image
            is the crop.
          K: optional (N, 3, 3) or (3, 3) intrinsics of the images (pixels).
          scale_mm: hand scale, the reference-bone length in mm, scalar or (N,); default
            `config['default_scale_mm']` (44 mm, an adult hand).
        Returns:
          numpy dict: 'uv' (N, J, 2) original-image pixels; 'z' (N, J) root-relative depth in
          reference-bone units; 'uv_output' (N, J, 2) pixels of the output heatmap of the crop;
          'crop_affine' (N, 3, 3) original px -> output px; 'box' (N, 4) the square crop box;
          'confidence' (N, J) heatmap peak mass (`peak_mass`, radius 1 px); with K also
          'xyz' (N, J, 3) mm in the camera frame and 'root_depth_mm' (N,).
        """
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 \
                or 0 in images.shape:
            raise ValueError(
                f"images must be a uint8 RGB batch (N, H, W, 3), got dtype {images.dtype} and "
                f"shape {images.shape}; use images[None] for one image and convert grayscale or "
                "RGBA to RGB")
        n = images.shape[0]
        if boxes is None:
            h, w = images.shape[1:3]
            boxes = np.tile(np.array([-0.5, -0.5, w - 0.5, h - 0.5], np.float32), (n, 1))
            fn = self._whole
        else:
            boxes = np.asarray(boxes, np.float32)
            if boxes.shape != (n, 4) or not np.all(np.isfinite(boxes)) \
                    or np.any(boxes[:, 2:] <= boxes[:, :2]):
                raise ValueError(f"boxes must be ({n}, 4) [u_min, v_min, u_max, v_max] pixels "
                                 f"with u_max > u_min and v_max > v_min, got {boxes.tolist()}")
            fn = self._with_boxes
        if K is not None:
            K = np.asarray(K, np.float32)
            if K.shape == (3, 3):
                K = np.broadcast_to(K, (n, 3, 3))
            if K.shape != (n, 3, 3):
                raise ValueError(f"K must be (3, 3) or ({n}, 3, 3) pixel intrinsics, got shape "
                                 f"{K.shape}")
        scale = np.broadcast_to(np.asarray(self.scale_mm if scale_mm is None else scale_mm,
                                           np.float32), (n,))
        out = fn(self.variables, images, boxes, K, scale)
        return {k: np.asarray(v) for k, v in out.items()}

    def predict_crops(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """The network on already-normalised (N, S, S, 3) crops (as the pipeline gives them):
        the decoder dict ('uv' output px, 'z', 'heatmaps', ...) as numpy."""
        return {k: np.asarray(v) for k, v in self._apply(self.variables, crops).items()}


# ------------------------------------------------------------------------------------------------
# Optional TF SavedModel (serving without JAX)


def save_saved_model(predictor: Predictor, path: str) -> str:
    """Writes a TF SavedModel of the network on hand crops, through orbax-export (jax2tf).

    Signature 'serving_default': images uint8 [batch, S, S, 3] (S = input_size, any batch)
    -> {'uv': [batch, J, 2] pixels of the S x S crop, 'z': [batch, J] reference-bone units}.
    Crop the hand yourself (as `Predictor.predict` does) before calling it.
    """
    try:
        from orbax.export import ExportManager, JaxModule, ServingConfig
    except ImportError as e:
        raise ImportError(
            f"the SavedModel export needs orbax-export ({e}); install it with "
            "`.venv/bin/pip install orbax-export==0.0.8`") from e
    import tensorflow as tf

    s, o = predictor.input_size, predictor.output_size
    norm = predictor.config["image_normalization"]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    model = predictor.model
    # Output px -> crop px: the inverse of resize_affine(o / s), u_in = (u_out + 0.5) * s/o - 0.5.
    back = np.asarray(camera.invert_affine(camera.resize_affine(o / s)))

    def serve(variables, images):
        x = (images.astype(jnp.float32) / 255.0 - mean) / std
        y = model.apply(variables, x)
        return {"uv": camera.apply_affine(jnp.asarray(back), y["uv"]), "z": y["z"]}

    module = JaxModule(predictor.variables, serve, trainable=False,
                       input_polymorphic_shape="(b, ...)")
    config = ServingConfig("serving_default",
                           input_signature=[tf.TensorSpec([None, s, s, 3], tf.uint8, "images")])
    path = os.path.abspath(path)
    ExportManager(module, [config]).save(path)
    return path
