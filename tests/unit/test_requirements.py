"""The deployed functions install only requirements.txt: every library they import must come from it."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from shared.emulator_config import REPO_ROOT

DEPLOYED = ("shared", "functions")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(path: Path) -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return {_canonical(Requirement(line).name) for line in lines if line and not line.startswith("-")}


def _installed_by(names: set[str]) -> set[str]:
    """The distributions that installing `names` brings in (their dependencies, without extras)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_canonical(requirement.name))
    return seen


def _imported_modules() -> dict[str, str]:
    """Third-party package -> the first deployed file that imports it."""
    modules: dict[str, str] = {}
    for package in DEPLOYED:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    # `from google.cloud import firestore`: the namespace's member is the package.
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in DEPLOYED:
                        modules.setdefault(_package(name), str(path.relative_to(REPO_ROOT)))
    return modules


def _package(name: str) -> str:
    """The outermost regular package of a dotted name (`google.genai.types` is `google.genai`)."""
    parts = name.split(".")
    for depth in range(1, len(parts)):
        spec = importlib.util.find_spec(".".join(parts[:depth]))
        if spec is None or spec.origin not in (None, "namespace"):
            return ".".join(parts[:depth])
    return name


def _owner(package: str) -> str | None:
    """The installed distribution that holds the package's files."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin).resolve()
    for name in metadata.packages_distributions().get(package.split(".")[0], []):
        dist = metadata.distribution(name)
        if any(Path(str(dist.locate_file(file))).resolve() == origin for file in dist.files or []):
            return _canonical(name)
    return None


def test_every_library_the_functions_import_is_installed_by_requirements_txt() -> None:
    provided = _installed_by(_pinned(REPO_ROOT / "requirements.txt"))
    missing = {
        module: f"{importer} (from {owner or 'no installed distribution'})"
        for module, importer in _imported_modules().items()
        if (owner := _owner(module)) not in provided
    }

    assert not missing, f"imported by deployed code but not installed by requirements.txt: {missing}"
