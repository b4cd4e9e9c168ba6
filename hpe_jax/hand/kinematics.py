"""A kinematic right hand: template geometry, joint-angle limits, and the joint-angle frames.

The same frames serve forward kinematics (the synthetic-hand sampler) and the pose correction
(`correction.py`), so a pose built from angles inside the limits is a fixed point of the
correction.

Hand frame of the template: wrist at the origin, +y from the wrist to the middle MCP, +z out of the
back of the hand (dorsal), +x = y cross z (towards the little finger). Units: mm.

Joint angles: every finger has three angle joints (its MCP, PIP and DIP; for the thumb the
canonical joints 1-3, i.e. CMC, MCP and IP), each with a flexion and an abduction angle in
radians, shape (5, 3, 2). Flexion bends the next bone towards the palm (about the joint's side
axis), abduction bends it sideways. Both are measured in a frame (forward f, dorsal u, side s)
that starts at the finger's base and travels with the finger (`advance_frame`).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from hpe_jax.hand.skeleton import FINGER_JOINTS, NUM_JOINTS, PARENTS

Array = jnp.ndarray

# Template right hand (mm): wrist -> finger bases, then phalanx lengths (proximal, middle, distal).
# Proportions of an adult hand after anthropometric tables (e.g. Buryanov & Kotiuk 2010, bones
# scaled to a 44 mm middle proximal phalanx); the thumb's first joint is MANO's thumb1 (CMC region).
BASES = np.array(
    [[-25.0, 25.0, -8.0], [-20.0, 88.0, 0.0], [0.0, 90.0, 0.0], [19.0, 84.0, 0.0],
     [35.0, 74.0, 0.0]],
    np.float32,
)
PHALANGES = np.array(
    [[35.0, 32.0, 27.0], [40.0, 24.0, 21.0], [44.0, 28.0, 23.0], [41.0, 27.0, 23.0],
     [32.0, 20.0, 20.0]],
    np.float32,
)
# The thumb's rest direction (hand frame) and its dorsal axis: the thumb points out and forward
# and its nail faces away from the fingers, so its flexion sweeps across the palm.
_THUMB_FORWARD = np.array([-0.55, 0.75, -0.35], np.float32)
_THUMB_DORSAL = np.array([-0.7, 0.0, 0.7], np.float32)

# Joint-angle limits in degrees, [flexion_min, flexion_max, abduction_min, abduction_max] per
# finger (thumb, index, middle, ring, little) and joint (MCP, PIP, DIP). Active ranges after
# Lee & Kunii (1995) and Cobos et al. (2008): MCP flexion 0-90 with up to 30 hyper-extension and
# +-20 abduction; PIP 0-110; DIP 0-90; thumb CMC/MCP/IP after the same sources. Hinge joints (PIP,
# DIP, thumb IP) get +-10 of abduction and a little hyper-extension as tolerance for label and
# prediction noise, which would otherwise be forced onto the limit.
JOINT_LIMITS_DEG = np.array(
    [
        [[-20, 60, -30, 40], [-15, 70, -15, 15], [-20, 90, -10, 10]],  # thumb CMC, MCP, IP
        [[-30, 90, -20, 20], [-10, 110, -10, 10], [-10, 90, -10, 10]],  # index
        [[-30, 90, -20, 20], [-10, 110, -10, 10], [-10, 90, -10, 10]],  # middle
        [[-30, 90, -20, 20], [-10, 110, -10, 10], [-10, 90, -10, 10]],  # ring
        [[-30, 90, -25, 25], [-10, 110, -10, 10], [-10, 90, -10, 10]],  # little
    ],
    np.float32,
)
JOINT_LIMITS = np.deg2rad(JOINT_LIMITS_DEG).astype(np.float32)


def template_pose(phalanx_scale: np.ndarray | None = None) -> np.ndarray:
    """The (21, 3) template right hand with all joint angles zero, in mm (hand frame).

    `phalanx_scale` (5, 3) multiplies each phalanx length (finger-proportion variation).
    """
    angles = np.zeros((5, 3, 2), np.float32)
    lengths = PHALANGES if phalanx_scale is None else PHALANGES * phalanx_scale
    return np.asarray(forward_kinematics(angles, BASES, lengths))


def _normalize(v: Array) -> Array:
    return v / jnp.maximum(jnp.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def palm_frame(pose: Array) -> Array:
    """Rotation (..., 3, 3) whose columns are the hand frame's x, y, z axes for a (..., 21, 3) pose.

    y: wrist -> middle MCP; z: dorsal normal of the palm (little MCP, index MCP); x = y cross z.
    """
    wrist = pose[..., 0, :]
    y = _normalize(pose[..., 9, :] - wrist)
    z = jnp.cross(pose[..., 17, :] - wrist, pose[..., 5, :] - wrist)
    z = _normalize(z - jnp.sum(z * y, -1, keepdims=True) * y)
    x = jnp.cross(y, z)
    return jnp.stack([x, y, z], axis=-1)


def _base_frames_local() -> np.ndarray:
    """(5, 3, 3) rest frames (rows f, u, s) of each finger in hand-frame coordinates."""
    frames = []
    for f in range(5):
        if f == 0:
            fwd, up = _THUMB_FORWARD, _THUMB_DORSAL
        else:
            fwd, up = BASES[f], np.array([0.0, 0.0, 1.0], np.float32)
        fwd = fwd / np.linalg.norm(fwd)
        up = up - up.dot(fwd) * fwd
        up = up / np.linalg.norm(up)
        frames.append(np.stack([fwd, up, np.cross(fwd, up)]))
    return np.asarray(frames, np.float32)


BASE_FRAMES = _base_frames_local()


def base_frames(pose: Array) -> Array:
    """(..., 5, 3, 3) rest frames (rows f, u, s) of each finger, in the pose's coordinates."""
    R = palm_frame(pose)  # (..., 3, 3), columns = hand axes
    return jnp.einsum("...ij,fkj->...fki", R, BASE_FRAMES)


