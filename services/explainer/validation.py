"""Checking an LLM answer: JSON object, taxonomy keys only, short plain-text values.

The rules (pydantic): every key is a taxonomy key (unknown keys are refused, not
dropped: an LLM inventing keys is not following the prompt), every value is a string
of at most 50 words without markdown. Whitespace is collapsed; an empty value means
"not applicable" and is dropped; an answer that explains nothing is refused.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, create_model

from common.artifacts import Taxonomy
from services.explainer.prompt import MAX_WORDS

#: Markdown that "no formatting" rules out: emphasis, code, headings, list markers at a
#: line start, links, block quotes, table rules.
MARKDOWN = re.compile(
    r"\*\*|__|`|~~"
    r"|(?<![\w*])\*[^*\s][^*]*\*(?![\w*])"
    r"|^\s*#{1,6}\s"
    r"|^\s*(?:[-*+•]|\d+[.)])\s"
    r"|\[[^\]]+\]\([^)]*\)"
    r"|^\s*>"
    r"|\|\s*:?-{3,}",
    re.MULTILINE,
)


class InvalidAnswer(ValueError):
    """The LLM's answer is not a valid explanation object."""


def check_text(value: str) -> str:
    if MARKDOWN.search(value):
        raise ValueError("contains markdown formatting")
    text = " ".join(value.split())
    words = len(text.split())
    if words > MAX_WORDS:
        raise ValueError(f"has {words} words, more than {MAX_WORDS}")
    return text


ExplanationText = Annotated[str, AfterValidator(check_text)]


@lru_cache(maxsize=4)
def _model_for(keys: tuple[str, ...]) -> type[BaseModel]:
    fields: dict[str, Any] = {key: (ExplanationText | None, None) for key in keys}
    return create_model(
        "ArtifactExplanations",
        __config__=ConfigDict(extra="forbid", strict=True),
        **fields,
    )


def explanation_model(taxonomy: Taxonomy) -> type[BaseModel]:
    """The pydantic model of an answer for this taxonomy (one optional field per key)."""
    return _model_for(taxonomy.keys)


def _summarise(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "answer"
        message = "not a taxonomy key" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"{where}: {message}")
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def validate_explanations(data: object, taxonomy: Taxonomy) -> dict[str, str]:
    """The artifact explanations in ``data``, checked; :class:`InvalidAnswer` otherwise."""
    if not isinstance(data, dict):
        raise InvalidAnswer(f"the answer is a JSON {type(data).__name__}, not an object")
    try:
        model = explanation_model(taxonomy).model_validate(data)
    except ValidationError as exc:
        raise InvalidAnswer(_summarise(exc)) from None
    artifacts = {key: value for key, value in model.model_dump(exclude_none=True).items() if value}
    if not artifacts:
        raise InvalidAnswer("the answer explains no artifact")
    return {key: artifacts[key] for key in taxonomy.keys if key in artifacts}


def extract_json_object(text: str) -> object:
    """The JSON value in an answer: the whole text, else its first ``{...}`` block.

    Free text (the JSONifier's answer) may wrap the object in a sentence or a code
    fence; constrained output is the object itself.
    """
    stripped = text.strip()
    try:  # strict=False: a line break inside a string is whitespace, collapsed later
        return json.loads(stripped, strict=False)
    except json.JSONDecodeError:
        pass
    start = stripped.find("{")
    if start < 0:
        raise InvalidAnswer("the answer contains no JSON object")
    try:
        value, _ = json.JSONDecoder(strict=False).raw_decode(stripped[start:])
    except json.JSONDecodeError as exc:
        raise InvalidAnswer(f"the answer is not valid JSON ({exc.msg} at {exc.pos})") from None
    return value


def parse_answer(text: str, taxonomy: Taxonomy) -> dict[str, str]:
    return validate_explanations(extract_json_object(text), taxonomy)
