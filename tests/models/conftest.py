"""Shared helpers for the model tests.

Real `init` compiles one threefry kernel per parameter shape, which takes tens of seconds on a
loaded 2-core CPU; the tests instead take the variables' shapes from `jax.eval_shape(init)` (the
same code path) and fill them with numpy values of the usual scale.
"""

import jax
import numpy as np
import pytest
from flax import traverse_util


def fill_variables(abstract, seed=0):
    """He-normal kernels, unit BatchNorm scale/var and beta, zero biases/means."""
    rng = np.random.default_rng(seed)
    out = {}
    for collection, tree in abstract.items():
        flat = {}
        for path, leaf in traverse_util.flatten_dict(dict(tree)).items():
            name = path[-1]
            if name == "kernel":
                fan_in = int(np.prod(leaf.shape[:-1]))
                value = rng.normal(size=leaf.shape) * np.sqrt(2.0 / fan_in)
            elif name in ("scale", "var", "beta"):
                value = np.ones(leaf.shape)
            else:
                value = np.zeros(leaf.shape)
            flat[path] = np.asarray(value, leaf.dtype)
        out[collection] = traverse_util.unflatten_dict(flat)
    return out


def abstract_init(model, *args, **kwargs):
    """The shapes/dtypes `model.init` would give, without running it."""
    return jax.eval_shape(lambda *a: model.init({"params": jax.random.PRNGKey(0)}, *a, **kwargs),
                          *args)


@pytest.fixture(name="fill_variables", scope="session")
def _fill_variables_fixture():
    return fill_variables


@pytest.fixture(name="abstract_init", scope="session")
def _abstract_init_fixture():
    return abstract_init