def compose_direction(frame: Array, flexion: Array, abduction: Array) -> Array:
    """Unit bone direction (..., 3) from a frame (..., 3, 3) (rows f, u, s) and angles (...,)."""
    f, u, s = frame[..., 0, :], frame[..., 1, :], frame[..., 2, :]
    ca = jnp.cos(abduction)[..., None]
    fl = flexion[..., None]
    return ca * (jnp.cos(fl) * f - jnp.sin(fl) * u) + jnp.sin(abduction)[..., None] * s


def decompose_direction(frame: Array, d: Array) -> tuple[Array, Array]:
    """Inverse of `compose_direction` for a unit direction d: (flexion, abduction) in radians."""
    f, u, s = frame[..., 0, :], frame[..., 1, :], frame[..., 2, :]
    abduction = jnp.arcsin(jnp.clip(jnp.sum(d * s, -1), -1.0, 1.0))
    flexion = jnp.arctan2(-jnp.sum(d * u, -1), jnp.sum(d * f, -1))
    return flexion, abduction


def advance_frame(frame: Array, d: Array) -> Array:
    """The frame of the next joint after a bone with unit direction d: f' = d, side axis kept."""
    s = frame[..., 2, :]
    s = _normalize(s - jnp.sum(s * d, -1, keepdims=True) * d)
    u = jnp.cross(s, d)
    return jnp.stack([d, u, s], axis=-2)


def forward_kinematics(
    angles: Array, bases: Array = BASES, phalanges: Array = PHALANGES
) -> Array:
    """Joint positions (..., 21, 3) in the hand frame (mm) from joint angles (..., 5, 3, 2).

    Args:
      angles: flexion/abduction in radians per finger and angle joint.
      bases: (..., 5, 3) wrist -> finger-base offsets (the rigid palm).
      phalanges: (..., 5, 3) phalanx lengths.
    """
    angles = jnp.asarray(angles, jnp.float32)
    batch = angles.shape[:-3]
    bases = jnp.broadcast_to(jnp.asarray(bases, jnp.float32), batch + (5, 3))
    phalanges = jnp.broadcast_to(jnp.asarray(phalanges, jnp.float32), batch + (5, 3))
    joints = [jnp.zeros(batch + (3,), jnp.float32)] * NUM_JOINTS
    for f in range(5):
        joints[FINGER_JOINTS[f][0]] = bases[..., f, :]
    # The finger frames hang off the palm the bases span, exactly as `joint_angles` reads them.
    frames = base_frames(jnp.stack(joints, axis=-2))
    for f in range(5):
        frame = frames[..., f, :, :]
        for k in range(3):
            d = compose_direction(frame, angles[..., f, k, 0], angles[..., f, k, 1])
            parent, child = FINGER_JOINTS[f][k], FINGER_JOINTS[f][k + 1]
            joints[child] = joints[parent] + phalanges[..., f, k, None] * d
            frame = advance_frame(frame, d)
    return jnp.stack(joints, axis=-2)


def joint_angles(pose: Array) -> Array:
    """Joint angles (..., 5, 3, 2) of a (..., 21, 3) pose in the frames of this module (radians)."""
    frames = base_frames(pose)
    out = []
    for f in range(5):
        frame = frames[..., f, :, :]
        per_joint = []
        for k in range(3):
            parent, child = FINGER_JOINTS[f][k], FINGER_JOINTS[f][k + 1]
            d = _normalize(pose[..., child, :] - pose[..., parent, :])
            per_joint.append(jnp.stack(decompose_direction(frame, d), -1))
            frame = advance_frame(frame, d)
        out.append(jnp.stack(per_joint, -2))
    return jnp.stack(out, -3)


assert PARENTS[FINGER_JOINTS[0][0]] == 0  # the finger bases hang off the wrist
