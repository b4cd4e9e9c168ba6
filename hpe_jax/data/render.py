"""Procedural multimodal hand renderer: RGB, metric depth, hand mask and labels in numpy.

Scene: the sampled hand of `hand_sampler` as capsules along the finger bones, a palm volume (fat
capsules fanning out from the wrist line to the knuckles, plus a knuckle row and the thenar) and a
forearm capsule that leaves the frame. Each primitive is intersected analytically with the camera
rays of the pixels inside its projected bounding box (vectorised numpy: a Python loop over ~25
primitives, none over pixels). Camera: pinhole K at the origin, OpenCV axes (+z forward), mm.

Outputs of `render` (H = W = image_size):
  image        (H, W, 3) uint8 RGB.
  depth        (H, W) float32 z-depth in mm of the hand and forearm (and of occluders, drawn as
               flat cards); 0.0 on the background (no surface: "no measurement").
  mask         (H, W, 1) uint8, 1 on the visible hand (palm and fingers, not the forearm,
               not where an occluder covers it).
  keypoints_2d (21, 2) float32 pixels (centres at integers); keypoints_3d (21, 3) mm camera frame.
  visibility   (21,) bool from the depth buffer: the joint's pixel is in the image and on the
               hand mask, and the depth there is within the joint's body radius (+2 mm) in
               front of the joint (`joint_visibility`).
  K            (3, 3) float32; bbox (4,) float32 [u_min, v_min, u_max, v_max] around the visible
               hand pixels and the keypoints.
  image_jpeg   bytes, only for styles with `jpeg_quality`: the JPEG the "camera" wrote; `image`
               is its decode with libjpeg's accurate integer IDCT (PIL's default).
"""

from __future__ import annotations

import functools
import io
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from hpe_jax.data import hand_sampler
from hpe_jax.data.styles import Style
from hpe_jax.hand.skeleton import FINGER_JOINTS

VISIBILITY_TOLERANCE_MM = 2.0
_FOREARM_OFFSET = 28.0  # the forearm capsule starts this far (mm, template) behind the wrist


# ---------------------------------------------------------------------------------------------
# Geometry


