"""tf.data input pipelines: labelled training, unlabelled training, evaluation.

Sizes: S = input_size (network input), s = output_size (heatmaps, S // 4). Pixel coordinates put
pixel centres at integers. Every example is cropped by ONE affine: a square box around the
dataset's hand box (side = larger side * (1 + 2 * crop_margin)), then G's rotation / zoom / shift.
The same affine warps RGB (bilinear), depth and mask (nearest: depth edges never blend with the
background), maps the keypoints and the intrinsics; the output-resolution affine is
`resize_affine(s / S) @ A_in`, so `project(keypoints_3d, K) == uv` holds at the output size.

Train iterators
- shard by process first (`tfds.even_splits` of the split: process p reads its own examples),
- repeat forever; epoch e is a shuffle of the process's examples seeded by (seed, e),
- the example at stream position k of process p has the global index
  g = (k // B_p) * B + p * B_p + (k % B_p)  (B global batch, B_p = B / process_count)
  and all its randomness is stateless in (seed, g) (`augment.example_key`),
so `start_step=n` skips n * B_p undecoded records and yields exactly the batches an
uninterrupted run yields from step n on. Batches are numpy dicts shaped
[local_device_count, per_device_batch, ...].

Keys (all float32 unless noted; J = 21):
  labelled: image, image_pos (S, S, 3); depth, depth_pos (S, S, 1) [with_depth];
            uv (J, 2) output px; z (J,) root-relative depth / reference bone; visibility (J,) 0/1
            (labelled visible and inside the output crop); mask, depth_target (s, s, 1)
            [with_depth]; keypoints_3d (J, 3) mm; K (3, 3) output-resolution intrinsics;
            z_root () mm; scale () mm (reference bone length).
  eval:     the labelled keys without *_pos, no augmentation, plus index () int64.
  unlabelled: image_weak, image_strong (S, S, 3); weak_to_strong (3, 3) output px of the weak
            view -> output px of the strong view; K_weak (3, 3) output-resolution intrinsics of
            the weak view. Labels (features.LABEL_KEYS) are dropped right after reading.
Depth representation: `normalize_depth` (see preprocess.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import hpe_jax.data  # noqa: F401  (registers synthetic_hands)
from hpe_jax.data import augment as aug
from hpe_jax.data import preprocess as pp
from hpe_jax.data.augment import AugmentConfig
from hpe_jax.data.features import LABEL_KEYS
from hpe_jax.data.preprocess import normalize_depth, normalize_image
from hpe_jax.hand.camera import DEFAULT_CROP_MARGIN

__all__ = [
    "AugmentConfig", "eval_dataset", "labelled_dataset", "normalize_depth", "normalize_image",
    "num_examples", "unlabelled_dataset",
]

_ENCODED = ("image", "depth", "mask")  # read undecoded; decoded after shuffling and skipping
DEFAULT_SHUFFLE_BUFFER = 2048


def num_examples(name: str, split: str, data_dir: str | None = None) -> int:
    """Number of examples of a (possibly sliced) split of a prepared TFDS dataset."""
    return _builder(name, data_dir).info.splits[split].num_examples


def all_keypoints_3d(name: str, split: str, data_dir: str | None = None) -> np.ndarray:
    """(N, J, 3) mm: every example's 3D joints of a split, in the stored order (only that
    feature is decoded; for statistics such as `loss.template = "source_mean"`)."""
    ds = _builder(name, data_dir).as_dataset(
        split=split, decoders=tfds.decode.PartialDecoding({"keypoints_3d": True}))
    return np.stack([ex["keypoints_3d"] for ex in tfds.as_numpy(ds)])


def _builder(name: str, data_dir: str | None):
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"dataset {name!r} is not prepared in {builder.data_dir_root} "
            f"(data_dir={data_dir!r}); {build_hint(builder, name)}")
    return builder


def build_hint(builder, name: str) -> str:
    """How to build dataset `name`: manual datasets (every real one) need --manual_dir, which
    `download_and_prepare()` alone cannot supply."""
    base = name.split("/")[0]
    if base == "image_folder":
        return ("pass your photo folder as --config.data.image_folder=DIR (tools.train builds it) "
                "or build it: python -m tools.tfds_build image_folder --manual_dir=DIR "
                "--data_dir=DATA_DIR")
    if getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None):
        return (f"download it yourself (see docs/usage.md 'Real datasets'), then build it: "
                f"python -m tools.tfds_build {name} --manual_dir=DIR --data_dir=DATA_DIR, and "
                "pass the same --config.data.data_dir=DATA_DIR")
    return (f"build it: python -m tools.tfds_build {name} --data_dir=DATA_DIR, and pass the same "
            "--config.data.data_dir=DATA_DIR")


def _read(builder, split: str, drop: tuple[str, ...] = ()) -> tf.data.Dataset:
    """Examples of `split` in file order, with images/depth/mask left encoded."""
    decoders = {k: tfds.decode.SkipDecoding() for k in _ENCODED if k in builder.info.features}
    ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    if drop:
        # The first op after reading: nothing downstream can see these keys.
        ds = ds.map(lambda ex: {k: v for k, v in ex.items() if k not in drop})
    return ds


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """An encoded RGB image (JPEG, PNG, ...) -> (H, W, 3) uint8.

    JPEGs are decoded with libjpeg's accurate integer IDCT, the default of PIL and torchvision,
    rather than TF's default fast IDCT (which is up to 3 levels off): a synthetic target image
    then reads back as exactly the pixels its renderer made, and a real dataset's JPEGs read as
    they do in PyTorch code.
    """
    image = tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def _decode(builder, ex: dict) -> dict:
    feats = builder.info.features
    out = dict(ex)
    for k in _ENCODED:
        if k in out:
            out[k] = decode_image(out[k]) if k == "image" else feats[k].decode_example(out[k])
    if "depth" in out and out["depth"].shape.rank == 2:
        out["depth"] = out["depth"][..., None]
    return out


def _process_layout(global_batch_size, process_index, process_count, local_device_count):
    import jax  # only for the defaults; the pipeline itself never touches devices

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    local_device_count = jax.local_device_count() if local_device_count is None else \
        local_device_count
    if global_batch_size % (process_count * local_device_count):
        raise ValueError(
            f"global_batch_size={global_batch_size} must be divisible by process_count "
            f"({process_count}) x local_device_count ({local_device_count})"
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} outside [0, {process_count})")
    return process_index, process_count, local_device_count


def _check_sizes(input_size: int, output_size: int):
    if input_size <= 0 or output_size <= 0 or input_size % output_size:
        raise ValueError(
            f"input_size={input_size} must be a positive multiple of output_size={output_size} "
            "(the project uses output_size = input_size // 4)"
        )


def _stream(builder, split, *, seed, start_step, per_process_batch, global_batch_size,
            process_index, process_count, drop=(), shuffle_buffer=DEFAULT_SHUFFLE_BUFFER):
    """(global index g, decoded example) pairs of this process, forever, from start_step on."""
    sub = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
    n_local = builder.info.splits[sub].num_examples
    if n_local < per_process_batch:
        raise ValueError(
            f"split {split!r} gives {n_local} examples to process {process_index}, fewer than "
            f"its batch of {per_process_batch}; use a bigger split or a smaller batch"
        )
    raw = _read(builder, sub, drop)
    k0 = start_step * per_process_batch
    e0, offset = divmod(k0, n_local)

    def epoch(e):
        return raw.shuffle(min(shuffle_buffer, n_local), seed=seed * 1_000_003 + e,
                           reshuffle_each_iteration=False)

    records = tf.data.Dataset.range(e0, 2**62).flat_map(epoch).skip(offset)
    positions = tf.data.Dataset.range(k0, 2**62)

    def global_index(k):
        step, i = k // per_process_batch, k % per_process_batch
        return step * global_batch_size + process_index * per_process_batch + i

    ds = tf.data.Dataset.zip(positions.map(global_index), records)
    return ds.map(lambda g, ex: (g, _decode(builder, ex)), num_parallel_calls=tf.data.AUTOTUNE)


def _batched_iterator(ds: tf.data.Dataset, per_process_batch: int, local_device_count: int
                      ) -> Iterator[dict[str, np.ndarray]]:
    per_device = per_process_batch // local_device_count
    ds = ds.batch(per_process_batch, drop_remainder=True)
    ds = ds.map(lambda b: {k: tf.reshape(v, [local_device_count, per_device, *v.shape[1:]])
                           for k, v in b.items()})
    options = tf.data.Options()
    options.deterministic = True
    ds = ds.with_options(options).prefetch(tf.data.AUTOTUNE)
    return ds.as_numpy_iterator()


# ---------------------------------------------------------------------------------------------
# Per-example transforms


def _crop(ex, input_size, output_size, rotation, scale, shift, crop_margin):
    box = pp.square_box(ex["bbox"], crop_margin)
    a_in = pp.crop_affine(box, input_size, rotation, scale, shift)
    a_out = pp.resize_affine(output_size / input_size) @ a_in
    return a_in, a_out


def _labels(ex, a_out, output_size):
    K = a_out @ ex["K"]
    uv, z, z_root, scale = pp.encode_25d(ex["keypoints_3d"], K)
    inside = tf.reduce_all((uv >= -0.5) & (uv <= output_size - 0.5), axis=-1)
    vis = tf.cast(tf.cast(ex["visibility"], tf.bool) & inside, tf.float32)
    return {"uv": uv, "z": z, "visibility": vis, "keypoints_3d": ex["keypoints_3d"], "K": K,
            "z_root": z_root, "scale": scale}


def _depth_views(ex, a_in, a_out, input_size, output_size, z_root, cube_mm):
    """Warped depth (S, S, 1) mm and mask at S, and the output-size mask and depth target."""
    mask = ex.get("mask")
    depth_in = pp.warp(ex["depth"], a_in, input_size, "nearest")
    depth_out = pp.warp(ex["depth"], a_out, output_size, "nearest")
    if mask is not None:
        mask_in = pp.warp(mask, a_in, input_size, "nearest")
        mask_out = pp.warp(mask, a_out, output_size, "nearest")
    else:  # no mask in the dataset: the depth cube around the root defines the hand
        mask_in = tf.cast(normalize_depth(depth_in, None, z_root, cube_mm) < 1.0, tf.float32)
        mask_out = tf.cast(normalize_depth(depth_out, None, z_root, cube_mm) < 1.0, tf.float32)
    target = normalize_depth(depth_out, mask_out, z_root, cube_mm)
    return depth_in, mask_in, tf.cast(mask_out > 0.5, tf.float32), target


def _labelled_example(ex, key, *, input_size, output_size, cfg, with_depth, cube_mm,
                      crop_margin, pos_views):
    k_geo, k_tex, k_dtex = aug.split_key(key, 3)
    geo = aug.sample_geometry(k_geo, cfg.rotation_deg, cfg.scale_range, cfg.translation,
                              input_size)
    a_in, a_out = _crop(ex, input_size, output_size, *geo, crop_margin)
    if cfg.flip_probability > 0:  # a mirrored crop: the hand of the other side
        flip = aug.sample_flip(k_geo, cfg.flip_probability)
        a_in = tf.where(flip, pp.mirror_affine(input_size) @ a_in, a_in)
        a_out = tf.where(flip, pp.mirror_affine(output_size) @ a_out, a_out)
    out = _labels(ex, a_out, output_size)
    image = pp.warp(ex["image"], a_in, input_size, "bilinear") / 255.0
    if with_depth:
        depth_in, mask_in, mask_out, target = _depth_views(
            ex, a_in, a_out, input_size, output_size, out["z_root"], cube_mm)
    if with_depth and (cfg.sleeve_probability > 0 or cfg.source_background_probability > 0):
        # The forearm: measured depth near the hand (inside the depth cube) but off its mask.
        # (Skipped when sleeves and backgrounds are off: their draws come from keys of their
        # own.)
        near = normalize_depth(depth_in, None, out["z_root"], cube_mm) < 1.0
        forearm = (depth_in > 0) & near & (mask_in < 0.5)
        image = aug.sleeve(image, forearm, k_tex, cfg.sleeve_probability, salt=3)
        # The background: neither hand nor forearm (the sleeve stays; the clutter sits behind).
        hand = mask_in >= 0.5
        image = aug.clutter_background(image, ~hand & ~forearm, hand, k_tex,
                                       cfg.source_background_probability, salt=4)
    # Source occluders and sleeves change the image the labels describe, not the labels: the
    # keys are folded from T's, so every other draw is the same with them on or off.
    image = aug.occlude(image, k_tex, cfg.source_occlusion_probability,
                        cfg.source_occlusion_size, salt=2)
    out["image"] = normalize_image(image)
    if pos_views:
        out["image_pos"] = normalize_image(aug.texture(image, k_tex, cfg))
    if with_depth:
        out["depth"] = normalize_depth(depth_in, mask_in, out["z_root"], cube_mm)
        if pos_views:
            out["depth_pos"] = normalize_depth(aug.depth_texture(depth_in, k_dtex, cfg),
                                               mask_in, out["z_root"], cube_mm)
        out["mask"] = mask_out
        out["depth_target"] = target
    return out


def _unlabelled_example(ex, key, *, input_size, output_size, cfg, crop_margin):
    k_weak, k_strong, k_tex = aug.split_key(key, 3)
    weak = aug.sample_geometry(k_weak, cfg.weak_rotation_deg, cfg.weak_scale_range,
                               cfg.weak_translation, input_size)
    strong = aug.sample_geometry(k_strong, cfg.rotation_deg, cfg.scale_range, cfg.translation,
                                 input_size)
    a_in_w, a_out_w = _crop(ex, input_size, output_size, *weak, crop_margin)
    a_in_s, a_out_s = _crop(ex, input_size, output_size, *strong, crop_margin)
    image_w = pp.warp(ex["image"], a_in_w, input_size, "bilinear") / 255.0
    image_s = pp.warp(ex["image"], a_in_s, input_size, "bilinear") / 255.0
    return {
        "image_weak": normalize_image(image_w),
        "image_strong": normalize_image(aug.occlude(
            aug.texture(image_s, k_tex, cfg), k_tex, cfg.strong_occlusion_probability,
            cfg.strong_occlusion_size, salt=1)),
        "weak_to_strong": a_out_s @ tf.linalg.inv(a_out_w),
        "K_weak": a_out_w @ ex["K"],
    }


# ---------------------------------------------------------------------------------------------
# Public datasets


def labelled_dataset(
    name: str = "synthetic_hands/source", split: str = "train", *, data_dir: str | None = None,
    global_batch_size: int, input_size: int, output_size: int, train: bool, seed: int,
    start_step: int = 0, with_depth: bool = True, augment: AugmentConfig | None = None,
    depth_cube_mm: float = 300.0, process_index: int | None = None,
    process_count: int | None = None, local_device_count: int | None = None,
    crop_margin: float = DEFAULT_CROP_MARGIN, shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite, deterministic batches of labelled examples with positive views (module doc).

    `train=False` turns augmentation off (the *_pos views then equal the plain ones); the order
    is still the seeded per-epoch shuffle. `augment=None` uses `AugmentConfig()` defaults.
    """
    _check_sizes(input_size, output_size)
    p, n, ldc = _process_layout(global_batch_size, process_index, process_count,
                                local_device_count)
    builder = _builder(name, data_dir)
    if with_depth and "depth" not in builder.info.features:
        raise ValueError(f"dataset {name!r} has no depth; pass with_depth=False")
    cfg = (augment or AugmentConfig()) if train else aug.NO_AUGMENT
    per_process = global_batch_size // n
    ds = _stream(builder, split, seed=seed, start_step=start_step,
                 per_process_batch=per_process, global_batch_size=global_batch_size,
                 process_index=p, process_count=n, shuffle_buffer=shuffle_buffer)

    def fn(g, ex):
        return _labelled_example(ex, aug.example_key(seed, g), input_size=input_size,
                                 output_size=output_size, cfg=cfg, with_depth=with_depth,
                                 cube_mm=depth_cube_mm, crop_margin=crop_margin, pos_views=True)

    return _batched_iterator(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE), per_process, ldc)


