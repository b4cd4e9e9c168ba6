"""benchmarks/side_by_side.py: the PyTorch twin's flags come from the config, not by hand."""

import importlib.util
import os
import re

_ROOT = os.path.join(os.path.dirname(__file__), "..")
_spec = importlib.util.spec_from_file_location(
    "side_by_side", os.path.join(_ROOT, "benchmarks", "side_by_side.py"))
side_by_side = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(side_by_side)


def _torch_options() -> set[str]:
    """The options torch_reference.py's parser defines (read from its source: no torch here)."""
    with open(os.path.join(_ROOT, "benchmarks", "torch_reference.py")) as f:
        return set(re.findall(r'add_argument\("(--\w+)"', f.read()))


def test_reproduce_flags_follow_the_config_and_exist_in_the_torch_script():
    config = side_by_side._load_config(os.path.join(_ROOT, "configs", "reproduce.py"))
    flags = side_by_side.torch_flags(config)
    assert "--image_size=64" in flags and "--batch_size=32" in flags
    assert "--no_stem_pool" in flags and "--fused_depth=predicted" in flags
    config.model.stem_pool = True
    config.data.input_size = 96
    flags = side_by_side.torch_flags(config)
    assert "--no_stem_pool" not in flags and "--image_size=96" in flags
    assert {f.split("=")[0] for f in flags} <= _torch_options()
    flags = side_by_side.torch_flags(config, "finetune")
    assert "--phase=finetune" in flags and "--unlabelled_batch_size=16" in flags
    assert "--batch_size=16" in flags and "--ema_decay=0.99" in flags
    assert {f.split("=")[0] for f in flags} <= _torch_options()
