"""pyproject.toml declares what the code imports, and nothing it does not."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import loyalty_model as lm

SRC = Path(lm.__file__).parent


def _declared_and_imported() -> tuple[set[str], dict[str, set[str]]]:
    """Distributions pyproject declares (the core and the extras but dev); for each
    third-party module src/ imports, the distributions that provide it."""
    import re
    import tomllib
    from importlib.metadata import packages_distributions

    pyproject = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text())
    project = pyproject["project"]
    # the core and the extras the code imports lazily (spark); dev holds tools, not imports
    optional = project["optional-dependencies"]
    extras = [d for name, ds in optional.items() if name != "dev" for d in ds]
    declared = {
        re.split(r"[<>=!\[ ;]", d, maxsplit=1)[0].lower()
        for d in [*project["dependencies"], *extras]
    }
    top: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                top |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top.add(node.module.split(".")[0])
    dists = packages_distributions()
    third_party = top - set(sys.stdlib_module_names) - {"loyalty_model"}
    return declared, {m: {d.lower() for d in dists.get(m, [m])} for m in third_party}


def test_every_imported_package_is_declared_and_every_declared_one_used():
    declared, imported = _declared_and_imported()
    undeclared = sorted(m for m, provided_by in imported.items() if not provided_by & declared)
    assert undeclared == [], "imported but not declared in pyproject.toml"
    used = set().union(*imported.values())
    assert sorted(declared - used) == [], "declared in pyproject.toml but never imported"
