"""Builds the datasets a config names that need no download: the rendered `synthetic_hands` and
the targets built from a local folder (`image_folder`: your photos; `hgc_real`: real photographs
in hand-graph-cnn's layout), from `config.data.image_folder`."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import json
import os

import ml_collections
from absl import logging

from hpe_jax.runtime.cpu import UsageError


class FolderMissing(UsageError, FileNotFoundError):
    """The photo folder a folder-built target needs is unset, missing or lacks its layout's
    files (a usage error: exit status 2)."""


class BadDataConfig(UsageError, ValueError):
    """An unknown dataset name, or too few photos for one batch (a usage error)."""

#: Targets built from the folder `config.data.image_folder` names, and the files that folder
#: must hold (checked before anything is rendered).
FOLDER_TARGETS = {"image_folder": (), "hgc_real": ("images", "params.mat", "pose_gt.mat")}
_FINGERPRINT = "built_from.json"  # beside the built dataset: the folder and its files' stamp
_MAX_LISTED = 20000


def folder_fingerprint(folder: str) -> str:
    """A stamp of the folder's files (relative path, size, mtime): changes when a file does."""
    h = hashlib.sha256()
    n = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            rel = os.path.relpath(os.path.join(root, name), folder)
            h.update(f"{rel}\0{st.st_size}\0{int(st.st_mtime)}\n".encode())
            n += 1
            if n > _MAX_LISTED:  # a huge folder: its first files stand for it
                return h.hexdigest()
    return h.hexdigest()


def check_folder(name: str, folder: str, min_photos: int = 1) -> None:
    """One clear error before any work when a folder-built target cannot be built from `folder`.

    Raises FileNotFoundError (no folder, or the layout's files missing) or ValueError (fewer
    photos than `min_photos`, e.g. one batch)."""
    flag = "--config.data.image_folder"
    if not folder:
        raise FolderMissing(f"dataset {name!r} is built from a folder: pass it as {flag}=DIR")
    if not os.path.isdir(folder):
        raise FolderMissing(f"{flag}={folder}: no such folder")
    missing = [f for f in FOLDER_TARGETS[name] if not os.path.exists(os.path.join(folder, f))]
    if missing:
        from hpe_jax.data.builders import hgc_real

        hint = hgc_real.INSTRUCTIONS.splitlines()[1] if name == "hgc_real" else ""
        raise FolderMissing(f"{flag}={folder} lacks {', '.join(missing)}; {name} needs its "
                                f"own layout ({hint.strip()})")
    from hpe_jax.data.builders.image_folder import IMAGE_SUFFIXES

    photos = sum(1 for _, _, files in os.walk(folder) for f in files
                 if f.lower().endswith(IMAGE_SUFFIXES))
    if photos < min_photos:
        raise BadDataConfig(f"{flag}={folder} holds {photos} .jpg/.jpeg/.png photo(s); "
                         f"adaptation needs at least {min_photos} (one batch)")


def prepare_folder_target(name: str, folder: str, data_dir: str | None) -> None:
    """Builds `name` from `folder` into data_dir, or rebuilds it when the folder it was built
    from differs (another folder, or a file added, removed or changed)."""
    import tensorflow_datasets as tfds

    import hpe_jax.data  # noqa: F401  (registers the builders)

    builder = tfds.builder(name, data_dir=data_dir)
    stamp_path = os.path.join(os.path.dirname(builder.data_dir), _FINGERPRINT)
    if builder.is_prepared() and not folder:
        return  # built earlier; no folder named, so nothing to compare
    stamp = {"folder": os.path.abspath(folder), "files": folder_fingerprint(folder)}
    if builder.is_prepared():
        try:
            with open(stamp_path) as f:
                if json.load(f) == stamp:
                    return
        except (OSError, ValueError):
            pass
        logging.warning("%s in %s was built from another folder or older files: rebuilding "
                        "it from %s", name, builder.data_dir, folder)
        import shutil

        shutil.rmtree(builder.data_dir)
        builder = tfds.builder(name, data_dir=data_dir)
    logging.warning("Building %s from %s (once)", name, folder)
    build(builder, download_config=tfds.download.DownloadConfig(manual_dir=str(folder)))
    with open(stamp_path, "w") as f:
        json.dump(stamp, f)


def dataset_names() -> list[str]:
    """Every dataset name the project's builders give: `name` and `name/config` for each."""
    import tensorflow_datasets as tfds

    from hpe_jax.data import builders

    names = []
    for module in vars(builders).values():
        for obj in vars(module).values() if hasattr(module, "__file__") else ():
            if isinstance(obj, type) and issubclass(obj, tfds.core.DatasetBuilder) \
                    and obj.__module__ == module.__name__:
                names.append(obj.name)
                names += [f"{obj.name}/{c.name}" for c in (obj.BUILDER_CONFIGS or ())]
    return sorted(set(names))


def check_dataset_name(name: str, what: str, known: list[str] | None = None) -> None:
    """Refuses a dataset name the project's builders do not give, in one line with at most five
    close names (`what`: how the user gave it, e.g. '--config.data.source' or '--dataset')."""
    known = dataset_names() if known is None else known
    if name.split(":")[0] in known:  # a ":version" suffix is TFDS's
        return
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else \
        f"the project's datasets: {', '.join(n for n in known if '/' not in n)}"
    raise BadDataConfig(f"{what}={name!r} is not a dataset of this project; {hint}")


def check_dataset_names(config: ml_collections.ConfigDict) -> None:
    """Refuses an unknown data.source / data.target in one line with at most five close names,
    before anything is rendered or built."""
    known = dataset_names()
    for field in ("source", "target"):
        check_dataset_name(config.data[field], f"--config.data.{field}", known)


def build(builder, **kwargs) -> None:
    """`builder.download_and_prepare(**kwargs)` without TFDS's own "Downloading and preparing
    ... Unknown size" prints (the project logs what it builds, and the renderer its progress)."""
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(**kwargs)
    logging.warning("Built %s", builder.data_dir)


def prepare_datasets(config: ml_collections.ConfigDict) -> None:
    """Builds (once) the datasets the config names that need no download.

    A folder-built target is checked first (one clear error before the source is rendered),
    then built or rebuilt (`prepare_folder_target`); `synthetic_hands` is rendered with
    parallel workers. Other real datasets are built by the user with tools/tfds_build.py from
    their own download (the pipeline says so if one is missing).
    """
    import tensorflow_datasets as tfds

    import hpe_jax.data  # noqa: F401  (registers the builders)

    check_dataset_names(config)
    data_dir = config.data.data_dir or None
    target = config.data.target.split("/")[0]
    if target in FOLDER_TARGETS:
        folder = config.data.image_folder
        if folder or not tfds.builder(config.data.target, data_dir=data_dir).is_prepared():
            check_folder(target, folder, min_photos=int(config.finetune.unlabelled_batch_size))
            prepare_folder_target(config.data.target, folder, data_dir)
    os.environ.setdefault("HPE_JAX_RENDER_WORKERS", str(os.cpu_count() or 1))
    for name in (config.data.source, config.data.target):
        if not name.startswith("synthetic_hands"):
            continue
        builder = tfds.builder(name, data_dir=data_dir)
        if not builder.is_prepared():
            logging.warning("Rendering %s into %s (once)", name, builder.data_dir)
            build(builder)
