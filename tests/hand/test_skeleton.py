import numpy as np
import pytest

from hpe_jax.hand import skeleton as sk


def test_order_and_parents():
    assert sk.NUM_JOINTS == 21 == len(sk.JOINT_NAMES) == len(sk.PARENTS)
    assert sk.JOINT_NAMES[0] == "wrist" and sk.JOINT_NAMES[4] == "thumb_tip"
    assert sk.JOINT_NAMES[sk.ROOT] == "middle_mcp"
    assert sk.PARENTS[0] == -1
    # Each finger hangs off the wrist and runs base -> tip.
    for mcp, pip, dip, tip in sk.FINGER_JOINTS:
        assert (sk.PARENTS[mcp], sk.PARENTS[pip], sk.PARENTS[dip], sk.PARENTS[tip]) == (
            0, mcp, pip, dip)
    assert len(sk.BONES) == 20
    placed = {0}
    for parent, child in sk.BONES:
        assert parent in placed
        placed.add(child)


@pytest.mark.parametrize("name", sorted(sk.DATASET_TO_CANONICAL))
def test_index_maps_are_permutations(name):
    perm = sk.DATASET_TO_CANONICAL[name]
    assert sorted(perm) == list(range(21)), name


def test_rhd_map_puts_tips_last():
    # RHD stores each finger tip -> mcp after the wrist; canonical is mcp -> tip.
    rhd = np.arange(21)[:, None] * np.ones((1, 2))
    canon = sk.to_canonical(rhd, sk.DATASET_TO_CANONICAL["rhd"])
    assert canon[1, 0] == 4 and canon[4, 0] == 1  # thumb mcp is RHD 4, thumb tip RHD 1
    assert canon[20, 0] == 17


def test_to_canonical_rejects_two_hands():
    with pytest.raises(ValueError, match="select one hand"):
        sk.to_canonical(np.zeros((42, 3)), sk.DATASET_TO_CANONICAL["rhd"])
