"""The hand score's measurement: AUROC, the negative sets, and the shipped network's score on the
real val photos where ../shared/data/hgc_real is present."""

import os

import numpy as np
import pytest
from hgc_fixture import REAL_DIR

from hpe_jax.data import styles
from hpe_jax.evaluation import hand_score as hs

ROOT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_auroc_counts_pairs_and_half_ties():
    assert hs.auroc([3, 4], [1, 2]) == 1.0
    assert hs.auroc([1, 2], [3, 4]) == 0.0
    assert hs.auroc([1, 3], [2, 2]) == 0.5
    assert hs.auroc([2], [2]) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        hs.auroc([], [1])


def test_background_crops_stay_off_the_hand():
    image = np.zeros((1, 100, 100, 3), np.uint8)
    image[0, 63:, 63:] = 255  # the "hand" bottom right, keypoints there
    uv = np.random.default_rng(0).uniform(63, 98, (1, 21, 2))
    crops = hs.background_crops(image, uv, 16, margin=0.0, min_side=20)
    assert crops.shape == (1, 16, 16, 3) and crops.max() == 0  # the top-left window, no hand
    assert len(hs.background_crops(image, uv, 16, margin=0.0, min_side=80)) == 0


def test_negative_sets_have_their_shapes():
    assert hs.flat_images(3, 8).shape == (3, 8, 8, 3)
    noise = hs.noise_images(4, 8)
    assert noise.shape == (4, 8, 8, 3) and noise.dtype == np.uint8
    backs = hs.render_backgrounds(styles.RANDOMIZED, 2, 16)
    assert backs.shape == (2, 16, 16, 3) and backs.std() > 0


@pytest.mark.skipif(not os.path.isdir(REAL_DIR), reason="../shared/data/hgc_real is absent")
def test_the_shipped_networks_hand_score_tells_real_hands_apart():
    from tools.measure_hand_score import measure

    result = measure(os.path.join(ROOT_DIR, "assets", "demo_pretrained"), REAL_DIR, 40)
    assert result["counts"]["background_crops"] >= 50
    assert result["auroc"]["hand_score"]["all"] >= 0.95, result["auroc"]["hand_score"]
