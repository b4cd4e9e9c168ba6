"""Random hands for the procedural renderer: joint angles, proportions, orientation, placement.

A sampled hand is the kinematic right hand of `hpe_jax.hand.kinematics` with
- a global scale and per-phalanx length variation (finger proportions),
- joint angles drawn inside `JOINT_LIMITS` from one of two pose priors:
  * "open": gesture-like, every finger independently extended, half bent or curled
    (pointing, counting, flat hand, fist, ...);
  * "grasp": all fingers flexed together by one grasp amount, with the thumb opposed,
    as when holding an object;
- a global rotation (the forearm never points at the camera),
- a placement in front of a pinhole camera (OpenCV axes, +z forward, mm) at a sampled distance,
  with a sampled focal length, so that the hand's joints stay inside the image.

Everything is numpy driven by one `np.random.Generator`, so a sample is a pure function of its
seed. Forward kinematics and projection reuse `hpe_jax.hand` (jitted once, run on the CPU).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from hpe_jax.hand import camera, kinematics
from hpe_jax.hand.skeleton import ROOT

PRIORS = ("open", "grasp")

# Finger capsule radii (mm) of the template hand per finger (thumb .. little) and phalanx
# (proximal, middle, distal); a finger narrows towards its tip.
FINGER_RADII = np.array(
    [[13.0, 11.0, 9.5], [10.0, 9.0, 8.0], [10.5, 9.5, 8.5], [10.0, 9.0, 8.0], [9.0, 8.0, 7.5]],
    np.float32,
)
PALM_RADIUS = 14.0  # half the palm's thickness (mm)
FOREARM_RADIUS = 24.0
FOREARM_LENGTH = 320.0  # long enough to leave the frame in almost every view
# Points on the wrist line (hand frame, mm) from which the palm capsules fan out to the MCPs;
# they give the palm its width at the wrist.
_WRIST_SPREAD = np.array([[-18.0, 8.0, 0.0], [-6.0, 4.0, 0.0], [6.0, 4.0, 0.0], [18.0, 8.0, 0.0]],
                         np.float32)


@dataclasses.dataclass(frozen=True)
class Hand:
    """A posed hand in the camera frame (all lengths in mm).

    Attributes:
      joints: (21, 3) canonical joints, camera frame.
      rotation: (3, 3) hand frame -> camera frame (columns: hand x, y, z axes).
      wrist_spread: (4, 3) palm anchor points on the wrist line, camera frame.
      scale: global size factor of this hand (1 = template).
      phalanx_radii: (5, 3) capsule radii of the phalanges.
    """

    joints: np.ndarray
    rotation: np.ndarray
    wrist_spread: np.ndarray
    scale: float
    phalanx_radii: np.ndarray


def sample_angles(rng: np.random.Generator, prior: str) -> np.ndarray:
    """Joint angles (5, 3, 2) in radians (flexion, abduction) inside `JOINT_LIMITS`.

    Flexion fractions below are of the flexion range [0, max] (negative = hyper-extension).
    """
    if prior not in PRIORS:
        raise ValueError(f"unknown pose prior {prior!r}; use one of {PRIORS}")
    limits = kinematics.JOINT_LIMITS  # (5, 3, 4): flex min, flex max, abd min, abd max
    flex_max = limits[..., 1]
    angles = np.zeros((5, 3, 2), np.float32)
    if prior == "open":
        # Per finger: extended, half bent or curled; DIP follows PIP (tendon coupling).
        state = rng.choice(3, size=5, p=[0.5, 0.2, 0.3])
        centre = np.array([0.05, 0.45, 0.9])[state]
        mcp = centre + rng.normal(0.0, 0.12, 5)
        pip = centre + rng.normal(0.0, 0.12, 5)
        dip = 0.8 * pip + rng.normal(0.0, 0.08, 5)
        flex = np.stack([mcp, pip, dip], -1)
        spread = rng.uniform(-0.2, 1.0)  # fingers together .. spread
        abd = np.zeros((5, 3))
        abd[1:, 0] = spread * np.array([-0.6, -0.05, 0.35, 0.8]) + rng.normal(0.0, 0.1, 4)
        thumb_out = rng.uniform(0.0, 1.0)
        abd[0, 0] = -0.5 + 1.2 * thumb_out
        flex[0] = np.array([0.2, 0.15, 0.15]) + (state[0] > 0) * np.array([0.4, 0.45, 0.5])
        flex[0] += rng.normal(0.0, 0.1, 3)
    else:
        g = rng.uniform(0.25, 0.95)  # how closed the grasp is
        flex = np.empty((5, 3))
        flex[1:] = g * np.array([0.75, 0.8, 0.6]) + rng.normal(0.0, 0.07, (4, 3))
        # Fingers further from the index close a little more, as around a cylinder.
        flex[1:, 0] += np.array([0.0, 0.04, 0.08, 0.12])
        flex[0] = np.array([0.5, 0.35, 0.3]) + g * np.array([0.2, 0.25, 0.3])
        flex[0] += rng.normal(0.0, 0.08, 3)
        abd = np.zeros((5, 3))
        abd[1:, 0] = rng.normal(0.0, 0.08, 4) + np.array([-0.2, 0.0, 0.15, 0.3]) * (1 - g)
        abd[0, 0] = rng.uniform(0.3, 0.9)  # the thumb opposes the fingers
    abd[:, 1:] = rng.normal(0.0, 0.05, (5, 2))
    # Fractions of the positive range ([0, max]) or of the negative one ([min, 0]).
    angles[..., 0] = np.where(flex >= 0, flex * flex_max, -flex * limits[..., 0])
    angles[..., 1] = np.where(abd >= 0, abd * limits[..., 3], -abd * limits[..., 2])
    angles[..., 0] = np.clip(angles[..., 0], limits[..., 0], limits[..., 1])
    angles[..., 1] = np.clip(angles[..., 1], limits[..., 2], limits[..., 3])
    return angles


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (3, 3), from a normalised Gaussian quaternion."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ],
        np.float32,
    )


def sample_orientation(rng: np.random.Generator) -> np.ndarray:
    """A random hand orientation (3, 3) whose forearm (hand -y) does not point at the camera."""
    for _ in range(100):
        R = random_rotation(rng)
        if -R[2, 1] > -0.15:  # z component of the forearm direction, hand -y in camera frame
            return R
    return R


@functools.cache
def _posed_fn():
    """Jitted (angles, bases, phalanges, R, t) -> joints (21, 3) in the camera frame."""

    def posed(angles, bases, phalanges, R, t):
        joints = kinematics.forward_kinematics(angles, bases, phalanges)
        return joints @ R.T + t

    return jax.jit(posed)


@functools.cache
def _project_fn():
    return jax.jit(camera.project)


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """`camera.project` of (N, 3) mm points with K, jitted on the CPU: (N, 2) float32 pixels."""
    with _cpu():
        return np.asarray(_project_fn()(np.asarray(points, np.float32),
                                        np.asarray(K, np.float32)))


def _cpu():
    return jax.default_device(jax.devices("cpu")[0])


def sample_hand_frame(
    rng: np.random.Generator,
    prior: str,
    scale_range: tuple[float, float] = (0.85, 1.15),
    proportion_std: float = 0.05,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Angles (5, 3, 2), bases (5, 3) and phalanges (5, 3) in mm, and the global scale."""
    scale = float(rng.uniform(*scale_range))
    proportions = np.clip(1.0 + rng.normal(0.0, proportion_std, (5, 3)), 0.85, 1.15)
    bases = kinematics.BASES * scale
    phalanges = kinematics.PHALANGES * proportions * scale
    return sample_angles(rng, prior), bases.astype(np.float32), phalanges.astype(np.float32), scale


