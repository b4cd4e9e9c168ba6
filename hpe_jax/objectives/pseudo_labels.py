"""Pseudo-labels from two passes of a teacher (DM-HPE Eq. 8-9).

Pass 1 (RGB only) gives p_R and a depth map; pass 2 feeds the image with that depth map through the
depth encoder and attention, giving p_F. The label r averages p_R, p_F and their corrections; the
loss l(p, r) counts only where the confidence C(r) <= epsilon.

The pose correction rho works on 3D poses, the network predicts 2.5D (uv in output pixels, z in
reference-bone units). A 2.5D pose is lifted to a scale-normalised 3D pose (units of the reference
bone) with the closed-form root depth of Iqbal et al. and the crop's intrinsics, corrected against
a template whose reference bone has unit length, and projected back to 2.5D.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hpe_jax.hand import camera, kinematics
from hpe_jax.hand.correction import correct_pose
from hpe_jax.hand.skeleton import BONES, REFERENCE_BONE, ROOT
from hpe_jax.objectives.pose import pose_distance_25d

Array = jnp.ndarray


def normalized_template() -> np.ndarray:
    """The template hand (21, 3) with a unit reference bone: the target bone lengths of rho.

    It is the synthetic sampler's mean hand (kinematics.template_pose), `loss.template =
    "sampler"`; `template_from_bone_ratios(bone_ratios(...))` builds the "source_mean" one.
    """
    t = kinematics.template_pose()
    return (t / np.linalg.norm(t[REFERENCE_BONE[1]] - t[REFERENCE_BONE[0]])).astype(np.float32)


#: `loss.pseudo_label_passes` choices: the teacher's passes r averages (Eq. 8: two).
PSEUDO_LABEL_PASSES: tuple[int, ...] = (1, 2)

#: `loss.template` choices: the bone lengths rho corrects to.
TEMPLATES: tuple[str, ...] = ("sampler", "source_mean")


def bone_ratios(keypoints_3d: np.ndarray) -> np.ndarray:
    """(N, 21, 3) poses (any length unit) -> (20,) mean bone lengths over poses, in units of each
    pose's reference bone, in `skeleton.BONES` order. Poses with a degenerate (< 1e-6 of the
    median) or non-finite reference bone are skipped."""
    kp = np.asarray(keypoints_3d, np.float64)
    lengths = np.stack([np.linalg.norm(kp[:, c] - kp[:, p], axis=-1) for p, c in BONES], -1)
    ref = np.linalg.norm(kp[:, REFERENCE_BONE[1]] - kp[:, REFERENCE_BONE[0]], axis=-1)
    ok = np.isfinite(ref) & (ref > 1e-6 * np.median(ref)) & np.all(np.isfinite(lengths), -1)
    if not ok.any():
        raise ValueError("no pose with a usable reference bone to measure bone lengths from")
    return (lengths[ok] / ref[ok, None]).mean(0)


def template_from_bone_ratios(ratios: np.ndarray) -> np.ndarray:
    """(20,) bone lengths in reference-bone units -> (21, 3) hand with exactly those lengths.

    rho reads only the template's bone lengths; the directions are the sampler template's, each
    bone rescaled along the chain from the wrist (`BONES` lists parents before children).
    """
    t = kinematics.template_pose().astype(np.float64)
    out = np.zeros_like(t)
    out[0] = t[0]
    for length, (p, c) in zip(np.asarray(ratios, np.float64), BONES, strict=True):
        d = t[c] - t[p]
        out[c] = out[p] + length * d / np.linalg.norm(d)
    return out.astype(np.float32)


def drop_to_25d(xyz: Array, K: Array) -> tuple[Array, Array]:
    """Inverse of `camera.lift_25d` (without a scale) for a normalised 3D pose: (uv px, z
    root-relative bone units)."""
    return camera.project(xyz, K), xyz[..., 2] - xyz[..., ROOT, None, 2]


def corrected_25d(uv: Array, z: Array, K: Array, template: Array) -> tuple[Array, Array]:
    """rho applied to a 2.5D pose: lift, correct against `template`, project back. The root of
    the lift is chosen with the template's bone lengths too (the hand rho corrects to)."""
    lengths = camera.bone_lengths_of(jnp.asarray(template, jnp.float32))
    xyz, _ = camera.lift_25d(uv, z, K, bone_lengths=lengths)  # reference-bone units, camera
    return drop_to_25d(correct_pose(xyz, template), K)


def pseudo_label(poses_uv: Array, poses_z: Array) -> tuple[Array, Array]:
    """Eq. 8: the mean r of K poses (K = 4: p_R, rho(p_R), p_F, rho(p_F)).

    Args:
      poses_uv: (K, ..., 21, 2); poses_z: (K, ..., 21).
    Returns:
      r_uv (..., 21, 2), r_z (..., 21).
    """
    return jnp.mean(poses_uv, axis=0), jnp.mean(poses_z, axis=0)


def pseudo_label_confidence(
    poses_uv: Array, poses_z: Array, lambda_z: float = 50.0, uv_scale: float = 1.0
) -> Array:
    """C(r): the mean 2.5D distance l of the K poses to their mean r (their spread); (...,).

    Same units as `objectives.pose.pose_distance_25d` (uv as given, z as given; mean over joints),
    so C = 0 exactly when the poses coincide and the threshold epsilon is in the units of l.
    """
    r_uv, r_z = pseudo_label(poses_uv, poses_z)
    dists = pose_distance_25d(poses_uv, poses_z, r_uv[None], r_z[None], lambda_z,
                              uv_scale=uv_scale)
    return jnp.mean(dists, axis=0)


def make_pseudo_labels(
    pose_r: tuple[Array, Array],
    pose_f: tuple[Array, Array],
    K: Array,
    template: Array,
    *,
    lambda_z: float,
    epsilon: float,
    uv_scale: float = 1.0,
    passes: int = 2,
) -> dict[str, Array]:
    """r = (p_R + rho(p_R) + p_F + rho(p_F)) / 4, its confidence C(r), and the keep mask.

    Args:
      pose_r, pose_f: (uv (N, J, 2), z (N, J)) of the first (RGB) and second (fused) pass.
      K: (N, 3, 3) output-resolution intrinsics of the image the poses were predicted on.
      passes: 2 (Eq. 8) or 1: r = (p_R + rho(p_R)) / 2 and C their spread, the second pass
        left out (`loss.pseudo_label_passes`, the ablation of the paper's two-pass claim).
    Returns:
      'uv', 'z' (the pseudo-label r; zeros where not finite), 'confidence' (N,) (may be
      non-finite), 'finite' (N,) float (r and C finite) and 'keep' (N,) float (finite and
      C <= epsilon).
    """
    if passes not in PSEUDO_LABEL_PASSES:
        raise ValueError(f"pseudo-label passes={passes}; use one of {PSEUDO_LABEL_PASSES}")
    poses = [pose_r, corrected_25d(*pose_r, K, template)]
    if passes == 2:
        poses += [pose_f, corrected_25d(*pose_f, K, template)]
    uvs = jnp.stack([uv for uv, _ in poses])
    zs = jnp.stack([z for _, z in poses])
    r_uv, r_z = pseudo_label(uvs, zs)
    conf = pseudo_label_confidence(uvs, zs, lambda_z, uv_scale)
    # A degenerate teacher pose (e.g. joints 9 and 10 on one pixel) can make the lifted pose, and
    # so r and C, non-finite: such a label is rejected and its values zeroed, so nothing
    # downstream (the loss, its gradient, the logged means) ever sees a NaN.
    finite = (jnp.all(jnp.isfinite(r_uv), axis=(-2, -1)) & jnp.all(jnp.isfinite(r_z), axis=-1)
              & jnp.isfinite(conf))
    keep = (finite & (conf <= epsilon)).astype(jnp.float32)
    return {"uv": jnp.where(finite[..., None, None], r_uv, 0.0),
            "z": jnp.where(finite[..., None], r_z, 0.0),
            "confidence": conf, "finite": finite.astype(jnp.float32), "keep": keep}
