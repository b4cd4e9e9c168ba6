"""hpe_jax.data.prepare's checks: bad dataset names and photo folders are usage errors (exit
status 2 through the tools), in one line with at most five suggestions."""

import pytest

from hpe_jax.data import prepare
from hpe_jax.runtime.cpu import UsageError


def test_an_unknown_dataset_name_is_a_usage_error_with_at_most_five_close_names():
    with pytest.raises(UsageError, match=r"--dataset='synthetic_hands/targte_tiny' is not a "
                                         r"dataset of this project; did you mean") as e:
        prepare.check_dataset_name("synthetic_hands/targte_tiny", "--dataset")
    assert "synthetic_hands/target_tiny" in str(e.value)
    assert str(e.value).count("synthetic_hands/") <= 6  # the name itself and five suggestions
    assert isinstance(e.value, ValueError)  # what callers caught before
    prepare.check_dataset_name("synthetic_hands/target_tiny", "--dataset")
    prepare.check_dataset_name("synthetic_hands/target_tiny:1.2.0", "--dataset")


def test_a_bad_photo_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="pass it as --config.data.image_folder=DIR"):
        prepare.check_folder("image_folder", "")
    with pytest.raises(UsageError, match="no such folder"):
        prepare.check_folder("image_folder", str(tmp_path / "nope"))
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(UsageError, match="holds 1 .* at least 16"):
        prepare.check_folder("image_folder", str(tmp_path), min_photos=16)
