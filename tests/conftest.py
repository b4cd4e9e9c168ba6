"""Shared test set-up: helpers on the path, no persistent XLA cache, XLA's LLVM optimisations
off, the tiny datasets, and xdist's test groups made to work under pytest 9."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# No persistent XLA cache in the tests: two fresh-clone runs of 2026-11-27 crashed (SIGABRT,
# then SIGSEGV) inside JAX's persistent-cache read in this process, the second time with the
# cache kept to this process alone. Every test compiles afresh; the tools' cache is off in the
# tests' subprocesses too.
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
os.environ["HPE_JAX_COMPILE_CACHE"] = "off"

# The tests compile dozens of training programs and run each for a few steps, so XLA's LLVM
# optimisations cost more than they save: JAX's own switch for this (as flax does in its slow
# tests) lowers LLVM to -O0 and skips its expensive passes, here and in the tests' subprocesses.
# Measured 2026-11-28 (2-core Xeon): one fine-tuning-step test 49.8 -> 38.6 s. Set
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 to test the fully optimised programs.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """`--dist loadgroup` for pytest 9: pytest-xdist 3.8 tags a grouped test by writing the
    group into `item._nodeid` ("...::test_x@group"), but pytest 9 reads a node's id from
    `item._id`, so the tag was lost and every grouped test was scheduled on its own (measured
    2026-11-28: the tiny trainings ran on both workers and compiled their steps twice). Runs
    after xdist's hook and copies the tag over; a no-op where xdist already sets the id."""
    if not getattr(config.option, "loadgroup", False):  # set in xdist workers only
        return
    for item in items:
        tagged = getattr(item, "_nodeid", None)
        if tagged and tagged != item.nodeid and hasattr(item, "_id"):
            from _pytest.nodeid import NodeId  # pytest 9's structured ids

            item._id = NodeId.parse(tagged)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """synthetic_hands/source_tiny and target_tiny (64 train / 32 test) built once per session."""
    import tensorflow_datasets as tfds

    import hpe_jax.data  # noqa: F401  (registers synthetic_hands)

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    for config in ("source_tiny", "target_tiny"):
        tfds.builder(f"synthetic_hands/{config}", data_dir=data_dir).download_and_prepare()
    return data_dir