def unlabelled_dataset(
    name: str = "synthetic_hands/target", split: str = "train", *, data_dir: str | None = None,
    global_batch_size: int, input_size: int, output_size: int, train: bool, seed: int,
    start_step: int = 0, augment: AugmentConfig | None = None,
    process_index: int | None = None, process_count: int | None = None,
    local_device_count: int | None = None, crop_margin: float = DEFAULT_CROP_MARGIN,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
) -> Iterator[dict[str, np.ndarray]]:
    """Infinite, deterministic batches of unlabelled weak/strong views (module doc).

    Labels (`features.LABEL_KEYS`: keypoints, visibility, depth, mask) are removed as the first
    op after reading: an unlabelled target has RGB only.
    """
    _check_sizes(input_size, output_size)
    p, n, ldc = _process_layout(global_batch_size, process_index, process_count,
                                local_device_count)
    builder = _builder(name, data_dir)
    cfg = (augment or AugmentConfig()) if train else aug.NO_AUGMENT
    per_process = global_batch_size // n
    ds = _stream(builder, split, seed=seed, start_step=start_step,
                 per_process_batch=per_process, global_batch_size=global_batch_size,
                 process_index=p, process_count=n, drop=LABEL_KEYS,
                 shuffle_buffer=shuffle_buffer)

    def fn(g, ex):
        return _unlabelled_example(ex, aug.example_key(seed, g), input_size=input_size,
                                   output_size=output_size, cfg=cfg, crop_margin=crop_margin)

    return _batched_iterator(ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE), per_process, ldc)


