"""The ablation rows' config overrides: dotted fields set on a copy, misspellings refused."""

import pytest
from helpers import tiny_config

from hpe_jax.experiments import ablation


def test_row_fields_are_set_on_a_copy_and_a_misspelt_field_is_refused():
    config = tiny_config()
    row = ablation._with_fields(config, {"loss.use_depth": False, "finetune.epochs": 0})
    assert row.loss.use_depth is False and row.finetune.epochs == 0
    assert config.loss.use_depth is True and config.finetune.epochs != 0
    assert not row.is_locked  # later stages may still add derived fields
    with pytest.raises(KeyError):
        ablation._with_fields(config, {"loss.lamda_c": 1.0})
    # Every row of the tables names real fields.
    for _, fields in ablation.TABLE3 + ablation.TABLE4 + ablation.TABLE4_FINETUNE:
        ablation._with_fields(config, fields or {})
