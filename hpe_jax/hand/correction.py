"""Pose correction rho (SemiHand, with DM-HPE's joint-angle feasibility): registers a 3D pose to a
template's bone lengths and clamps the finger joint angles to feasible ranges. rho needs no
training. The pseudo-label r and its confidence C built on it live in `objectives.pseudo_labels`.
"""

from __future__ import annotations

import jax.numpy as jnp

from hpe_jax.hand import kinematics
from hpe_jax.hand.skeleton import BONES, FINGER_JOINTS, NUM_JOINTS

Array = jnp.ndarray


def _unit(v: Array) -> Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def correct_pose(
    pose: Array,
    template: Array,
    limits: Array | None = kinematics.JOINT_LIMITS,
) -> Array:
    """Registers a pose to a template's bone lengths along the kinematic chain (rho).

    Greedy, from the wrist outwards: the wrist stays where it is; each child joint is put on the
    ray from its already-registered parent towards the child's *predicted* position, at the
    template's bone length. Aiming at the predicted child (rather than chaining the predicted bone
    directions) keeps each joint's error from accumulating along the finger. For the finger bones,
    the direction is first expressed as flexion/abduction in the finger's joint frame
    (`kinematics`) and clamped to `limits` (radians, (5, 3, 4) [flex_min, flex_max, abd_min,
    abd_max]; None skips the angle step).

    Args:
      pose: (..., 21, 3) joints in any consistent unit (mm, or reference-bone units).
      template: (21, 3) or (..., 21, 3) pose whose bone lengths are the target, same unit.
    Returns:
      (..., 21, 3) corrected pose.
    """
    pose = jnp.asarray(pose)
    template = jnp.asarray(template, pose.dtype)
    lengths = jnp.stack(
        [jnp.linalg.norm(template[..., c, :] - template[..., p, :], axis=-1) for p, c in BONES], -1
    )
    lengths = jnp.broadcast_to(lengths, pose.shape[:-2] + (NUM_JOINTS - 1,))
    out = [None] * NUM_JOINTS
    out[0] = pose[..., 0, :]
    # The palm: wrist -> finger bases, directions kept, lengths from the template.
    for f in range(5):
        b = FINGER_JOINTS[f][0]
        out[b] = out[0] + lengths[..., b - 1, None] * _unit(pose[..., b, :] - out[0])
    frames = kinematics.base_frames(jnp.stack([o if o is not None else out[0] for o in out], -2))
    for f in range(5):
        frame = frames[..., f, :, :]
        for k in range(3):
            parent, child = FINGER_JOINTS[f][k], FINGER_JOINTS[f][k + 1]
            d = _unit(pose[..., child, :] - out[parent])
            if limits is not None:
                flex, abd = kinematics.decompose_direction(frame, d)
                lim = jnp.asarray(limits, pose.dtype)[f, k]
                flex = jnp.clip(flex, lim[0], lim[1])
                abd = jnp.clip(abd, lim[2], lim[3])
                d = kinematics.compose_direction(frame, flex, abd)
            out[child] = out[parent] + lengths[..., child - 1, None] * d
            frame = kinematics.advance_frame(frame, d)
    return jnp.stack(out, axis=-2)
