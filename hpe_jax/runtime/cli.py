"""The tools' shared command-line behaviour: one error style, a fast --help, quiet logs.

Every tool in tools/ runs its absl `main` through `run(main, "name")`:

- an error is one line on stderr, `tools.<name>: <what was wrong and what to do>`, with exit
  status 2 for usage errors (a bad or missing flag, config file or config field) and 1 for
  everything else; `--verbose` adds the traceback;
- `--help` (also -h, --helpshort, --helpfull) prints the tool's docstring with its line breaks
  and its flags, and exits 0, before any heavy import: tools import TensorFlow and JAX inside
  `main`, after the flags are parsed;
- logging is quiet unless `--verbose` (`quiet_logging`).

This module imports only absl and the standard library, so that importing it stays instant.
"""

from __future__ import annotations

import argparse
import difflib
import logging as py_logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging

from hpe_jax.runtime.cpu import UsageError, choose_cpu_convolutions

__all__ = ["UsageError", "check_directory", "fail", "quiet_logging", "run", "run_plain",
           "verbose"]

HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")
# Python loggers of libraries that log progress chatter at INFO (each checkpoint save is a dozen
# orbax lines); quiet mode raises them to WARNING.
LIBRARY_LOGGERS = ("orbax", "orbax.checkpoint", "tensorflow", "tensorflow_datasets", "jax",
                   "flax", "clu", "etils", "absl.flags")
# Only INFO records written from these source folders pass the quiet filter (the project's own
# messages: plans, phase switches, progress lines); warnings and errors always pass.
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_OWN_SOURCES = tuple(os.path.join(_REPO, d) + os.sep for d in ("hpe_jax", "tools"))




def fail(tool: str, message: str, status: int = 2) -> NoReturn:
    """Prints `tools.<tool>: message` to stderr and exits with `status`."""
    print(f"tools.{tool}: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def check_directory(flag: str, path: str | None, created: bool = True, *,
                    file: bool = False) -> None:
    """Raises UsageError when the directory flag `--flag=path` names a file or lies under one
    (`file=True`: a file flag whose folder does, or that names a directory), so that a tool
    refuses it at once instead of failing later with a raw '[Errno 17] File exists' (or, for a
    tool that only reads it, 'does not exist'). `created`: the tool creates what is missing."""
    if not path:
        return
    full = os.path.abspath(path)
    if file and os.path.isdir(full):
        raise UsageError(f"--{flag}={path} is a directory; pass a file name")
    where = os.path.dirname(full) if file else full
    while not os.path.exists(where) and os.path.dirname(where) != where:
        where = os.path.dirname(where)
    if os.path.isdir(where):
        return
    hint = "pass a directory" + (" (it is created if missing)" if created else "")
    if where == full:
        raise UsageError(f"--{flag}={path} is a file, not a directory; {hint}")
    raise UsageError(f"--{flag}={path} lies under {where}, which is a file; "
                     + ("pass a path in a directory" if file else hint))


def verbose() -> bool:
    """True when --verbose was given (False before the flags are parsed)."""
    return bool(flags.FLAGS["verbose"].value) if "verbose" in flags.FLAGS else False


#: Library warnings that say nothing a user can act on (a deprecation inside TFDS, orbax
#: opening a checkpoint read-only to evaluate it or waiting a second for its previous
#: asynchronous save, TFDS finding a dataset not yet built before it builds it); quiet mode drops
#: them, --verbose shows them.
LIBRARY_NOISE = re.compile(
    r"FeatureConnector\.dtype. is deprecated|CheckpointManagerOptions\.read_only=True"
    r"|Given directory is read only|Variant folder .* has no dataset_info\.json"
    r"|is not a valid config for the builder|No config specified, defaulting to"
    r"|Waiting for previous save to complete took")


class _LibraryInfoFilter(py_logging.Filter):
    """Drops INFO (and DEBUG) records that do not come from the project's own code, and the
    library warnings of `LIBRARY_NOISE`."""

    def filter(self, record: py_logging.LogRecord) -> bool:
        if record.levelno < py_logging.ERROR and not record.pathname.startswith(_OWN_SOURCES) \
                and LIBRARY_NOISE.search(record.getMessage()):
            return False
        return record.levelno >= py_logging.WARNING or record.pathname.startswith(_OWN_SOURCES)