def sample_intrinsics(
    rng: np.random.Generator, image_size: int, focal_range: tuple[float, float]
) -> np.ndarray:
    """K (3, 3): focal length = image_size * U(focal_range) px, principal point near the centre."""
    f = image_size * rng.uniform(*focal_range)
    c = (image_size - 1) / 2.0 + rng.normal(0.0, 0.02 * image_size, 2)
    return np.array([[f, 0.0, c[0]], [0.0, f, c[1]], [0.0, 0.0, 1.0]], np.float32)


def sample_hand(
    rng: np.random.Generator,
    K: np.ndarray,
    image_size: int,
    *,
    grasp_probability: float,
    distance_range: tuple[float, float],
    scale_range: tuple[float, float] = (0.85, 1.15),
    proportion_std: float = 0.05,
    border: float = 0.06,
) -> Hand:
    """A posed hand in front of camera K whose joints project inside the image.

    The root (middle MCP) is put at a depth from `distance_range` (mm) on a ray through a random
    pixel near the centre; the ray is pulled towards the centre until every joint lies at least
    `border * image_size` pixels inside the image (or the distance grows if that is not enough).
    """
    prior = "grasp" if rng.uniform() < grasp_probability else "open"
    angles, bases, phalanges, scale = sample_hand_frame(rng, prior, scale_range, proportion_std)
    R = sample_orientation(rng)
    z_root = float(rng.uniform(*distance_range))
    target = (image_size - 1) / 2.0 + rng.uniform(-0.2, 0.2, 2) * image_size
    centre = np.array([(image_size - 1) / 2.0] * 2)
    posed = _posed_fn()
    with _cpu():
        local = np.asarray(posed(angles, bases, phalanges, np.eye(3, dtype=np.float32),
                                 np.zeros(3, np.float32)))
    rel = local @ R.T - (local[ROOT] @ R.T)  # joints relative to the root, camera axes
    Kinv = np.linalg.inv(K)
    lo, hi = border * image_size, (1.0 - border) * image_size - 1.0
    for attempt in range(12):
        pix = centre + (target - centre) * (1.0 - attempt / 6.0 if attempt < 6 else 0.0)
        ray = Kinv @ np.array([pix[0], pix[1], 1.0])
        root = ray * z_root
        joints = rel + root
        uv = project(joints, K)
        ok = np.all(joints[:, 2] > 50.0) and np.all((uv >= lo) & (uv <= hi))
        if ok:
            break
        if attempt >= 6:
            z_root *= 1.12
    t = root - local[ROOT] @ R.T
    joints = (local @ R.T + t).astype(np.float32)
    spread = (_WRIST_SPREAD * scale) @ R.T + t
    return Hand(
        joints=joints,
        rotation=R.astype(np.float32),
        wrist_spread=spread.astype(np.float32),
        scale=scale,
        phalanx_radii=(FINGER_RADII * scale).astype(np.float32),
    )