def hand_capsules(hand: hand_sampler.Hand, thickness: float = 1.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Capsules (A (P, 3), B (P, 3), radius (P,)) of a hand; the last one is the forearm.

    thickness: a factor on the fingers' and the palm's radii (the bones stay where they are).
    Returns the arrays and the number of hand capsules (all but the forearm).
    """
    j, s, spread = hand.joints, hand.scale, hand.wrist_spread
    a, b, r = [], [], []
    for f in range(5):
        for k in range(3):
            a.append(j[FINGER_JOINTS[f][k]])
            b.append(j[FINGER_JOINTS[f][k + 1]])
            r.append(hand.phalanx_radii[f, k] * thickness)
    palm_r = hand_sampler.PALM_RADIUS * s * thickness
    for i, mcp in enumerate((5, 9, 13, 17)):  # palm: wrist line -> knuckles
        a.append(spread[i])
        b.append(j[mcp])
        r.append(palm_r)
    a += [j[5], spread[0], spread[0], j[0]]
    b += [j[17], spread[3], j[1], j[1]]
    r += [0.85 * palm_r, palm_r, 1.05 * palm_r, palm_r]  # knuckle row, wrist line, thenar
    n_hand = len(a)
    forearm_dir = -hand.rotation[:, 1]  # hand -y in camera axes
    a.append(j[0] + forearm_dir * _FOREARM_OFFSET * s)
    b.append(j[0] + forearm_dir * hand_sampler.FOREARM_LENGTH * s)
    r.append(hand_sampler.FOREARM_RADIUS * s)
    return (np.asarray(a, np.float32), np.asarray(b, np.float32), np.asarray(r, np.float32),
            n_hand)


def screen_boxes(a: np.ndarray, b: np.ndarray, r: np.ndarray, K: np.ndarray,
                 size: int) -> np.ndarray:
    """Conservative pixel boxes (P, 4) [u0, u1, v0, v1] (end-exclusive) of capsule projections."""
    zmin = np.minimum(a[:, 2], b[:, 2])
    ends = np.stack([a, b], 1)  # (P, 2, 3)
    uv = ends[..., :2] / np.maximum(ends[..., 2:], 1e-3) * K[[0, 1], [0, 1]] + K[:2, 2]
    # Off-axis spheres project to slightly elongated ellipses: pad by 1.3x the on-axis radius.
    pad = 1.3 * K[0, 0] * r / np.maximum(zmin - r, 1e-3) + 2.0
    lo = np.floor(uv.min(1) - pad[:, None]).astype(int)
    hi = np.ceil(uv.max(1) + pad[:, None]).astype(int) + 1
    boxes = np.clip(np.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], -1), 0, size)
    # A capsule reaching behind the camera plane: test every pixel.
    boxes[zmin - r < 1.0] = [0, size, 0, size]
    return boxes


def _capsule_depth(x: np.ndarray, y: np.ndarray, a, b, r) -> np.ndarray:
    """Depth t (mm) of the first hit of rays (x, y, 1) from the origin with a capsule; inf on miss.

    x (1, w) and y (h, 1) broadcast to the tile. With the ray direction's z equal to 1, the ray
    parameter t is the z-depth of the hit. The infinite cylinder around the axis is hit first; a
    hit beyond either end of the segment is replaced by the hit with that end's sphere (a ray that
    misses the infinite cylinder misses the capsule). Scalars are float64: at ~400 mm depth the
    quadratic's terms cancel to a few digits.
    """
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    r2 = float(r) ** 2
    ba = b - a
    baba, baoa = ba @ ba, -(ba @ a)
    rdrd = x * x + y * y + 1.0
    bard = (x * ba[0] + ba[2]) + y * ba[1]
    rdoa = -((x * a[0] + a[2]) + y * a[1])
    qa = baba * rdrd - bard * bard
    qb = baba * rdoa - baoa * bard
    qc = baba * (a @ a) - baoa * baoa - r2 * baba
    h = qb * qb - qa * qc
    hit = h > 0
    t = (-qb - np.sqrt(np.maximum(h, 0.0))) / np.maximum(qa, 1e-12)
    along = baoa + t * bard
    body = hit & (along > 0) & (along < baba)
    # End sphere on the side the cylinder hit fell: centre a (along <= 0) or b.
    at_b = along >= baba
    bb = np.where(at_b, -((x * b[0] + b[2]) + y * b[1]), rdoa)
    cc = np.where(at_b, b @ b - r2, a @ a - r2)
    hs = bb * bb - rdrd * cc
    ts = (-bb - np.sqrt(np.maximum(hs, 0.0))) / rdrd
    return np.where(body, t, np.where(hit & (hs > 0), ts, np.inf))


def raycast(
    a: np.ndarray, b: np.ndarray, radius: np.ndarray, K: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Z-buffer of capsules: depth (size, size) in mm (inf = background) and ids (-1 = none)."""
    depth = np.full((size, size), np.inf, np.float32)
    ids = np.full((size, size), -1, np.int32)
    xs = (np.arange(size) - np.float64(K[0, 2])) / np.float64(K[0, 0])
    ys = (np.arange(size) - np.float64(K[1, 2])) / np.float64(K[1, 1])
    for p, (u0, u1, v0, v1) in enumerate(screen_boxes(a, b, radius, K, size).tolist()):
        if u1 <= u0 or v1 <= v0:
            continue
        t = _capsule_depth(xs[None, u0:u1], ys[v0:v1, None], a[p], b[p], radius[p])
        tile, tile_ids = depth[v0:v1, u0:u1], ids[v0:v1, u0:u1]
        closer = t < tile
        tile[closer] = t[closer]
        tile_ids[closer] = p
    return depth, ids