_FILTER = _LibraryInfoFilter()
_COMPACT = py_logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S")


def quiet_logging(verbose: bool) -> None:
    """Quiet console by default: library INFO off, the project's INFO in a compact format.

    With verbose=False: absl INFO records from libraries (orbax's per-checkpoint lines, clu's
    metric lines and parameter table, TFDS's) are dropped while the project's own INFO lines
    (hpe_jax/, tools/) stay, printed as `HH:MM:SS message`; the Python loggers of
    `LIBRARY_LOGGERS` go to WARNING; TensorFlow's C++ INFO/WARNING lines and tqdm progress bars
    (TFDS's) are switched off through their environment variables, which only work when set
    before TensorFlow is imported, so call this first thing in `main`. Warnings and errors always
    show. verbose=True restores absl's full format and every library's INFO. Idempotent.
    """
    handler = absl_logging.get_absl_handler()
    absl_logger = py_logging.getLogger("absl")
    absl_logging.set_verbosity(absl_logging.INFO)
    if verbose:
        absl_logger.removeFilter(_FILTER)
        handler.removeFilter(_FILTER)
        handler.setFormatter(absl_logging.PythonFormatter())
        for name in LIBRARY_LOGGERS:
            py_logging.getLogger(name).setLevel(py_logging.NOTSET)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TQDM_DISABLE", "1")
    handler.addFilter(_FILTER)
    handler.setFormatter(_COMPACT)
    for name in LIBRARY_LOGGERS:
        py_logging.getLogger(name).setLevel(py_logging.WARNING)
    if "tensorflow_datasets" in sys.modules:  # imported already: its own switch as well
        sys.modules["tensorflow_datasets"].disable_progress_bar()


def _usage(main_module: str) -> str:
    doc = (sys.modules[main_module].__doc__ or "").strip("\n")
    flag_help = flags.FLAGS.module_help(sys.modules[main_module]) if main_module in \
        sys.modules else ""
    own = flags.FLAGS.module_help(__name__)
    parts = [doc, "flags:", flag_help.strip("\n"), own.strip("\n")]
    return "\n\n".join(p for p in parts if p) + "\n"


def _flag_error_message(err: BaseException, argv: Sequence[str]) -> str:
    """One line for a flag or config error; a config-field typo names the field and the fix."""
    text = str(err)
    typo = re.search(r'Did you mean "([A-Za-z0-9_]+)" instead of "([A-Za-z0-9_]+)"', text)
    if typo:
        good, bad = typo.groups()
        given = next((a.split("=")[0][2:] for a in argv
                      if a.startswith("--") and a.split("=")[0].endswith("." + bad)), bad)
        fixed = given[: -len(bad)] + good
        return f"unknown config field {given!r}; did you mean {fixed!r} (--{fixed}=...)?"
    if "Error whilst parsing config file" in text:
        # The config's get_config raised (e.g. a missing or unknown ':arg'): ml_collections wraps
        # the traceback, whose last line is the config's own message.
        last = [line for line in text.splitlines() if line.strip()][-1].strip()
        return re.sub(r"^[A-Za-z_.]*(Error|Exception): ", "", last)
    if "Failed loading config file" in text:
        path = re.search(r"Attempted \[[^\]]*\]:\s*(\S+)", text)
        where = path.group(1) if path else "(see --verbose)"
        reason = re.search(r"\[Errno \d+\] ([^:\n]+)", text)
        return (f"cannot load the config file {where}"
                f"{': ' + reason.group(1).lower() if reason else ''}; pass an existing python "
                "config, e.g. --config=configs/demo.py")
    text = " ".join(text.split())
    unknown = re.search(r"Unknown command line flag '([^']+)'", text)
    if unknown:
        names = [n for n in flags.FLAGS if not n.startswith("help")]
        close = difflib.get_close_matches(unknown.group(1), names, n=1)
        hint = f"; did you mean --{close[0]}?" if close else "; see --help"
        return f"unknown flag --{unknown.group(1)}{hint}"
    return text + " (see --help)"


