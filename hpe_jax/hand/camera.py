"""Pinhole camera geometry, the 2.5D pose encoding, root-depth recovery and crop affines.

Conventions used throughout the project:
- 3D points are in millimetres in the camera frame (+x right, +y down, +z forward; OpenCV).
- Pixel coordinates (u, v) put pixel centres at integers: pixel (row i, column j) has centre
  (u, v) = (j, i) and an image of width W spans u in [-0.5, W - 0.5].
- K is the 3x3 intrinsic matrix; a crop affine A (3x3, last row [0, 0, 1]) maps pixels of one
  image to another, and the intrinsics of the new image are A @ K.

2.5D encoding (SemiHand, after Iqbal et al. ECCV 2018): per joint, uv in pixels and
    z_rel = (z - z_root) / s,
where z_root is the depth of the root joint (middle MCP, `skeleton.ROOT`) and s the length of the
reference bone (middle MCP -> PIP, `skeleton.REFERENCE_BONE`) in mm. z_rel is thus unitless
("reference-bone units") and invariant to the hand's size.

All functions take arrays with any number of leading batch axes and are jit-able.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from hpe_jax.hand.skeleton import BONES, REFERENCE_BONE, ROOT

Array = jnp.ndarray


def project(xyz: Array, K: Array) -> Array:
    """Projects (..., J, 3) camera-frame points with (..., 3, 3) K to (..., J, 2) pixels."""
    p = jnp.einsum("...ij,...nj->...ni", K, xyz)
    return p[..., :2] / p[..., 2:3]


def backproject(uv: Array, depth: Array, K: Array) -> Array:
    """Lifts (..., J, 2) pixels with (..., J) depths (mm) to (..., J, 3) camera-frame points."""
    rays = normalized_rays(uv, K)
    return rays * depth[..., None]


def normalized_rays(uv: Array, K: Array) -> Array:
    """K^-1 [u, v, 1]: (..., J, 3) rays whose z component is 1."""
    ones = jnp.ones(uv.shape[:-1] + (1,), uv.dtype)
    h = jnp.concatenate([uv, ones], axis=-1)
    return jnp.einsum("...ij,...nj->...ni", jnp.linalg.inv(K), h)


def reference_scale(xyz: Array, bone: tuple[int, int] = REFERENCE_BONE) -> Array:
    """Length (...,) of the reference bone of a (..., 21, 3) pose, in the pose's units."""
    return jnp.linalg.norm(xyz[..., bone[1], :] - xyz[..., bone[0], :], axis=-1)


def encode_25d(
    xyz: Array, K: Array, root: int = ROOT, bone: tuple[int, int] = REFERENCE_BONE
) -> tuple[Array, Array, Array, Array]:
    """3D pose -> 2.5D.

    Args:
      xyz: (..., 21, 3) joints in mm, camera frame.
      K: (..., 3, 3) intrinsics.
    Returns:
      uv (..., 21, 2) pixels, z_rel (..., 21) in reference-bone units, z_root (...,) in mm and the
      scale s (...,) in mm.
    """
    uv = project(xyz, K)
    z_root = xyz[..., root, 2]
    scale = reference_scale(xyz, bone)
    z_rel = (xyz[..., 2] - z_root[..., None]) / scale[..., None]
    return uv, z_rel, z_root, scale


def decode_25d(uv: Array, z_rel: Array, K: Array, z_root: Array, scale: Array) -> Array:
    """2.5D -> 3D: (..., 21, 2) uv and (..., 21) z_rel with root depth and scale (mm) -> mm."""
    depth = z_root[..., None] + scale[..., None] * z_rel
    return backproject(uv, depth, K)


#: Floor of the quadratic's leading coefficient a = |x_n - x_m|^2 (squared difference of the
#: reference bone's normalised rays). When both joints fall on one pixel, a = b = 0 and the
#: closed form is 0/0; the floor caps the root depth at 1/sqrt(A_MIN) = 1e4 bone units (hundreds
#: of metres: far beyond any hand), so a degenerate prediction yields a finite, obviously wrong
#: pose (which the pseudo-label confidence then rejects) instead of NaN.
A_MIN = 1e-8


