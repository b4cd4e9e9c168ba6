"""tools.measure_hand_score's --real_dir check names its own flag (not the builder's)."""

import pytest

from hpe_jax.runtime import cli
from tools import measure_hand_score


def test_a_real_dir_without_the_sets_files_names_real_dir(tmp_path):
    with pytest.raises(cli.UsageError, match=r"--real_dir=.*nope: no such folder"):
        measure_hand_score.check_real_dir(str(tmp_path / "nope"))
    with pytest.raises(cli.UsageError, match=r"--real_dir=.* lacks images, params.mat, "
                                             r"pose_gt.mat; pass hand-graph-cnn's") as e:
        measure_hand_score.check_real_dir(str(tmp_path))
    assert "--manual_dir" not in str(e.value)
    for name in ("images", "params.mat", "pose_gt.mat"):
        (tmp_path / name).mkdir()
    measure_hand_score.check_real_dir(str(tmp_path))
