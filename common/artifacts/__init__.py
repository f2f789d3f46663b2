"""The artifact taxonomy explanations are keyed on, as a versioned data file.

``taxonomy-v1.json`` holds the organizers' 70 artifact names in their wording and
order, each with a stable snake_case ``key`` (derived from the name by
:func:`slugify`, so a key never changes while the name does not), a one-line
description and a family used to group the list in the prompt and the dashboard.
A new wording or a new list is a new file (``taxonomy-v2.json``), never an edit:
stored explanations keep pointing at the keys they were written with.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

DEFAULT_VERSION = "v1"
KEY_PATTERN = re.compile(r"^[a-z0-9]+(?:_[a-z0-9]+)*$")
_DATA_DIR = Path(__file__).resolve().parent


def slugify(name: str) -> str:
    """The key rule: lower-case, runs of other characters to one ``_``, trimmed."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@dataclass(frozen=True)
class Artifact:
    key: str
    name: str
    family: str
    description: str


@dataclass(frozen=True)
class Taxonomy:
    version: str
    artifacts: tuple[Artifact, ...]
    families: dict[str, str]

    @cached_property
    def by_key(self) -> dict[str, Artifact]:
        return {a.key: a for a in self.artifacts}

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.artifacts)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.artifacts)

    def __contains__(self, key: object) -> bool:
        return key in self.by_key

    def __len__(self) -> int:
        return len(self.artifacts)

    def by_family(self) -> dict[str, list[Artifact]]:
        """Artifacts grouped by family, families in the file's order."""
        groups: dict[str, list[Artifact]] = {name: [] for name in self.families}
        for artifact in self.artifacts:
            groups.setdefault(artifact.family, []).append(artifact)
        return {name: items for name, items in groups.items() if items}


class TaxonomyError(ValueError):
    """The data file breaks one of the taxonomy's rules."""


def parse_taxonomy(document: dict[str, object]) -> Taxonomy:
    """Build and check a taxonomy from its JSON document."""
    version = str(document.get("version", ""))
    families = document.get("families")
    entries = document.get("artifacts")
    if not isinstance(families, dict) or not isinstance(entries, list):
        raise TaxonomyError("a taxonomy needs 'families' (object) and 'artifacts' (list)")
    artifacts = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise TaxonomyError(f"artifact entry is not an object: {entry!r}")
        artifact = Artifact(
            key=str(entry["key"]),
            name=str(entry["name"]),
            family=str(entry["family"]),
            description=str(entry["description"]),
        )
        if not KEY_PATTERN.match(artifact.key):
            raise TaxonomyError(f"key {artifact.key!r} is not snake_case")
        if artifact.family not in families:
            raise TaxonomyError(f"{artifact.key}: unknown family {artifact.family!r}")
        artifacts.append(artifact)
    keys = [a.key for a in artifacts]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise TaxonomyError(f"duplicate keys: {duplicates}")
    return Taxonomy(version, tuple(artifacts), {str(k): str(v) for k, v in families.items()})


def taxonomy_path(version: str = DEFAULT_VERSION) -> Path:
    return _DATA_DIR / f"taxonomy-{version}.json"


@lru_cache(maxsize=4)
def load_taxonomy(version: str = DEFAULT_VERSION) -> Taxonomy:
    """The taxonomy of one version, read once per process."""
    document = json.loads(taxonomy_path(version).read_text(encoding="utf-8"))
    return parse_taxonomy(document)


__all__ = [
    "DEFAULT_VERSION",
    "Artifact",
    "Taxonomy",
    "TaxonomyError",
    "load_taxonomy",
    "parse_taxonomy",
    "slugify",
    "taxonomy_path",
]
