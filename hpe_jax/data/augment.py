"""Geometric (G) and texture (T, T_d) augmentations with stateless, per-example randomness.

As in DM-HPE: G (rotation, scale, translation) moves the labels with the pixels and is
shared by RGB and depth so the two stay aligned; T (colour, blur, noise) and T_d (depth noise,
holes) preserve the labels and are drawn independently per modality. Positive pairs are
(G(x), T(G(x))) and (G(d), T_d(G(d))). For fine-tuning, a weak view (small G, no T) feeds the
teacher and a strong view (full G and T) the student (SemiHand).

All randomness comes from a `key` (shape (2,) int64) derived from (seed, global example index)
with `example_key`, so any example can be recomputed alone: a resumed run sees the same
augmentations as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges (angles in degrees; sizes as fractions of the crop; images in [0, 1]).

    Attributes:
      rotation_deg: G rotates the crop by U(-r, r) about its centre (hands appear at any roll).
      scale_range: G zooms by U(lo, hi); > 1 enlarges the hand.
      translation: G shifts the crop by U(-t, t) * input_size pixels per axis.
      brightness: T adds U(-b, b) to the intensity.
      contrast: T scales contrast by U(1 - c, 1 + c).
      saturation: T scales saturation by U(1 - s, 1 + s).
      hue: T shifts hue by U(-h, h) (fraction of the colour wheel).
      blur_probability: chance that T blurs with a Gaussian of sigma U(blur_sigma) pixels.
      blur_sigma: (min, max) blur sigma at the input size.
      noise_std: T adds Gaussian noise with a std of U(0, noise_std).
      depth_noise_mm: T_d adds Gaussian noise with a std of U(0, depth_noise_mm) mm to measured
        pixels.
      depth_hole_probability: chance that T_d drops pixels (depth 0: no measurement).
      depth_hole_fraction: up to this fraction of pixels is dropped, in blobs.
      weak_rotation_deg, weak_scale_range, weak_translation: the weak view's (small) G.
      strong_occlusion_probability: chance that the fine-tuning student's strong view also gets
        an occluder (`occlude`): a rectangle of one random colour, sides U(strong_occlusion_size)
        of the crop side, anywhere in the crop. The teacher's weak view never does, so the
        student learns to predict what the teacher sees unoccluded. Not in the paper (0 = off).
      strong_occlusion_size: (min, max) side of that rectangle as a fraction of the crop side.
      source_occlusion_probability: chance that a labelled (source) image gets such a rectangle
        too (`source_occlusion_size`), its labels kept: the network is taught to predict joints
        an object hides, which the rendered source never shows. Not in the paper (0 = off); the
        training loop applies it in the phases `data.source_occlusion_phases` names.
      source_occlusion_size: (min, max) side of the source occluder, as a fraction of the crop.
      sleeve_probability: chance that a labelled image's forearm (measured depth inside the
        depth cube but outside the hand mask) is recoloured as a sleeve of one random colour,
        keeping its shading (`sleeve`). Needs depth; applied with the source occluder. Not in
        the paper (0 = off).
      flip_probability: chance that G also mirrors a labelled crop left-right, the labels
        moved with the pixels (the intrinsics get a negative focal length, the relative depths
        stay): a rendered right hand becomes a left hand, so that the network learns hands of
        both sides. Not in the paper (0 = off); it never touches the unlabelled views.
      source_background_probability: chance that a labelled image's background (off the hand
        mask and off the forearm) is replaced by procedural clutter (`clutter_background`): a
        smooth random colour field with finer colour noise and one to three blobs in the
        hand's own mean colour (hard negatives for the heatmaps), labels kept. Needs the mask
        (or depth); applied with the source occluder, in the same phases. Not in the paper
        (0 = off).
    """

    rotation_deg: float = 180.0
    scale_range: tuple[float, float] = (0.8, 1.2)
    translation: float = 0.08
    brightness: float = 0.25
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    blur_probability: float = 0.3
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_std: float = 0.04
    depth_noise_mm: float = 3.0
    depth_hole_probability: float = 0.5
    depth_hole_fraction: float = 0.1
    weak_rotation_deg: float = 15.0
    weak_scale_range: tuple[float, float] = (0.9, 1.1)
    weak_translation: float = 0.04
    strong_occlusion_probability: float = 0.0
    strong_occlusion_size: tuple[float, float] = (0.2, 0.5)
    source_occlusion_probability: float = 0.0
    source_occlusion_size: tuple[float, float] = (0.2, 0.5)
    sleeve_probability: float = 0.0
    source_background_probability: float = 0.0
    flip_probability: float = 0.0

    def __post_init__(self):
        for name in ("scale_range", "blur_sigma", "weak_scale_range"):
            lo, hi = getattr(self, name)
            if not 0.0 <= lo <= hi:
                raise ValueError(f"AugmentConfig.{name} = {(lo, hi)} must satisfy 0 <= min <= max")
        for name in ("strong_occlusion_size", "source_occlusion_size"):
            lo, hi = getattr(self, name)
            if not 0.0 < lo <= hi <= 1.0:
                raise ValueError(f"AugmentConfig.{name} = {(lo, hi)} must satisfy "
                                 "0 < min <= max <= 1 (fractions of the crop side)")
        for name in ("blur_probability", "depth_hole_probability", "depth_hole_fraction",
                     "strong_occlusion_probability", "source_occlusion_probability",
                     "sleeve_probability", "source_background_probability",
                     "flip_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must lie in [0, 1]")