@functools.cache
def template_bone_lengths() -> np.ndarray:
    """(20,) lengths of `skeleton.BONES` of the synthetic template hand, in reference-bone units
    (the default hand for root disambiguation and the least-squares root fit)."""
    from hpe_jax.hand import kinematics  # kinematics is heavier; used here only

    with jax.ensure_compile_time_eval():  # a constant, also when first called inside jit
        t = np.asarray(kinematics.template_pose(), np.float64)
    lengths = np.stack([np.linalg.norm(t[c] - t[p]) for p, c in BONES])
    return (lengths / np.linalg.norm(t[REFERENCE_BONE[1]] - t[REFERENCE_BONE[0]])).astype(
        np.float32)


def bone_lengths_of(pose: Array) -> Array:
    """(..., 21, 3) poses -> (..., 20) lengths of `skeleton.BONES`, in the poses' unit."""
    return jnp.stack([jnp.linalg.norm(pose[..., c, :] - pose[..., p, :], axis=-1)
                      for p, c in BONES], -1)


def _bone_vectors(uv: Array, z_rel: Array, K: Array) -> tuple[Array, Array]:
    """Bone b's 3D vector is A_b Z_root + B_b (reference-bone units) for a root depth Z_root:
    returns A, B of shape (..., 20, 3) from rays x and root-relative depths z."""
    rays = normalized_rays(uv, K)
    parents = jnp.asarray([p for p, _ in BONES])
    children = jnp.asarray([c for _, c in BONES])
    xp, xc = rays[..., parents, :], rays[..., children, :]
    zp, zc = z_rel[..., parents, None], z_rel[..., children, None]
    return xc - xp, xc * zc - xp * zp


def _bone_error(uv: Array, z_rel: Array, K: Array, z_root: Array, lengths: Array) -> Array:
    """sum_b (|bone_b(z_root)| - lengths_b)^2 (...,), +inf where a joint is not in front."""
    a, b = _bone_vectors(uv, z_rel, K)
    err = jnp.sum((jnp.linalg.norm(a * z_root[..., None, None] + b, axis=-1) - lengths) ** 2, -1)
    in_front = jnp.min(z_root[..., None] + z_rel, axis=-1) > 0
    return jnp.where(in_front, err, jnp.inf)


