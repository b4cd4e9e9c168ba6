"""tools.visualize_data's flag checks: one clear usage error instead of matplotlib's."""

import pytest

from hpe_jax.runtime import cli
from tools import visualize_data


@pytest.mark.parametrize("num, size, styles, words", [
    (0, 128, ["render"], "--num=0"),
    (2, 0, ["render"], "--image_size=0"),
    (2, 128, [], "--styles is empty"),
])
def test_bad_flag_values_are_usage_errors(num, size, styles, words):
    with pytest.raises(cli.UsageError, match=words):
        visualize_data.check_flags(num, size, styles)
    visualize_data.check_flags(1, 32, ["render"])


def test_an_unknown_style_is_a_usage_error(tmp_path):
    with pytest.raises(cli.UsageError, match=r"unknown --styles \['rendr'\]"):
        visualize_data.draw_grid(str(tmp_path / "x.png"), ["rendr"], 1, 16, 0)