NO_AUGMENT = AugmentConfig(
    rotation_deg=0.0, scale_range=(1.0, 1.0), translation=0.0, brightness=0.0, contrast=0.0,
    saturation=0.0, hue=0.0, blur_probability=0.0, noise_std=0.0, depth_noise_mm=0.0,
    depth_hole_probability=0.0, weak_rotation_deg=0.0, weak_scale_range=(1.0, 1.0),
    weak_translation=0.0,
)


def example_key(seed: int, index: tf.Tensor) -> tf.Tensor:
    """Stateless key (2,) int64 of example `index` (global position in the stream) for `seed`."""
    base = tf.constant([seed, 0x5EED], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(index, tf.int64))


def split_key(key: tf.Tensor, num: int) -> list[tf.Tensor]:
    """`num` independent keys from one."""
    return tf.unstack(tf.random.experimental.stateless_split(key, num))


def _uniform(key, lo, hi, shape=()):
    return tf.random.stateless_uniform(shape, key, lo, hi, tf.float32)


def sample_geometry(key: tf.Tensor, rotation_deg: float, scale_range: tuple[float, float],
                    translation: float, size: int):
    """G's parameters for `camera.crop_affine`: rotation (rad), zoom, shift (2,) pixels."""
    k_rot, k_scale, k_shift = split_key(key, 3)
    r = math.radians(rotation_deg)
    rotation = _uniform(k_rot, -r, r) if r > 0 else tf.constant(0.0)
    lo, hi = scale_range
    scale = _uniform(k_scale, lo, hi) if hi > lo else tf.constant(lo, tf.float32)
    t = translation * size
    shift = _uniform(k_shift, -t, t, [2]) if t > 0 else tf.zeros([2])
    return rotation, scale, shift


def sample_flip(key: tf.Tensor, probability: float) -> tf.Tensor:
    """Whether G mirrors the crop: () bool, from a key folded off G's, so that the other draws
    are the same with mirroring on or off."""
    if probability <= 0.0:
        return tf.constant(False)
    k = tf.random.experimental.stateless_fold_in(key, 6)
    return _uniform(k, 0.0, 1.0) < probability


def _gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, radius: int = 3) -> tf.Tensor:
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    k = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    k = k / tf.reduce_sum(k)
    c = image.shape[-1]
    kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, c, 1])
    ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, c, 1])
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], "SYMMETRIC")
    out = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
    out = tf.nn.depthwise_conv2d(out, ky, [1, 1, 1, 1], "VALID")
    return out[0]


