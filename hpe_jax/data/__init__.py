"""Hand datasets, the procedural renderer and the tf.data input pipeline.

Importing this package registers the project's TFDS builders (e.g. `synthetic_hands`).
"""

from hpe_jax.data import builders  # noqa: F401  (registers the TFDS builders)