def eval_dataset(
    name: str, split: str, *, data_dir: str | None = None, input_size: int, output_size: int,
    with_depth: bool = False, depth_cube_mm: float = 300.0, process_index: int = 0,
    process_count: int = 1, crop_margin: float = DEFAULT_CROP_MARGIN,
) -> tf.data.Dataset:
    """UNBATCHED evaluation examples in split order (module doc), with their `index`.

    The evaluator pads and batches them itself. With process_count > 1, process p gets the
    examples with index % count == p.
    """
    _check_sizes(input_size, output_size)
    builder = _builder(name, data_dir)
    if with_depth and "depth" not in builder.info.features:
        raise ValueError(f"dataset {name!r} has no depth; pass with_depth=False")
    ds = _read(builder, split).enumerate()
    if process_count > 1:
        ds = ds.shard(process_count, process_index)

    def fn(i, ex):
        ex = _decode(builder, ex)
        out = _labelled_example(ex, tf.zeros([2], tf.int64), input_size=input_size,
                                output_size=output_size, cfg=aug.NO_AUGMENT,
                                with_depth=with_depth, cube_mm=depth_cube_mm,
                                crop_margin=crop_margin, pos_views=False)
        out["index"] = tf.cast(i, tf.int64)
        return out

    options = tf.data.Options()
    options.deterministic = True
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).with_options(options)