def _load_configs() -> None:
    """Loads every ml_collections config flag now, so that a missing config file or a mistyped
    field is reported before main's heavy imports (ml_collections loads them lazily)."""
    for name in list(flags.FLAGS):
        flag = flags.FLAGS[name]
        if type(flag).__name__ == "_ConfigFlag":
            flag.value  # noqa: B018  (the load is the point)


def _parser(tool: str) -> Callable[[list[str]], list[str]]:
    def parse(argv: list[str]) -> list[str]:
        if any(a in HELP_FLAGS for a in argv[1:]):
            print(_usage("__main__"), end="")
            sys.exit(0)
        try:
            rest = flags.FLAGS(argv)
            _load_configs()
        except Exception as err:  # noqa: BLE001  (absl, ml_collections and the config's own)
            if "--verbose" in argv:
                traceback.print_exc()
            fail(tool, _flag_error_message(err, argv))
        quiet_logging(verbose())
        return rest
    return parse


def _is_config_error(err: BaseException) -> bool:
    text = str(err)
    return ("Failed loading config file" in text or "could not be loaded" in text
            or "Did you mean" in text)


def run(main: Callable[[list[str]], None], tool: str) -> NoReturn:
    """`absl.app.run(main)` with the project's error style (module docstring).

    `tool` is the name after `tools.` in messages. A `Preempted` stop of the training loop exits
    with status 0 (its checkpoint is saved; re-running resumes). Config files are loaded lazily by
    ml_collections, so a missing config file or a mistyped field may surface inside `main`: both
    still count as usage errors (status 2).
    """
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool("verbose", False, "Show library logs and full tracebacks.",
                          module_name=__name__)

    def wrapped(argv: list[str]) -> None:
        try:
            choose_cpu_convolutions()
            main(argv)
        except KeyboardInterrupt:
            fail(tool, "interrupted", 130)
        except Exception as err:  # noqa: BLE001  (one line per error is the point)
            loop = sys.modules.get("hpe_jax.training.loop")
            if loop is not None and isinstance(err, loop.Preempted):
                absl_logging.warning("%s", err)
                sys.exit(0)
            usage = isinstance(err, (UsageError, flags.Error)) or _is_config_error(err)
            _report(tool, err, 2 if usage else 1)

    app.run(wrapped, flags_parser=_parser(tool))
    sys.exit(0)  # app.run exits itself; this keeps the NoReturn promise for type checkers


def _report(tool: str, err: BaseException, status: int) -> NoReturn:
    if verbose():
        traceback.print_exc()
    text = str(err)
    if _is_config_error(err):
        text = _flag_error_message(err, sys.argv)
    elif isinstance(err, KeyError):
        text = f"missing key {text}"
    text = " ".join(text.split()) or type(err).__name__
    if status != 2 and not verbose():
        text += " (--verbose shows the traceback)"
    fail(tool, text, status)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error line (`tools.<name>: ...`, status 2)."""

    def __init__(self, tool: str, **kwargs):
        super().__init__(**kwargs)
        self._tool = tool

    def error(self, message: str) -> NoReturn:
        fail(self._tool, f"{message} (see --help)")


def argument_parser(tool: str, doc: str | None) -> argparse.ArgumentParser:
    """An argparse parser for the argparse tools: the whole docstring (line breaks kept) as its
    help, `--verbose`, and usage errors as one `tools.<tool>: ...` line with exit status 2."""
    parser = _ArgumentParser(tool, prog=f"python -m tools.{tool}", description=doc,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--verbose", action="store_true",
                        help="show library logs and full tracebacks")
    return parser


def run_plain(main: Callable[[], None], tool: str, verbose: bool) -> None:
    """Runs an argparse tool's body with the one-line error style (status 1, traceback only
    with verbose)."""
    quiet_logging(verbose)
    try:
        choose_cpu_convolutions()
        main()
    except KeyboardInterrupt:
        fail(tool, "interrupted", 130)
    except Exception as err:  # noqa: BLE001  (one line per error is the point)
        if verbose:
            traceback.print_exc()
        text = " ".join(str(err).split()) or type(err).__name__
        fail(tool, text + ("" if verbose else " (--verbose shows the traceback)"), 1)
