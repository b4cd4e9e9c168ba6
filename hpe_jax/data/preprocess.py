"""tf.data-side image and label preprocessing: crop geometry, warping, normalisation.

tf.data maps run as TensorFlow graphs, where the JAX functions of `hpe_jax.hand.camera` cannot be
called. The few crop/projection formulas needed here are therefore written in TensorFlow with the
SAME conventions (pixel centres at integers, A @ K intrinsics, middle-MCP root and MCP->PIP
reference bone), and tests/data/test_preprocess.py checks each one numerically against its
`camera` counterpart, so the two cannot drift apart.

Depth representation (the depth-encoder input and the depth-map target), `normalize_depth`:
    d = clip((depth_mm - z_root_mm) / (cube_mm / 2), -1, 1)   on the hand,
    d = +1                                                      elsewhere (far),
where "on the hand" is the hand mask AND a measurement exists (depth > 0). Without a mask, the
hand is every measured pixel inside the cube |depth - z_root| <= cube / 2. A predicted depth map
in this representation can be fed back to the depth encoder unchanged.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from hpe_jax.hand.skeleton import REFERENCE_BONE, ROOT
from hpe_jax.models.convert import IMAGENET_MEAN, IMAGENET_STD


def normalize_image(image: tf.Tensor) -> tf.Tensor:
    """(..., 3) RGB, uint8 in [0, 255] or float in [0, 1] -> float32 ImageNet-normalised."""
    if image.dtype == tf.uint8:
        image = tf.cast(image, tf.float32) / 255.0
    return (tf.cast(image, tf.float32) - IMAGENET_MEAN) / IMAGENET_STD


def denormalize_image(image: np.ndarray) -> np.ndarray:
    """Inverse of `normalize_image` (numpy, for display): float RGB in [0, 1]."""
    return np.clip(np.asarray(image) * IMAGENET_STD + IMAGENET_MEAN, 0.0, 1.0)


def normalize_depth(depth_mm, mask, z_root_mm, cube_mm: float = 300.0) -> tf.Tensor:
    """Depth (H, W, 1) in mm (0 = no measurement) -> the normalised representation (see top).

    Args:
      depth_mm: (H, W, 1) float metric depth.
      mask: (H, W, 1) hand mask (any dtype, nonzero = hand) or None (then the cube decides).
      z_root_mm: () root-joint depth in mm.
      cube_mm: side of the depth cube centred on the root.
    Returns:
      (H, W, 1) float32 in [-1, 1], +1 (far) off the hand.
    """
    depth_mm = tf.cast(depth_mm, tf.float32)
    half = cube_mm / 2.0
    rel = (depth_mm - tf.cast(z_root_mm, tf.float32)) / half
    on = depth_mm > 0.0
    if mask is None:
        on = on & (tf.abs(rel) <= 1.0)
    else:
        on = on & (tf.cast(mask, tf.float32) > 0.5)
    return tf.where(on, tf.clip_by_value(rel, -1.0, 1.0), 1.0)


def square_box(bbox: tf.Tensor, margin: float) -> tf.Tensor:
    """Square box [u_min, v_min, u_max, v_max] around a (4,) box, side = larger side * (1+2m).

    `camera.square_box` applied to the box's two corners.
    """
    lo, hi = bbox[:2], bbox[2:]
    centre = 0.5 * (lo + hi)
    half = tf.maximum(0.5 * tf.reduce_max(hi - lo) * (1.0 + 2.0 * margin), 1.0)
    return tf.concat([centre - half, centre + half], 0)


def crop_affine(box, out_size: int, rotation=0.0, scale=1.0, shift=None) -> tf.Tensor:
    """(3, 3) affine from source pixels to an out_size crop of `box`: `camera.crop_affine`."""
    box = tf.cast(box, tf.float32)
    centre = 0.5 * (box[:2] + box[2:])
    side = tf.reduce_max(box[2:] - box[:2])
    s = out_size / side * tf.cast(scale, tf.float32)
    rotation = tf.cast(rotation, tf.float32)
    cos, sin = tf.cos(rotation), tf.sin(rotation)
    c_out = (out_size - 1) / 2.0
    shift = tf.zeros([2], tf.float32) if shift is None else tf.cast(shift, tf.float32)
    a00, a01, a10, a11 = s * cos, s * sin, -s * sin, s * cos
    t0 = c_out + shift[0] - (a00 * centre[0] + a01 * centre[1])
    t1 = c_out + shift[1] - (a10 * centre[0] + a11 * centre[1])
    return tf.reshape(tf.stack([a00, a01, t0, a10, a11, t1, 0.0, 0.0, 1.0]), [3, 3])


def resize_affine(factor: float) -> tf.Tensor:
    """(3, 3) affine to an image resized by `factor`: `camera.resize_affine`."""
    t = 0.5 * factor - 0.5
    return tf.constant([[factor, 0.0, t], [0.0, factor, t], [0.0, 0.0, 1.0]], tf.float32)


def mirror_affine(size: int) -> tf.Tensor:
    """(3, 3) affine mirroring a size x size crop left-right: u -> (size - 1) - u."""
    return tf.constant([[-1.0, 0.0, size - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], tf.float32)


def apply_affine(A: tf.Tensor, uv: tf.Tensor) -> tf.Tensor:
    """(J, 2) pixels mapped by a (3, 3) affine: `camera.apply_affine`."""
    return tf.linalg.matmul(uv, A[:2, :2], transpose_b=True) + A[:2, 2]


def project(xyz: tf.Tensor, K: tf.Tensor) -> tf.Tensor:
    """(J, 3) camera-frame points -> (J, 2) pixels: `camera.project`."""
    p = tf.linalg.matmul(xyz, K, transpose_b=True)
    return p[:, :2] / p[:, 2:3]


def encode_25d(xyz: tf.Tensor, K: tf.Tensor):
    """`camera.encode_25d`: uv (J, 2) px, z_rel (J,), z_root () mm, scale () mm."""
    uv = project(xyz, K)
    z_root = xyz[ROOT, 2]
    scale = tf.norm(xyz[REFERENCE_BONE[1]] - xyz[REFERENCE_BONE[0]])
    return uv, (xyz[:, 2] - z_root) / scale, z_root, scale


def warp(image: tf.Tensor, A: tf.Tensor, out_size: int, method: str = "bilinear",
         fill: float = 0.0) -> tf.Tensor:
    """Warps an (H, W, C) image by the pixel affine A into (out_size, out_size, C) float32.

    Output pixel q samples the source at A^-1 q (pixel centres at integers, as everywhere in the
    project); outside the source it gets `fill`. `method`: "bilinear" or "nearest" (use nearest
    for depth and masks so that hand and background values never blend).
    """
    inv = tf.linalg.inv(tf.cast(A, tf.float32))
    transform = tf.reshape(inv, [9])[:8] / inv[2, 2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=transform[None],
        output_shape=tf.constant([out_size, out_size], tf.int32),
        fill_value=tf.constant(fill, tf.float32),
        interpolation=method.upper(),
        fill_mode="CONSTANT",
    )
    return out[0]