def surface_normals(
    depth: np.ndarray, ids: np.ndarray, a: np.ndarray, b: np.ndarray, K: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normals of a capsule z-buffer at its hit pixels.

    Returns the hit mask (H, W) bool and, for the hit pixels in row-major order, unit normals
    (N, 3) and surface points (N, 3) in mm, camera frame.
    """
    hit = ids >= 0
    v, u = np.nonzero(hit)
    z = depth[hit]
    p = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    pa, pb = a[ids[hit]], b[ids[hit]]
    ba = pb - pa
    s = np.clip(np.sum((p - pa) * ba, -1) / np.maximum(np.sum(ba * ba, -1), 1e-9), 0.0, 1.0)
    n = p - (pa + s[:, None] * ba)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    return hit, n.astype(np.float32), p.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Textures (all return float32 arrays in [0, 1]-ish ranges)


@functools.cache
def _interpolation_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 1) smoothstep interpolation weights from grid nodes to pixels."""
    c = np.arange(size, dtype=np.float64) * (cells / size)
    i = np.minimum(c.astype(int), cells - 1)
    f = c - i
    f = f * f * (3 - 2 * f)  # smoothstep: no visible grid lines
    w = np.zeros((size, cells + 1), np.float32)
    w[np.arange(size), i] = 1 - f
    w[np.arange(size), i + 1] = f
    return w


def value_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Smooth noise (size, size, channels) in [0, 1]: separable interpolation of a random grid."""
    grid = rng.uniform(size=(channels, cells + 1, cells + 1)).astype(np.float32)
    w = _interpolation_matrix(size, cells)
    return np.moveaxis(w @ grid @ w.T, 0, -1)


def fractal_noise(rng: np.random.Generator, size: int, channels: int = 1,
                  octaves: Sequence[int] = (4, 8, 16, 32)) -> np.ndarray:
    """Sum of value-noise octaves, normalised to about [0, 1]."""
    out = np.zeros((size, size, channels), np.float32)
    total = 0.0
    for k, cells in enumerate(octaves):
        w = 0.6**k
        out += w * value_noise(rng, size, cells, channels)
        total += w
    return out / total


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.arange(size, dtype=np.float32)
    return g[None, :], g[:, None]


def _shape_mask(rng: np.random.Generator, size: int, centre=None, extent=None) -> np.ndarray:
    """A random filled ellipse, rectangle or bar (size, size) bool."""
    c = rng.uniform(0, size, 2) if centre is None else centre
    half = rng.uniform(0.05, 0.25, 2) * size if extent is None else extent
    th = rng.uniform(0, np.pi)
    kind = rng.integers(3)
    mask = np.zeros((size, size), bool)
    # Only the square around the shape's circumscribed circle is evaluated: a shape covers a few
    # per cent of the image, and the full-image arithmetic was a visible share of a sample's time.
    reach = float(np.hypot(half[0], half[1]))
    u0, v0 = (max(int(np.floor(c[k] - reach)), 0) for k in (0, 1))
    u1, v1 = (min(int(np.ceil(c[k] + reach)) + 1, size) for k in (0, 1))
    if u1 <= u0 or v1 <= v0:
        return mask
    du = np.arange(u0, u1, dtype=np.float32)[None, :] - np.float32(c[0])
    dv = np.arange(v0, v1, dtype=np.float32)[:, None] - np.float32(c[1])
    x = (du * np.float32(np.cos(th)) + dv * np.float32(np.sin(th))) / np.float32(half[0])
    y = (dv * np.float32(np.cos(th)) - du * np.float32(np.sin(th))) / np.float32(half[1])
    if kind == 0:
        inside = x * x + y * y <= 1.0
    elif kind == 1:
        inside = (np.abs(x) <= 1.0) & (np.abs(y) <= 1.0)
    else:
        inside = (np.abs(x) <= 1.0) & (np.abs(y) <= 0.25)
    mask[v0:v1, u0:u1] = inside
    return mask


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.05, 0.95, 3).astype(np.float32)


def _skin_tone(rng: np.random.Generator, style: Style) -> np.ndarray:
    tone = np.asarray(style.skin_tones[rng.integers(len(style.skin_tones))], np.float32)
    return np.clip(tone + rng.uniform(-style.tone_jitter, style.tone_jitter, 3), 0.02, 1.0)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A (size, size, 3) background from one of several generic families: a plain colour, a
    gradient, two-colour fractal noise, multi-colour smooth noise, stripes or a checkerboard;
    its colours darker or lighter as a whole, then a few large soft-shaded objects on it and
    an out-of-focus blur of the whole (a hand in focus before a farther scene)."""
    u, v = _coords(size)
    family = rng.integers(6)
    c1, c2 = _random_colour(rng), _random_colour(rng)
    if family == 0:
        img = np.broadcast_to(c1, (size, size, 3)).copy()
    elif family == 1:
        th = rng.uniform(0, 2 * np.pi)
        ramp = (u * np.cos(th) + v * np.sin(th)) / size
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
        img = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]
    elif family == 2:
        w = np.clip((fractal_noise(rng, size, 1) - 0.5) * rng.uniform(1.0, 3.0) + 0.5, 0, 1)
        img = c1 + (c2 - c1) * w
    elif family == 3:
        img = value_noise(rng, size, int(rng.integers(2, 9)), 3)
    elif family == 4:
        th, period = rng.uniform(0, np.pi), rng.uniform(3, 40)
        w = 0.5 + 0.5 * np.sin(2 * np.pi * (u * np.cos(th) + v * np.sin(th)) / period)
        img = c1 + (c2 - c1) * (w > rng.uniform(0.2, 0.8))[..., None]
    else:
        cell = rng.uniform(4, 32)
        w = ((np.floor(u / cell) + np.floor(v / cell)) % 2)[..., None]
        img = c1 + (c2 - c1) * w
    img = img.astype(np.float32) * np.float32(rng.uniform(0.4, 1.1))
    for _ in range(rng.integers(0, 4)):  # large objects, shaded across their extent
        m = _shape_mask(rng, size, extent=rng.uniform(0.15, 0.5, 2) * size)
        shade = 0.6 + 0.6 * value_noise(rng, size, 3)[m]
        img[m] = _random_colour(rng) * shade
    sigma = rng.uniform(0.0, 2.5)
    if sigma > 0.3:
        img = ndimage.gaussian_filter(img, (sigma, sigma, 0), truncate=2.5)
    return np.clip(img, 0.0, 1.0)


