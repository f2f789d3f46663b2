"""The artifact taxonomy: the organizers' list, stable snake_case keys, families."""

from __future__ import annotations

import json

import pytest

from common.artifacts import (
    KEY_PATTERN,
    TaxonomyError,
    load_taxonomy,
    parse_taxonomy,
    slugify,
    taxonomy_path,
)
from tests.conftest import SHARED


def organizers_names() -> list[str]:
    path = SHARED / "artifacts.txt"
    if not path.exists():
        reason = f"{path} is absent (a fresh clone has no ../shared); cannot compare the list"
        print(reason)
        pytest.skip(reason)
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_matches_the_organizers_list() -> None:
    names = organizers_names()
    taxonomy = load_taxonomy()
    assert len(names) == 70
    assert list(taxonomy.names) == names  # same wording, same order


def test_keys_are_unique_snake_case_and_derived_from_names() -> None:
    taxonomy = load_taxonomy()
    assert len(taxonomy) == 70
    assert len(set(taxonomy.keys)) == len(taxonomy.keys)
    for artifact in taxonomy.artifacts:
        assert KEY_PATTERN.match(artifact.key), artifact.key
        assert artifact.key == slugify(artifact.name)
    assert "texture_repetition_patterns" in taxonomy
    assert (
        taxonomy.by_key["ghosting_effects_semi_transparent_duplicates_of_elements"].name
        == "Ghosting effects: Semi-transparent duplicates of elements"
    )


def test_descriptions_and_families() -> None:
    taxonomy = load_taxonomy()
    assert taxonomy.version == "taxonomy-v1"
    for artifact in taxonomy.artifacts:
        assert artifact.description and "\n" not in artifact.description
        assert len(artifact.description) <= 120
        assert artifact.family in taxonomy.families
    groups = taxonomy.by_family()
    assert sum(len(items) for items in groups.values()) == 70
    assert all(items for items in groups.values())


def test_file_is_versioned_json() -> None:
    path = taxonomy_path("v1")
    assert path.name == "taxonomy-v1.json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["version"] == "taxonomy-v1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["artifacts"][1].update(key=d["artifacts"][0]["key"]), "duplicate"),
        (lambda d: d["artifacts"][0].update(key="Bad Key"), "snake_case"),
        (lambda d: d["artifacts"][0].update(family="nowhere"), "unknown family"),
    ],
)
def test_broken_files_are_refused(change, message) -> None:
    document = json.loads(taxonomy_path("v1").read_text(encoding="utf-8"))
    change(document)
    with pytest.raises(TaxonomyError, match=message):
        parse_taxonomy(document)
