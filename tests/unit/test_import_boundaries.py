"""Layering, read from the source with ``ast`` (nothing is imported): ``common`` never
imports ``services``; the product (``common``, ``services``) never imports the
benchmark package ``bench``, which is not installed with it; and the wheel's package
list leaves ``bench`` out."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module a source file imports, relative imports resolved, at any depth
    (inside functions and ``TYPE_CHECKING`` blocks too)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def imports_of(package: str) -> dict[str, set[str]]:
    result = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        result[module_name(path)] = imported_modules(
            source, module_name(path), path.name == "__init__.py"
        )
    return result


def offenders(package: str, forbidden: str) -> dict[str, list[str]]:
    return {
        module: sorted(n for n in names if n == forbidden or n.startswith(f"{forbidden}."))
        for module, names in imports_of(package).items()
        if any(n == forbidden or n.startswith(f"{forbidden}.") for n in names)
    }


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("import services.worker", "common.x", "services.worker"),
        ("from services import runtime", "common.x", "services.runtime"),
        ("def f():\n    from bench.models import tiny", "services.gateway.app", "bench.models"),
        ("from ..runtime import context", "services.gateway.app", "services.runtime"),
    ],
)
def test_the_walk_finds_every_kind_of_import(source: str, module: str, expected: str) -> None:
    assert expected in imported_modules(source, module)


def test_common_never_imports_services() -> None:
    assert offenders("common", "services") == {}


@pytest.mark.parametrize("package", ["common", "services"])
def test_the_product_never_imports_the_benchmarks(package: str) -> None:
    assert offenders(package, "bench") == {}


def test_the_wheel_leaves_the_benchmarks_out() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(str(ROOT), include=include)
    assert "services.gateway" in packages and "common.detector" in packages
    assert not [p for p in packages if p == "bench" or p.startswith("bench.")]
