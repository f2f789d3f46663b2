"""Validation of an LLM answer: taxonomy keys, at most 50 words, no markdown."""

from __future__ import annotations

import pytest

from common.artifacts import Taxonomy
from services.explainer.validation import (
    InvalidAnswer,
    extract_json_object,
    parse_answer,
    validate_explanations,
)

GOOD = "The upper left region has 2.3x the image's high-frequency energy."


def test_valid_answer_is_normalised(taxonomy: Taxonomy) -> None:
    answer = {
        "texture_repetition_patterns": "  The wall\n repeats   itself. ",
        "frequency_domain_signatures": GOOD,
        "artificial_smoothness": "",  # not applicable: dropped
        "fake_depth_of_field": None,
    }
    result = validate_explanations(answer, taxonomy)
    assert result == {
        "texture_repetition_patterns": "The wall repeats itself.",
        "frequency_domain_signatures": GOOD,
    }
    assert list(result) == [k for k in taxonomy.keys if k in result]  # taxonomy order


def test_unknown_keys_are_refused(taxonomy: Taxonomy) -> None:
    with pytest.raises(InvalidAnswer, match="Texture repetition patterns: not a taxonomy key"):
        validate_explanations({"Texture repetition patterns": GOOD}, taxonomy)


def test_more_than_50_words_is_refused(taxonomy: Taxonomy) -> None:
    validate_explanations({"artificial_smoothness": " ".join(["word"] * 50)}, taxonomy)
    with pytest.raises(InvalidAnswer, match="51 words, more than 50"):
        validate_explanations({"artificial_smoothness": " ".join(["word"] * 51)}, taxonomy)


@pytest.mark.parametrize(
    "text",
    [
        "The **left** region repeats.",
        "The left region __repeats__.",
        "Use `numbers` here.",
        "# Heading\nThe left region.",
        "- first point\n- second point",
        "1. first point",
        "See [the map](http://example.com).",
        "The *left* region repeats.",
        "> quoted",
        "| a | b |\n|---|---|",
    ],
)
def test_markdown_is_refused(taxonomy: Taxonomy, text: str) -> None:
    with pytest.raises(InvalidAnswer, match="markdown"):
        validate_explanations({"artificial_smoothness": text}, taxonomy)


def test_plain_punctuation_is_not_markdown(taxonomy: Taxonomy) -> None:
    text = "Ratio 2*3 is 6 - not 5; the region (upper left) is 2.30x brighter, 41% of heat."
    assert validate_explanations({"artificial_smoothness": text}, taxonomy)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not an object"),
        ("text", "not an object"),
        ({}, "explains no artifact"),
        ({"artificial_smoothness": "   "}, "explains no artifact"),
        ({"artificial_smoothness": 3}, "string"),
        ({"artificial_smoothness": ["a"]}, "string"),
    ],
)
def test_other_invalid_answers(taxonomy: Taxonomy, data: object, message: str) -> None:
    with pytest.raises(InvalidAnswer, match=message):
        validate_explanations(data, taxonomy)


def test_json_is_found_in_free_text(taxonomy: Taxonomy) -> None:
    text = 'Here it is:\n```json\n{"artificial_smoothness": "Too smooth."}\n```'
    assert extract_json_object(text) == {"artificial_smoothness": "Too smooth."}
    assert parse_answer(text, taxonomy) == {"artificial_smoothness": "Too smooth."}
    with pytest.raises(InvalidAnswer, match="no JSON object"):
        parse_answer("no json here", taxonomy)
    with pytest.raises(InvalidAnswer, match="not valid JSON"):
        parse_answer('{"artificial_smoothness": "cut', taxonomy)