def texture(image: tf.Tensor, key: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """T: label-preserving appearance change of an (H, W, 3) float image in [0, 1]."""
    k = split_key(key, 8)
    x = image
    if cfg.brightness > 0:
        x = tf.image.stateless_random_brightness(x, cfg.brightness, k[0])
    if cfg.contrast > 0:
        x = tf.image.stateless_random_contrast(x, 1 - cfg.contrast, 1 + cfg.contrast, k[1])
    if cfg.saturation > 0:
        x = tf.image.stateless_random_saturation(x, 1 - cfg.saturation, 1 + cfg.saturation, k[2])
    if cfg.hue > 0:
        x = tf.image.stateless_random_hue(x, cfg.hue, k[3])
    x = tf.clip_by_value(x, 0.0, 1.0)
    if cfg.blur_probability > 0:
        sigma = _uniform(k[4], *cfg.blur_sigma)
        # Sigma ~0 is the identity kernel: no branch needed.
        sigma = tf.where(_uniform(k[5], 0.0, 1.0) < cfg.blur_probability, sigma, 0.0)
        x = _gaussian_blur(x, sigma)
    if cfg.noise_std > 0:
        std = _uniform(k[6], 0.0, cfg.noise_std)
        x = x + std * tf.random.stateless_normal(tf.shape(x), k[7])
    return tf.clip_by_value(x, 0.0, 1.0)


def occlude(image: tf.Tensor, key: tf.Tensor, probability: float,
            size: tuple[float, float], salt: int) -> tf.Tensor:
    """With chance `probability`, an (H, W, 3) image in [0, 1] with one axis-aligned rectangle
    of a random colour over it (sides U(size) x H, W; centre uniform in the image); otherwise
    the image unchanged. `key` may be T's own: the draws come from a key folded from it with
    `salt` (one per use), so T's draws are the same with or without the occluder (and nothing is
    drawn when it is off)."""
    if probability <= 0:
        return image
    k = split_key(tf.random.experimental.stateless_fold_in(key, salt), 4)
    h, w = image.shape[0], image.shape[1]
    extent = tf.constant([h, w], tf.float32)
    half = 0.5 * _uniform(k[0], *size, [2]) * extent
    centre = _uniform(k[1], 0.0, 1.0, [2]) * extent
    colour = _uniform(k[2], 0.0, 1.0, [3])
    on = _uniform(k[3], 0.0, 1.0) < probability
    rows = tf.range(h, dtype=tf.float32)[:, None] + 0.5
    cols = tf.range(w, dtype=tf.float32)[None, :] + 0.5
    inside = (tf.abs(rows - centre[0]) <= half[0]) & (tf.abs(cols - centre[1]) <= half[1]) & on
    return tf.where(inside[..., None], colour, image)


def sleeve(image: tf.Tensor, forearm: tf.Tensor, key: tf.Tensor, probability: float,
           salt: int) -> tf.Tensor:
    """With chance `probability`, the (H, W, 3) image in [0, 1] with the pixels where the (H, W,
    1) bool `forearm` holds recoloured to one random colour, times each pixel's brightness
    relative to the brightest forearm pixel (the render's shading kept). Keys as in `occlude`."""
    if probability <= 0:
        return image
    k = split_key(tf.random.experimental.stateless_fold_in(key, salt), 2)
    colour = _uniform(k[0], 0.1, 1.0, [3])
    on = _uniform(k[1], 0.0, 1.0) < probability
    brightness = tf.reduce_mean(image, axis=-1, keepdims=True)
    top = tf.reduce_max(tf.where(forearm, brightness, 0.0))
    shaded = colour * brightness / tf.maximum(top, 1e-3)
    return tf.where(forearm & on, tf.clip_by_value(shaded, 0.0, 1.0), image)


def clutter_background(image: tf.Tensor, background: tf.Tensor, hand: tf.Tensor,
                       key: tf.Tensor, probability: float, salt: int) -> tf.Tensor:
    """With chance `probability`, the (H, W, 3) image in [0, 1] with the pixels where the (H, W,
    1) bool `background` holds replaced by clutter; otherwise unchanged. The clutter: a smooth
    colour field (random colours on a 3x3 to 6x6 grid, upsampled bilinearly), finer colour noise
    (a 16x16 grid, amplitude 0.25), and one to three ellipses (half-axes 8-25% of the side) in
    the mean colour of the (H, W, 1) bool `hand` pixels times U(0.7, 1.2): blobs that look like
    skin, so the heatmaps learn to ignore hand-coloured things that are not the hand. Keys as in
    `occlude`."""
    if probability <= 0:
        return image
    k = split_key(tf.random.experimental.stateless_fold_in(key, salt), 8)
    h, w = image.shape[0], image.shape[1]
    cells = tf.random.stateless_uniform([2], k[0], 3, 7, tf.int32)
    coarse = tf.random.stateless_uniform(tf.concat([[1], cells, [3]], 0), k[1])
    field = tf.image.resize(coarse, [h, w], "bilinear")[0]
    fine = tf.image.resize(tf.random.stateless_uniform([1, 16, 16, 3], k[2], -1.0, 1.0),
                           [h, w], "bilinear")[0]
    clutter = field + 0.25 * fine
    n_hand = tf.reduce_sum(tf.cast(hand, tf.float32))
    hand_colour = tf.reduce_sum(tf.where(hand, image, 0.0), axis=[0, 1]) / tf.maximum(n_hand, 1.0)
    rows = (tf.range(h, dtype=tf.float32)[:, None] + 0.5) / h
    cols = (tf.range(w, dtype=tf.float32)[None, :] + 0.5) / w
    count = tf.random.stateless_uniform([], k[3], 1, 4, tf.int32)
    centres = _uniform(k[4], 0.0, 1.0, [3, 2])
    axes = _uniform(k[5], 0.08, 0.25, [3, 2])
    gains = _uniform(k[6], 0.7, 1.2, [3])
    for i in range(3):
        inside = (tf.square((rows - centres[i, 0]) / axes[i, 0])
                  + tf.square((cols - centres[i, 1]) / axes[i, 1])) <= 1.0
        inside = inside & (i < count) & (n_hand > 0)
        clutter = tf.where(inside[..., None], hand_colour * gains[i], clutter)
    on = _uniform(k[7], 0.0, 1.0) < probability
    return tf.where(background & on, tf.clip_by_value(clutter, 0.0, 1.0), image)


def depth_texture(depth_mm: tf.Tensor, key: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """T_d: sensor-like noise and holes on an (H, W, 1) depth in mm (0 = no measurement)."""
    k = split_key(key, 5)
    measured = depth_mm > 0
    d = depth_mm
    if cfg.depth_noise_mm > 0:
        std = _uniform(k[0], 0.0, cfg.depth_noise_mm)
        d = d + std * tf.random.stateless_normal(tf.shape(d), k[1])
    if cfg.depth_hole_probability > 0 and cfg.depth_hole_fraction > 0:
        # Blobs: threshold a smooth noise field (coarse noise upsampled) at a random quantile.
        h, w = tf.shape(d)[0], tf.shape(d)[1]
        coarse = tf.random.stateless_uniform([1, 8, 8, 1], k[2])
        field = tf.image.resize(coarse, [h, w], "bilinear")[0]
        frac = _uniform(k[3], 0.0, cfg.depth_hole_fraction)
        frac = tf.where(_uniform(k[4], 0.0, 1.0) < cfg.depth_hole_probability, frac, 0.0)
        d = tf.where(field < frac, tf.zeros_like(d), d)
    return tf.where(measured & (d > 0), d, 0.0)