def background(rng: np.random.Generator, style: Style, size: int) -> np.ndarray:
    """A (size, size, 3) background of the style."""
    u, v = _coords(size)
    if style.background_families > 0 and rng.uniform() < style.background_families:
        img = random_background(rng, size)
    elif rng.uniform() < style.background_texture_probability:
        c1, c2 = _random_colour(rng), _random_colour(rng)
        if rng.uniform() < 0.5:
            w = fractal_noise(rng, size, 1)
            w = np.clip((w - 0.5) * rng.uniform(1.5, 3.0) + 0.5, 0, 1)
        else:
            th, period = rng.uniform(0, np.pi), rng.uniform(4, 20)
            w = 0.5 + 0.5 * np.sin(2 * np.pi * (u * np.cos(th) + v * np.sin(th)) / period
                                   + rng.uniform(0, 2 * np.pi))
            w = w[..., None]
        img = c1 + (c2 - c1) * w
        img *= 0.8 + 0.4 * fractal_noise(rng, size, 1, (16, 48))
    else:
        c1 = _random_colour(rng)
        if rng.uniform() < 0.5:
            img = np.broadcast_to(c1, (size, size, 3)).copy()
        else:
            c2 = _random_colour(rng)
            th = rng.uniform(0, 2 * np.pi)
            ramp = (u * np.cos(th) + v * np.sin(th)) / size
            ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
            img = c1 * (1 - ramp[..., None]) + c2 * ramp[..., None]
    for _ in range(rng.integers(style.num_shapes[0], style.num_shapes[1] + 1)):
        img[_shape_mask(rng, size)] = _random_colour(rng)
    n_distractors = rng.integers(style.num_distractors[0], style.num_distractors[1] + 1)
    if n_distractors:
        shade = 0.75 + 0.35 * value_noise(rng, size, 4)
        for _ in range(n_distractors):
            m = _shape_mask(rng, size)
            img[m] = _skin_tone(rng, style) * shade[m]
    return img.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The sample


