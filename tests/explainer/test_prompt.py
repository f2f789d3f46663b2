"""The prompt (static rules first, then the verdict and the job's candidates), the
JSONifier prompt and the schema."""

from __future__ import annotations

import re
from typing import Any

from common.artifacts import Taxonomy
from services.explainer.grounding import candidates
from services.explainer.inputs import VerdictInput, evidence_from_document
from services.explainer.prompt import (
    AGAINST_MARK,
    PATTERN_REST,
    PROMPT_VERSION,
    explanation_prompt,
    jsonifier_prompt,
    response_schema,
)
from tests.explainer.conftest import GROUNDED


def prompt_for(
    verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy, answer: str = "json"
) -> str:
    chosen = candidates(verdict, evidence_from_document(document), taxonomy)
    return explanation_prompt(verdict, chosen, answer=answer)


def test_prompt_carries_the_verdict_and_the_candidates_numbers(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    prompt = prompt_for(fake_verdict, document, taxonomy)
    assert PROMPT_VERSION == "explain-v3"
    assert "Verdict: FAKE (AI-generated), probability 0.873" in prompt and "mostly fake" in prompt
    assert (
        "- frequency_domain_signatures: Region 1, upper left, high-frequency energy 0.184 = "
        "2.30x the whole image (0.0801), higher: excess high-frequency energy" in prompt
    )
    assert "- blurred_boundaries_in_fine_details: Region 2, lower right" in prompt
    assert "; supports the verdict." in prompt and "; against the verdict." in prompt
    assert f'start with "{AGAINST_MARK}"' in prompt and "Never invent a number" in prompt
    assert "one JSON object" in prompt
    # only the candidates: not the 70-artifact taxonomy
    assert prompt.count("\n- ") == 4 + 4  # 4 candidates, 4 rules
    assert "texture_repetition_patterns" not in prompt


def test_static_part_comes_first_and_is_the_same_for_every_job(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    """Servers' prefix caches skip what two jobs' prompts share from the start."""
    real = VerdictInput("REAL", 0.004, "mostly real")
    one, two = prompt_for(fake_verdict, document, taxonomy), prompt_for(real, document, taxonomy)
    shared = next(i for i, (a, b) in enumerate(zip(one, two, strict=False)) if a != b)
    assert one[:shared].endswith("Verdict: ")
    assert shared > 0.4 * len(one)


def test_text_prompt_for_the_two_step_flow(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    prompt = prompt_for(fake_verdict, document, taxonomy, answer="text")
    assert "Answer in plain text" in prompt and "JSON" not in prompt


def test_jsonifier_prompt() -> None:
    keys = ["artificial_smoothness", "frequency_domain_signatures"]
    prompt = jsonifier_prompt("artificial_smoothness: region 1 is smooth.", keys)
    assert prompt.startswith("Convert the explanation below into one JSON object")
    assert "region 1 is smooth." in prompt and "Keys: " + ", ".join(keys) in prompt
    assert "JSON object only" in prompt


def test_schema_has_exactly_the_given_keys(taxonomy: Taxonomy) -> None:
    keys = ["artificial_smoothness", "frequency_domain_signatures"]
    schema = response_schema(keys)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert list(schema["properties"]) == keys
    assert all(p == {"type": "string", "minLength": 1} for p in schema["properties"].values())
    assert "required" not in schema  # a candidate the model cannot explain is left out


def test_schema_fixes_how_each_explanation_starts(
    fake_verdict: VerdictInput, document: dict[str, Any], taxonomy: Taxonomy
) -> None:
    chosen = candidates(fake_verdict, evidence_from_document(document), taxonomy)
    schema = response_schema([c.artifact for c in chosen], {c.artifact: c.prefix for c in chosen})
    patterns = {key: p["pattern"] for key, p in schema["properties"].items()}
    assert re.fullmatch(patterns["frequency_domain_signatures"], GROUNDED)
    assert not re.fullmatch(patterns["frequency_domain_signatures"], "Upper left: 2.3x.")
    against = patterns["excessive_sharpness_in_certain_image_regions"]
    assert against.startswith(f"^{AGAINST_MARK} Region 1, upper left: the edge sharpness ")
    assert not re.fullmatch(against, 'Region 1, upper left: the edge sharpness "quoted"')
    # the measurement is part of the prefix: another number does not match
    assert not re.fullmatch(
        patterns["frequency_domain_signatures"], GROUNDED.replace("2.30x", "2.31x")
    )
    # metacharacters match themselves through one-character classes, no backslash ...
    literal = response_schema(["k"], {"k": "Region 1 (upper left) 2.30x. "})["properties"]["k"]
    assert "\\" not in literal["pattern"].removesuffix(PATTERN_REST)
    assert re.fullmatch(literal["pattern"], "Region 1 (upper left) 2.30x. because so")
    assert not re.fullmatch(literal["pattern"], "Region 1 (upper left) 2330x. because so")
    # ... and a prefix with a character no class can hold is left out
    assert "pattern" not in response_schema(["k"], {"k": 'Region "1" '})["properties"]["k"]