def recover_root_depth(
    uv: Array, z_rel: Array, K: Array, bone: tuple[int, int] = REFERENCE_BONE,
    choose: str = "bones", bone_lengths: Array | None = None,
) -> Array:
    """Closed-form root depth of Iqbal et al. (ECCV 2018, Sec. 3.2), in reference-bone units.

    With normalised rays x_k = K^-1 [u_k, v_k, 1] and depths Z_k = Z_root + z_rel_k (all in units of
    the reference bone), the reference bone has unit length:
        || x_n (Z_root + z_n) - x_m (Z_root + z_m) ||^2 = 1,
    a quadratic a Z^2 + b Z + c = 0 in Z_root. Multiply by the hand's scale (mm) to get the metric
    root depth. Where the discriminant is negative (an inconsistent prediction) it is clamped to
    zero, giving the closest real solution; a is floored at `A_MIN` (joints n and m on one pixel),
    so the result is always finite.

    Which of the two roots: both give the reference bone unit length. Iqbal et al. take the
    larger (`choose="larger"`), which is right when the smaller one is behind the camera, but
    wrong when the reference bone points along the viewing ray: then both are in front and the
    smaller may be the true one. `choose="bones"` (default) takes the root whose whole hand is in
    front of the camera and whose other 19 bones best match `bone_lengths` (sum of squared length
    errors); the larger root where neither hand is in front.

    Args:
      uv: (..., 21, 2) pixels; z_rel: (..., 21) root-relative depths; K: (..., 3, 3).
      choose: "bones" or "larger" (see above).
      bone_lengths: (20,) or (..., 20) lengths of `skeleton.BONES` in reference-bone units for
        "bones"; default `template_bone_lengths()`.
    Returns:
      (...,) root depth divided by the reference bone length.
    """
    if choose not in ("bones", "larger"):
        raise ValueError(f"unknown root choice {choose!r}; use 'bones' or 'larger'")
    n, m = bone
    rays = normalized_rays(uv, K)
    xn, xm = rays[..., n, :], rays[..., m, :]
    zn, zm = z_rel[..., n, None], z_rel[..., m, None]
    dx = xn - xm
    dz = xn * zn - xm * zm
    a = jnp.maximum(jnp.sum(dx * dx, axis=-1), A_MIN)
    b = 2.0 * jnp.sum(dx * dz, axis=-1)
    c = jnp.sum(dz * dz, axis=-1) - 1.0
    disc = jnp.maximum(b * b - 4.0 * a * c, 0.0)
    larger = (-b + jnp.sqrt(disc)) / (2.0 * a)
    if choose == "larger":
        return larger
    smaller = (-b - jnp.sqrt(disc)) / (2.0 * a)
    lengths = template_bone_lengths() if bone_lengths is None else jnp.asarray(bone_lengths)
    lengths = lengths.astype(uv.dtype)
    use_smaller = (_bone_error(uv, z_rel, K, smaller, lengths)
                   < _bone_error(uv, z_rel, K, larger, lengths))
    return jnp.where(use_smaller, smaller, larger)


def lift_25d(
    uv: Array, z_rel: Array, K: Array, scale: Array | float = 1.0,
    bone_lengths: Array | None = None,
) -> tuple[Array, Array]:
    """2.5D -> 3D with the root depth recovered from the pose itself (`recover_root_depth`,
    default root choice): the inverse of `encode_25d` when z_root is not known.

    Args:
      uv: (..., 21, 2) pixels; z_rel: (..., 21) root-relative depths in reference-bone units;
      K: (..., 3, 3) intrinsics of the image uv is in.
      scale: (...,) or scalar reference-bone length; its unit is the output's (mm for a hand
        scale in mm; the default 1 gives a pose normalised to reference-bone units).
      bone_lengths: (20,) the hand's bone lengths in reference-bone units, which pick the root
        of the two (`recover_root_depth`); default the synthetic template's.
    Returns:
      xyz (..., 21, 3) camera frame and z_root (...,) the recovered root depth, both in the units
      of `scale`.
    """
    z_root = recover_root_depth(uv, z_rel, K, bone_lengths=bone_lengths) * scale
    return decode_25d(uv, z_rel, K, z_root, jnp.asarray(scale, z_root.dtype)), z_root


def fit_root_depth_lsq(
    uv: Array, z_rel: Array, K: Array, bone_lengths: Array | None = None, iterations: int = 20,
) -> Array:
    """Root depth fitted to all 20 bones by least squares, in reference-bone units (...,).

    Minimises sum_b (|A_b Z + B_b| - L_b)^2 over Z (bone b's vector is A_b Z + B_b, see
    `_bone_vectors`) by Gauss-Newton from the weak-perspective estimate
    Z0 = sum_b L_b |A_b| / sum_b |A_b|^2. A robust alternative to `recover_root_depth`, which
    uses one short bone: at a 64-px output one pixel of noise on it moves the root by ~35 mm,
    while the fit averages the noise over every bone. It needs the hand's bone proportions
    (`bone_lengths`, default the template's); their error becomes a bias of the root depth.

    Args:
      uv: (..., 21, 2) pixels; z_rel: (..., 21) reference-bone units; K: (..., 3, 3).
      bone_lengths: (20,) or (..., 20) in reference-bone units.
    """
    lengths = template_bone_lengths() if bone_lengths is None else jnp.asarray(bone_lengths)
    lengths = lengths.astype(uv.dtype)
    a, b = _bone_vectors(uv, z_rel, K)
    a_norm = jnp.linalg.norm(a, axis=-1)
    z = jnp.sum(lengths * a_norm, -1) / jnp.maximum(jnp.sum(a_norm ** 2, -1), A_MIN)
    for _ in range(iterations):
        v = a * z[..., None, None] + b
        norm = jnp.maximum(jnp.linalg.norm(v, axis=-1), 1e-9)
        r = norm - lengths
        j = jnp.sum(v * a, -1) / norm
        z = z - jnp.sum(j * r, -1) / jnp.maximum(jnp.sum(j * j, -1), A_MIN)
    return z