def render(style: Style, rng: np.random.Generator, image_size: int = 128) -> dict[str, np.ndarray]:
    """Renders one random hand of `style`; see the module docstring for the outputs."""
    size = image_size
    K = hand_sampler.sample_intrinsics(rng, size, style.focal_range)
    hand = hand_sampler.sample_hand(
        rng, K, size, grasp_probability=style.grasp_probability,
        distance_range=style.distance_range, scale_range=style.scale_range,
        proportion_std=style.proportion_std,
    )
    # Drawn only by styles that vary it, so the other styles' random streams stay as they were.
    thickness = (rng.uniform(*style.thickness_range) if style.thickness_range != (1.0, 1.0)
                 else 1.0)
    a, b, radius, n_hand = hand_capsules(hand, thickness)
    depth, ids = raycast(a, b, radius, K, size)
    fg, normals, points = surface_normals(depth, ids, a, b, K)
    hand_mask = fg & (ids < n_hand)

    # Shading of the hit pixels: ambient + one directional light from the camera's side
    # (+ a Blinn-Phong highlight), times a uniform or textured skin albedo.
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.6, 1.4)])
    light = (light / np.linalg.norm(light)).astype(np.float32)
    ambient = np.float32(rng.uniform(*style.ambient_range))
    diffuse = np.maximum(normals @ light, 0.0)[:, None]
    skin = _skin_tone(rng, style)
    albedo = np.broadcast_to(skin, normals.shape).copy()
    if style.skin_texture > 0:
        tex = fractal_noise(rng, size, 1, (8, 16, 48))[fg] - 0.5
        albedo *= 1.0 + 2.0 * style.skin_texture * tex
        albedo[:, 0] *= 1.0 + 0.5 * style.skin_texture * (value_noise(rng, size, 6)[fg][:, 0] - 0.5)
    if rng.uniform() < style.sleeve_probability:
        albedo[~hand_mask[fg]] = _random_colour(rng)
    shaded = albedo * (ambient + (1.0 - ambient) * diffuse)
    if style.num_lights[1] > 1 or style.light_tint > 0:
        shaded = _tinted_lights(rng, style, shaded, albedo, normals, ambient)
    if style.specular > 0:
        view = -points / np.linalg.norm(points, axis=-1, keepdims=True)
        half = view + light
        half /= np.maximum(np.linalg.norm(half, axis=-1, keepdims=True), 1e-6)
        spec = np.maximum(np.sum(normals * half, -1), 0.0) ** np.float32(rng.uniform(8, 30))
        shaded += np.float32(style.specular * rng.uniform(0.5, 1.0)) * spec[:, None]

    img = background(rng, style, size)
    img[fg] = shaded
    depth = np.where(fg, depth, 0.0).astype(np.float32)

    # Occluders: flat cards in front of the hand covering part of it.
    uv = hand_sampler.project(hand.joints, K)
    occluded = np.zeros((size, size), bool)
    if rng.uniform() < style.occluder_probability:
        for _ in range(rng.integers(1, 3)):
            centre = uv[rng.integers(len(uv))] + rng.normal(0, 0.08 * size, 2)
            m = _shape_mask(rng, size, centre, rng.uniform(0.06, 0.2, 2) * size)
            colour = _random_colour(rng) * (0.7 + 0.5 * value_noise(rng, size, 8)[m])
            img[m] = colour
            occluded |= m
        depth[occluded] = hand.joints[:, 2].min() - 40.0
    hand_mask &= ~occluded

    # Sensor effects.
    gains = 1.0 + rng.uniform(-style.colour_cast, style.colour_cast, 3)
    img = img * (gains * rng.uniform(*style.exposure_range)).astype(np.float32)
    sigma = rng.uniform(*style.blur_sigma)
    if sigma > 0.05:
        img = ndimage.gaussian_filter(img, (sigma, sigma, 0), truncate=2.5)
    # Drawn only by styles that have them, so the other styles' random streams (and bytes) stay
    # as they were.
    if style.motion_blur[1] > 0:
        length = rng.uniform(*style.motion_blur)
        angle = rng.uniform(0.0, np.pi)
        if length >= 1.0:
            img = ndimage.convolve(img, motion_kernel(length, angle)[..., None], mode="nearest")
    low = size
    if style.resolution[0] < 1.0:
        low = max(8, int(round(size * rng.uniform(*style.resolution))))
        if low < size:
            img = downsample(img, low)
    noise = rng.uniform(*style.noise_std)
    if noise > 0:
        img = img + rng.standard_normal(img.shape, np.float32) * np.float32(noise)
    if low < size:
        # The sensor's noise is per sensor pixel: upsampled with the image, it becomes blotchy.
        img = ndimage.zoom(img, (size / low, size / low, 1), order=1, mode="nearest",
                           grid_mode=True)
    img = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    jpeg = None
    if style.jpeg_quality is not None:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG",
                                  quality=int(rng.integers(style.jpeg_quality[0],
                                                           style.jpeg_quality[1] + 1)))
        jpeg = buf.getvalue()
        img = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))  # libjpeg's accurate IDCT

    body = body_radii(hand.joints, a[:n_hand], b[:n_hand], radius[:n_hand])
    visibility = joint_visibility(uv, hand.joints[:, 2], body, depth, hand_mask)
    bbox = hand_box(uv, hand_mask)
    out = {
        "image": img,
        "depth": depth,
        "mask": hand_mask[..., None].astype(np.uint8),
        "keypoints_2d": uv,
        "keypoints_3d": hand.joints.astype(np.float32),
        "visibility": visibility,
        "K": K.astype(np.float32),
        "bbox": bbox,
    }
    if jpeg is not None:
        out["image_jpeg"] = jpeg
    return out


