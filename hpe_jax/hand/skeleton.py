"""The canonical 21-joint hand skeleton and the index maps from public datasets' orders.

Canonical order (FreiHAND / MANO / DexYCB): 0 wrist; then thumb, index, middle, ring and little
finger, each with four joints from the base to the tip:

    0 wrist
    1-4   thumb  MCP (CMC in anatomy), PIP (MCP), DIP (IP), tip
    5-8   index  MCP, PIP, DIP, tip
    9-12  middle MCP, PIP, DIP, tip
    13-16 ring   MCP, PIP, DIP, tip
    17-20 little MCP, PIP, DIP, tip

A source order is converted with ``to_canonical(x, DATASET_TO_CANONICAL[name])``:
``canonical[..., i, :] = source[..., perm[i], :]``; the source orders are those of each dataset's
own README and public loaders (hand3d, TLlib, bihand, the datasets' toolkits).
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 21
FINGERS = ("thumb", "index", "middle", "ring", "little")
_PHALANGES = ("mcp", "pip", "dip", "tip")

JOINT_NAMES: tuple[str, ...] = ("wrist",) + tuple(
    f"{finger}_{part}" for finger in FINGERS for part in _PHALANGES
)

#: Joint indices of each finger, base to tip: FINGER_JOINTS[f] = (mcp, pip, dip, tip).
FINGER_JOINTS: tuple[tuple[int, int, int, int], ...] = tuple(
    tuple(1 + 4 * f + k for k in range(4)) for f in range(5)
)

#: Parent of each joint along the kinematic chain; the wrist is the root (-1).
PARENTS: tuple[int, ...] = (-1,) + tuple(
    0 if k == 0 else 1 + 4 * f + k - 1 for f in range(5) for k in range(4)
)

#: (parent, child) pairs, ordered from the wrist outwards (a parent is always placed first).
BONES: tuple[tuple[int, int], ...] = tuple((PARENTS[j], j) for j in range(1, NUM_JOINTS))

WRIST = 0
#: Root joint for evaluation and for root-relative depth: the middle-finger MCP.
ROOT = 9
#: Reference bone of the scale normalisation: middle MCP -> PIP (the proximal phalanx). It is the
#: bone FreiHAND's `scale` measures, and it is rigid and visible in most views.
REFERENCE_BONE: tuple[int, int] = (9, 10)

#: Joints a source must supply before it is valid: every index map is a permutation of these.
DATASET_TO_CANONICAL: dict[str, tuple[int, ...]] = {
    # RHD per hand: wrist, thumb tip..mcp, index tip..mcp, middle, ring, pinky (tip -> mcp).
    # The right hand is stored at offset 21 in the 42-joint arrays.
    "rhd": (0, 4, 3, 2, 1, 8, 7, 6, 5, 12, 11, 10, 9, 16, 15, 14, 13, 20, 19, 18, 17),
    # STB: palm centre (stands in for the wrist), little, ring, middle, index, thumb (mcp -> tip).
    "stb": (0, 17, 18, 19, 20, 13, 14, 15, 16, 9, 10, 11, 12, 5, 6, 7, 8, 1, 2, 3, 4),
    "freihand": tuple(range(NUM_JOINTS)),
    "h3d": tuple(range(NUM_JOINTS)),
    "dexycb": tuple(range(NUM_JOINTS)),
    # HO-3D: wrist, index/middle/little/ring mcp-pip-dip, thumb mcp-pip-dip-tip, then the four tips.
    "ho3d": (0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20),
    # MVHand: wrist, index, middle, ring, pinky, thumb (mcp -> tip).
    "mvhand": (0, 17, 18, 19, 20, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16),
}


def to_canonical(keypoints: np.ndarray, perm: tuple[int, ...] | np.ndarray) -> np.ndarray:
    """Reorders (..., 21, D) keypoints from a source order to the canonical one."""
    keypoints = np.asarray(keypoints)
    if keypoints.shape[-2] != NUM_JOINTS:
        raise ValueError(
            f"expected {NUM_JOINTS} joints on axis -2, got shape {keypoints.shape}; "
            "select one hand before reordering"
        )
    return keypoints[..., np.asarray(perm), :]


def bone_lengths(pose: np.ndarray) -> np.ndarray:
    """Lengths (..., 20) of the BONES of a (..., 21, 3) pose, in the pose's units."""
    pose = np.asarray(pose)
    parents = np.array([p for p, _ in BONES])
    children = np.array([c for _, c in BONES])
    return np.linalg.norm(pose[..., children, :] - pose[..., parents, :], axis=-1)