# ---------------------------------------------------------------------------------------------
# Crop geometry. One 3x3 affine maps the source image's pixels to the crop's pixels; keypoints,
# intrinsics and images are all mapped by that same matrix, so they stay consistent.

#: The default crop margin around a given hand box (`square_box`'s `margin`, a fraction of the
#: box's larger side added on each side): the data pipeline's and the exported predictor's.
DEFAULT_CROP_MARGIN = 0.2


def square_box(uv: Array, margin: float = 0.25, valid: Array | None = None) -> Array:
    """Square box (..., 4) = [u_min, v_min, u_max, v_max] around (..., J, 2) keypoints.

    The side is the larger extent of the keypoints times (1 + 2 * margin), centred on the extent's
    centre. `valid` (..., J) selects the keypoints that count (all by default).
    """
    if valid is None:
        valid = jnp.ones(uv.shape[:-1], bool)
    big = jnp.asarray(1e9, uv.dtype)
    lo = jnp.min(jnp.where(valid[..., None], uv, big), axis=-2)
    hi = jnp.max(jnp.where(valid[..., None], uv, -big), axis=-2)
    centre = 0.5 * (lo + hi)
    half = 0.5 * jnp.max(hi - lo, axis=-1) * (1.0 + 2.0 * margin)
    half = jnp.maximum(half, 1.0)
    return jnp.concatenate([centre - half[..., None], centre + half[..., None]], axis=-1)


def crop_affine(
    box: Array, out_size: int, rotation: Array | float = 0.0, scale: Array | float = 1.0,
    shift: Array | None = None,
) -> Array:
    """Affine (..., 3, 3) mapping source pixels to an out_size x out_size crop of `box`.

    The box's centre lands on the crop's centre ((out_size - 1) / 2) and its sides on the crop's
    borders, then the crop is rotated by `rotation` radians (counter-clockwise as displayed, i.e.
    v pointing down) about its centre, zoomed by `scale` (> 1 enlarges the hand) and shifted by
    `shift` (..., 2) crop pixels. Non-square boxes are fitted by their larger side.

    Args:
      box: (..., 4) [u_min, v_min, u_max, v_max] in source pixels.
    """
    box = jnp.asarray(box, jnp.float32)
    centre = 0.5 * (box[..., :2] + box[..., 2:])
    side = jnp.max(box[..., 2:] - box[..., :2], axis=-1)
    s = out_size / side * scale
    rotation = jnp.broadcast_to(jnp.asarray(rotation, jnp.float32), s.shape)
    # Counter-clockwise on screen with v down is a clockwise rotation in (u, v) algebra.
    cos, sin = jnp.cos(rotation), jnp.sin(rotation)
    c_out = (out_size - 1) / 2.0
    if shift is None:
        shift = jnp.zeros(centre.shape, jnp.float32)
    a00, a01 = s * cos, s * sin
    a10, a11 = -s * sin, s * cos
    t0 = c_out + shift[..., 0] - (a00 * centre[..., 0] + a01 * centre[..., 1])
    t1 = c_out + shift[..., 1] - (a10 * centre[..., 0] + a11 * centre[..., 1])
    zeros, ones = jnp.zeros_like(s), jnp.ones_like(s)
    rows = [
        jnp.stack([a00, a01, t0], -1),
        jnp.stack([a10, a11, t1], -1),
        jnp.stack([zeros, zeros, ones], -1),
    ]
    return jnp.stack(rows, axis=-2)


