r"""`tfds build` for this project's datasets, without the rest of the tfds command line.

    python -m tools.tfds_build synthetic_hands/source_tiny --data_dir=/tmp/tfds
    python -m tools.tfds_build rhd --manual_dir=/path/to/RHD --data_dir=/tmp/tfds

Takes exactly the arguments of `tfds build` (it runs TFDS's own build command). The `tfds`
executable itself also imports its format-conversion and Croissant commands, which need
apache-beam and mlcroissant; those are not in this project's pinned set (apache-beam does not
resolve with protobuf 7), so this entry point imports only the build command. The project's
builders are registered by `import hpe_jax.data`.
"""

from __future__ import annotations

import os
import sys

import simple_parsing
from tensorflow_datasets.scripts.cli import build

import hpe_jax.data  # noqa: F401  (registers the builders)
from hpe_jax.runtime import cli


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    args = simple_parsing.parse(build.Args, args=argv, prog="python -m tools.tfds_build")
    check_names(args.positional_datasets + args.datasets)
    cli.run_plain(args.execute, "tfds_build", verbose)


def check_names(names: list[str]) -> None:
    """Exits with one usage line (at most five close names) when a name is not one of the
    project's datasets (TFDS's own message lists ten, or none, and says '10 match')."""
    from hpe_jax.data import prepare

    for name in names:
        if name and not os.path.exists(name):  # a path: a dataset folder for TFDS itself
            try:
                prepare.check_dataset_name(name, "dataset")
            except cli.UsageError as e:
                cli.fail("tfds_build", str(e))


if __name__ == "__main__":
    main(sys.argv[1:])
