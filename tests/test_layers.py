"""The package's layers only look down: every hpe_jax import (module level or inside a function)
goes to a lower floor or stays in its own subpackage, and the package top holds only
subpackages, `__init__` and the public `export`."""

import ast
import os

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "hpe_jax")

#: Floor of each subpackage (and of the top-level `export`): imports go to lower floors only.
FLOORS = {"runtime": 0, "hand": 0, "models": 1, "data": 2, "objectives": 2, "training": 3,
          "evaluation": 4, "export": 4, "experiments": 5}


def _imports(path):
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hpe_jax"):
            if node.module == "hpe_jax":
                yield from (a.name for a in node.names)
            else:
                yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            yield from (a.name.split(".")[1] for a in node.names
                        if a.name.startswith("hpe_jax."))


def test_the_package_top_holds_subpackages_only():
    top = sorted(f for f in os.listdir(ROOT) if f.endswith(".py"))
    assert top == ["__init__.py", "export.py"]
    subpackages = {d for d in os.listdir(ROOT) if os.path.isfile(os.path.join(ROOT, d,
                                                                              "__init__.py"))}
    assert subpackages == set(FLOORS) - {"export"}


def test_imports_only_look_down():
    upward = []
    for root, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, ROOT).split(os.sep)
            src = rel[0] if len(rel) > 1 else rel[0][:-3]
            if src == "__init__":
                continue
            for dst in _imports(path):
                if dst != src and FLOORS[dst] >= FLOORS[src]:
                    upward.append(f"{os.path.relpath(path, ROOT)} imports {dst}")
    assert not upward, upward