def invert_affine(A: Array) -> Array:
    """Inverse (..., 3, 3) of a (..., 3, 3) pixel affine."""
    return jnp.linalg.inv(A)


def apply_affine(A: Array, uv: Array) -> Array:
    """Maps (..., J, 2) pixels with a (..., 3, 3) affine."""
    return jnp.einsum("...ij,...nj->...ni", A[..., :2, :2], uv) + A[..., None, :2, 2]


def affine_intrinsics(A: Array, K: Array) -> Array:
    """Intrinsics (..., 3, 3) of the image warped by A: project(xyz, A @ K) = A(project(xyz, K))."""
    return A @ K


def warp_image(image: Array, A: Array, out_size: int, fill: float = 0.0) -> Array:
    """Warps an (H, W, C) image by the pixel affine A into an (out_size, out_size, C) image.

    Output pixel q samples the source at A^-1 q with bilinear interpolation; samples outside the
    source get `fill`. For batches, vmap it.
    """
    h, w = image.shape[:2]
    inv = jnp.linalg.inv(A)
    ys, xs = jnp.meshgrid(jnp.arange(out_size), jnp.arange(out_size), indexing="ij")
    q = jnp.stack([xs.ravel(), ys.ravel()], -1).astype(jnp.float32)
    src = apply_affine(inv, q)
    u, v = src[:, 0], src[:, 1]
    u0, v0 = jnp.floor(u), jnp.floor(v)
    out = 0.0
    for du in (0, 1):
        for dv in (0, 1):
            uu, vv = u0 + du, v0 + dv
            wgt = (1 - jnp.abs(u - uu)) * (1 - jnp.abs(v - vv))
            inside = (uu >= 0) & (uu <= w - 1) & (vv >= 0) & (vv <= h - 1)
            pix = image[jnp.clip(vv, 0, h - 1).astype(int), jnp.clip(uu, 0, w - 1).astype(int)]
            out = out + jnp.where(inside[:, None], pix * wgt[:, None], 0.0)
    # Pixels whose four neighbours all fall outside take the fill value.
    any_inside = (u > -1) & (u < w) & (v > -1) & (v < h)
    out = jnp.where(any_inside[:, None], out, fill)
    return out.reshape(out_size, out_size, image.shape[-1])


def mirror_horizontally(
    uv: Array, xyz: Array, K: Array, width: int
) -> tuple[Array, Array, Array]:
    """Labels of a left-right flipped image of `width` pixels (left hand -> right hand).

    Flipping the image (column j -> width - 1 - j) equals negating x in the camera frame with the
    principal point moved to width - 1 - cx; fx, fy are unchanged. Returns (uv, xyz, K) flipped.
    """
    uv = jnp.stack([width - 1 - uv[..., 0], uv[..., 1]], axis=-1)
    xyz = xyz * jnp.array([-1.0, 1.0, 1.0], xyz.dtype)
    K = K.at[..., 0, 2].set(width - 1 - K[..., 0, 2])
    K = K.at[..., 0, 1].set(-K[..., 0, 1])
    return uv, xyz, K


def resize_affine(factor: float) -> Array:
    """Affine (3, 3) from an image's pixels to those of the image resized by `factor`.

    With pixel centres at integers, u' = (u + 0.5) * factor - 0.5 (e.g. factor 1/4 from the input
    crop to the output heatmap). Compose with crop affines: A_out = resize_affine(1/4) @ A_in.
    """
    f = jnp.float32(factor)
    t = 0.5 * f - 0.5
    return jnp.array([[f, 0.0, t], [0.0, f, t], [0.0, 0.0, 1.0]], jnp.float32)
