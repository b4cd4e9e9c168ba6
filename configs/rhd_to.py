"""RHD -> a real target dataset: the paper's settings (configs/default.py) on real data.

    python -m tools.train --config=configs/rhd_to.py:stb --workdir=runs/rhd_to_stb \
        --config.data.data_dir=/data/tfds --config.model.init_from=/data/resnet101.npz

The text after ':' names the target: stb (STB: SK colour, B1 for testing, the other ten
sequences unlabelled), freihand (TLlib's split; 15,000 fine-tuning images, STB's size), h3d (the
one-handed subset, TLlib's split), mvhand (MVHand converted to hand_folder; 15,000 images).

Build the datasets first (tools/tfds_build.py, --manual_dir at the official download) and the
ImageNet .npz (tools/convert_torchvision.py; training refuses to start without it unless
--config.model.init_from=scratch); docs/usage.md, "Real datasets". The rest is configs/default.py
(ResNet-101, 256 -> 64 px, batch 140 x 60 epochs, 6 fine-tuning epochs), rho's template from RHD.
Expected result: the paper's own tables for these pairs; no run is recorded in docs/results.md.
"""

from __future__ import annotations

import ml_collections

from configs import default

#: target name (after ':') -> (data.target TFDS name, data.target_split).
TARGETS: dict[str, tuple[str, str]] = {
    "stb": ("stb/palm", "train"),
    "freihand": ("freihand/tllib", "train[:15000]"),
    "h3d": ("h3d", "train"),
    "mvhand": ("hand_folder", "train[:15000]"),
}


def get_config(target: str | None = None) -> ml_collections.ConfigDict:
    """The RHD -> `target` config; `target` is one of `TARGETS` (--config=configs/rhd_to.py:stb)."""
    valid = ", ".join(TARGETS)
    if not target:
        raise ValueError(f"configs/rhd_to.py needs a target after ':', one of {valid} "
                         "(e.g. --config=configs/rhd_to.py:stb)")
    if target not in TARGETS:
        raise ValueError(f"configs/rhd_to.py: unknown target {target!r}; one of {valid} "
                         "(e.g. --config=configs/rhd_to.py:stb)")
    c = default.get_config()
    c.model.init_from = "imagenet"  # the paper starts from ImageNet: refused at start-up with
                                    # how to get them, until a converted file or "scratch"
    c.data.source = "rhd"
    c.data.target, c.data.target_split = TARGETS[target]
    c.data.eval_split = "test"
    # rho's bone lengths from the real source's own hands (RHD's mean), not the synthetic
    # sampler's hand: the choice the docs give for RHD and real sources.
    c.loss.template = "source_mean"
    return c