def _tinted_lights(rng: np.random.Generator, style: Style, shaded: np.ndarray,
                   albedo: np.ndarray, normals: np.ndarray,
                   ambient: np.float32) -> np.ndarray:
    """The first light's colour tinted, plus up to `num_lights - 1` more tinted directional
    lights of random strength (N, 3) from any side the camera sees."""
    tint = 1.0 + rng.uniform(-style.light_tint, style.light_tint, 3).astype(np.float32)
    shaded = shaded * tint
    for _ in range(int(rng.integers(style.num_lights[0], style.num_lights[1] + 1)) - 1):
        extra = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.0, 1.0)])
        extra = (extra / np.linalg.norm(extra)).astype(np.float32)
        strength = np.float32(rng.uniform(0.2, 0.8) * (1.0 - ambient))
        colour = 1.0 + rng.uniform(-style.light_tint, style.light_tint, 3).astype(np.float32)
        shaded = shaded + albedo * np.maximum(normals @ extra, 0.0)[:, None] * strength * colour
    return shaded


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A normalised line kernel of `length` pixels at `angle` radians (linear motion blur): odd
    size, the segment centred, each end's pixel weighted by its fractional coverage."""
    half = int(np.ceil(length / 2))
    n = 2 * half + 1
    k = np.zeros((n, n), np.float32)
    samples = max(2, int(np.ceil(4 * length)))
    t = (np.arange(samples) + 0.5) / samples - 0.5
    x, y = half + t * length * np.cos(angle), half + t * length * np.sin(angle)
    # Bilinear splat of the segment's sample points.
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                      (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        np.add.at(k, (np.clip(y0 + dy, 0, n - 1), np.clip(x0 + dx, 0, n - 1)), w)
    return k / k.sum()


def downsample(img: np.ndarray, low: int) -> np.ndarray:
    """(H, H, C) float image to (low, low, C): a Gaussian anti-alias filter matched to the
    factor, then linear resampling (what a lower-resolution sensor records of the scene)."""
    f = low / img.shape[0]
    sigma = 0.5 * (1.0 / f - 1.0)
    if sigma > 0.05:
        img = ndimage.gaussian_filter(img, (sigma, sigma, 0), truncate=2.5)
    return ndimage.zoom(img, (f, f, 1), order=1, mode="nearest", grid_mode=True)


def body_radii(joints: np.ndarray, a: np.ndarray, b: np.ndarray, radius: np.ndarray
               ) -> np.ndarray:
    """(J,) body radius of each joint (mm): the largest r_c + dist_c over the capsules c that
    contain the joint (dist_c: joint to the capsule's axis), i.e. how far in front of the joint
    its own body's surface can be."""
    ba = b - a  # (P, 3)
    rel = joints[:, None] - a[None]  # (J, P, 3)
    s = np.clip(np.sum(rel * ba, -1) / np.maximum(np.sum(ba * ba, -1), 1e-9), 0.0, 1.0)
    dist = np.linalg.norm(rel - s[..., None] * ba, axis=-1)  # (J, P)
    return np.max(np.where(dist <= radius, radius + dist, 0.0), axis=1)


def joint_visibility(
    uv: np.ndarray, z: np.ndarray, body: np.ndarray, depth: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """(J,) bool visibility from the depth buffer.

    A joint is visible when its pixel (rounded uv) is inside the image and on the hand mask, and
    the depth there is at most the joint's body radius (+2 mm) in front of the joint's depth: the
    surface seen is the joint's own body, not another finger, an occluder, or its own bone
    seen end-on.
    """
    size = depth.shape[0]
    pix = np.rint(uv).astype(int)
    inside = np.all((pix >= 0) & (pix < size), -1)
    pix = np.clip(pix, 0, size - 1)
    d = depth[pix[:, 1], pix[:, 0]]
    return inside & mask[pix[:, 1], pix[:, 0]] & (d >= z - body - VISIBILITY_TOLERANCE_MM)


def hand_box(uv: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[u_min, v_min, u_max, v_max] (float32) around the mask pixels and the keypoints."""
    v, u = np.nonzero(mask)
    us = np.concatenate([u, uv[:, 0]])
    vs = np.concatenate([v, uv[:, 1]])
    return np.array([us.min(), vs.min(), us.max(), vs.max()], np.float32)


def render_example(style: Style, seed: int, index: int, image_size: int = 128,
                   split: int = 0) -> dict[str, np.ndarray]:
    """Example `index` of a dataset: a pure function of (style name, seed, split, index).

    The same arguments give the same bytes on every run and machine (numpy's PCG64 stream).
    """
    rng = np.random.default_rng([zlib.crc32(style.name.encode()), seed, split, index])
    return render(style, rng, image_size)
