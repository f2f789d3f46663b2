"""The prompts (the report's explainability template, Appendix A.1, and its JSONifier,
Appendix A.2) and the JSON schema the answer is constrained to.

The A.1 template gives the LLM the class, asks it to explain only the applicable
artifacts, for or against the verdict, in at most 50 words each without formatting,
and lists the artifacts. This version adds what the report's pipeline left out: the
calibrated probability and tier, and the Grad-CAM regions with their position and the
statistics measured inside them, so the explanation can be grounded in numbers.

Change anything in the wording and bump :data:`PROMPT_VERSION`: it is stored with
every explanation the LLM writes.
"""

from __future__ import annotations

from typing import Any

from common.artifacts import Taxonomy
from services.explainer.inputs import STATISTIC_MEANINGS, EvidenceInput, RoiInput, VerdictInput

PROMPT_VERSION = "explain-v1"
MAX_WORDS = 50
SCHEMA_NAME = "artifact_explanations"


def number(value: float | None) -> str:
    """A measured value as the prompt and the evidence text show it (4 significant digits)."""
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def describe_region(roi: RoiInput) -> str:
    box = ""
    if roi.box_normalized:
        x0, y0, x1, y1 = roi.box_normalized
        box = f", box x {x0:.2f}-{x1:.2f}, y {y0:.2f}-{y1:.2f} of the image"
    stats = "; ".join(
        f"{s.name} {number(s.value)} ({ratio(s.relative)} the whole image)"
        for s in roi.stats
        if s.value is not None
    )
    return f"Region {roi.rank}: {roi.position}{box}, {percent(roi.heat_share)} of the heat" + (
        f"; {stats}." if stats else "."
    )


def describe_metadata(metadata: dict[str, Any] | None) -> str:
    """Provenance found in the file, or the absence note (absence proves nothing)."""
    if not metadata:
        return "File metadata: not inspected."
    parts = []
    c2pa = metadata.get("c2pa") or {}
    if isinstance(c2pa, dict) and c2pa.get("present"):
        declares = "declares" if c2pa.get("declares_ai_generated") else "does not declare"
        parts.append(
            f"a C2PA manifest (claim generator {c2pa.get('claim_generator') or 'unknown'}) "
            f"that {declares} AI generation"
        )
    traces = [
        t
        for t in metadata.get("generator_traces") or []
        if isinstance(t, dict) and t.get("source") != "error"
    ]
    if traces:
        shown = "; ".join(f"{t.get('source')}: {str(t.get('value'))[:80]}" for t in traces[:3])
        parts.append(f"generator traces ({shown})")
    if parts:
        return "File metadata: " + " and ".join(parts) + "."
    note = metadata.get("note") or (
        "No generator metadata or C2PA manifest was found. This proves nothing."
    )
    return f"File metadata: {note}"


def describe_evidence(evidence: EvidenceInput) -> list[str]:
    if not evidence.available:
        return [
            "Grad-CAM heatmap: unavailable for this image "
            f"({evidence.unavailable_reason or 'not computed'}). "
            "Explain from the verdict alone and do not refer to regions or measurements.",
            describe_metadata(evidence.metadata),
        ]
    lines = [
        "Grad-CAM evidence: the regions that drove the detector's decision, ranked by "
        "their share of the heatmap, with statistics measured on the pixels inside them "
        "(in brackets: the ratio to the same statistic over the whole image)."
    ]
    if evidence.image_stats:
        whole = "; ".join(f"{k} {number(v)}" for k, v in evidence.image_stats.items())
        lines.append(f"Whole image: {whole}.")
    if evidence.rois:
        lines += [describe_region(roi) for roi in evidence.rois]
    else:
        lines.append("No region of the heatmap stood out.")
    if evidence.heat_outside_rois is not None:
        lines.append(f"Heat outside these regions: {percent(evidence.heat_outside_rois)}.")
    meanings = "; ".join(f"{k} = {v}" for k, v in STATISTIC_MEANINGS.items())
    lines.append(f"Statistics: {meanings}.")
    lines.append(describe_metadata(evidence.metadata))
    return lines


def artifact_list(taxonomy: Taxonomy) -> str:
    """The taxonomy as the prompt lists it: by family, ``- key: description``."""
    lines = []
    for family, items in taxonomy.by_family().items():
        lines.append(f"{family.capitalize()} ({taxonomy.families.get(family, family)}):")
        lines += [f"- {a.key}: {a.description}" for a in items]
    return "\n".join(lines)


def explanation_prompt(
    verdict: VerdictInput, evidence: EvidenceInput, taxonomy: Taxonomy, answer: str = "json"
) -> str:
    """The A.1 prompt. ``answer='json'`` asks for the JSON object (constrained decoding),
    ``answer='text'`` for plain text, the first step of the two-step flow."""
    cls = verdict.described
    header = [
        "You are an image forensics expert. A detector has classified an image; "
        "explain the visual artifacts behind its verdict.",
        f"Class: {cls}. Probability that the image is AI-generated: "
        f"{verdict.probability:.3f} (tier: {verdict.tier}).",
        *describe_evidence(evidence),
    ]
    rules = (
        f"Task: explain why the image is classified as {verdict.label_name}. Explain only the "
        "artifacts from the list below that apply to this image, for or against the verdict, "
        f"at most {MAX_WORDS} words each, in plain sentences with no formatting (no markdown, "
        "no lists, no line breaks inside an explanation). Where they are available, refer to "
        "the regions by position and cite the measured numbers; never invent measurements."
    )
    if answer == "json":
        output = (
            "Answer with one JSON object: each key is an artifact key from the list, each value "
            "is its explanation as a string. Leave out the artifacts that do not apply."
        )
    else:
        output = (
            "Answer in plain text: one line per applicable artifact, starting with its key "
            "from the list, a colon, then the explanation."
        )
    return "\n".join(
        [
            *header,
            "",
            rules,
            output,
            "",
            "Artifacts to be considered:",
            artifact_list(taxonomy),
        ]
    )


def jsonifier_prompt(free_text: str, taxonomy: Taxonomy) -> str:
    """The A.2 prompt: convert a free-text explanation to the JSON object."""
    keys = ", ".join(taxonomy.keys)
    return "\n".join(
        [
            "Convert the explanation below into one JSON object. Each key must be one of the "
            f"artifact keys listed below; each value is the explanation of that artifact "
            f"from the text, as a plain string of at most {MAX_WORDS} words with no formatting. "
            "Leave out artifacts the explanation does not mention. Answer with the JSON object "
            "only, nothing before or after it.",
            "",
            f"Artifact keys: {keys}",
            "",
            "Explanation:",
            free_text.strip(),
        ]
    )


def retry_note(error: str) -> str:
    """Appended to the prompt of the one retry after an invalid answer."""
    return (
        "\n\nYour previous answer was rejected: "
        f"{error[:300]}. Answer again and follow the rules exactly."
    )


def response_schema(taxonomy: Taxonomy) -> dict[str, Any]:
    """JSON schema of the answer: taxonomy keys, string values, nothing else.

    No property is required (only the applicable artifacts are explained) and values
    carry no ``maxLength``: the 50-word rule is checked after decoding, where a long
    answer costs one retry, instead of in the grammar, where bounded repetition over
    70 properties makes grammar compilation slow on some servers.
    """
    return {
        "title": SCHEMA_NAME,
        "type": "object",
        "properties": {key: {"type": "string", "minLength": 1} for key in taxonomy.keys},
        "additionalProperties": False,
    }
