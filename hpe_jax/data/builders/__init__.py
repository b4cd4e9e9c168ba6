"""TFDS builders of the project's hand datasets (importing this registers them)."""

from hpe_jax.data.builders import synthetic_hands  # noqa: F401  (registers the builder)
