"""TFDS builders of the project's hand datasets (importing this registers them)."""

from hpe_jax.data.builders import (  # noqa: F401  (importing a builder module registers it)
    dexycb,
    freihand,
    h3d,
    hand_folder,
    hgc_real,
    ho3d,
    image_folder,
    rhd,
    stb,
    synthetic_hands,
)
