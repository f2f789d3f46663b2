"""The prompts (after the report's explainability template, Appendix A.1, and its
JSONifier, Appendix A.2) and the JSON schema the answer is constrained to.

The A.1 template gave the class, asked for the applicable artifacts, for or against
the verdict, at most 50 words each without formatting, and listed all 70 artifacts
(a prompt that took most of the stage's time on a CPU; docs/explanations.md has its size).
This version sends only the job's *candidates* (:mod:`.grounding`): the artifacts
the measurements bear on, each with its region, the statistic, its ratio to the whole
image and what that means, and whether it supports the verdict. Each explanation
must name its region or measurement; the claims are checked after decoding.

The prompt starts with its static part (the role, the rules, the answer format: the
same bytes for every job of a flow), then the verdict and the candidates, and a
retry appends its note at the end, so the prefix caches of llama.cpp, TGI and vLLM
skip the static part's prompt processing after the first job.

Change anything in the wording and bump :data:`PROMPT_VERSION`: it is stored with
every explanation the LLM writes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from services.explainer.inputs import VerdictInput

if TYPE_CHECKING:
    from services.explainer.grounding import Candidate

PROMPT_VERSION = "explain-v3"
AGAINST_MARK = "Against the verdict:"
MAX_WORDS = 50
SCHEMA_NAME = "artifact_explanations"
#: Characters a prefix cannot hold in a ``pattern`` (a backslash escape crashed
#: llama.cpp's server); the other regex metacharacters become one-character classes.
UNPATTERNABLE = re.compile(r'[\\^\[\]"]')
CLASS_ESCAPED = frozenset(".$|?*+(){}/")
#: After the prefix: any text without a quote or a backslash, to the end.
PATTERN_REST = '[^"\\\\]*$'


def number(value: float | None) -> str:
    """A measured value as the prompt and the evidence text show it (4 significant digits)."""
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


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


STATIC_RULES = (
    "You are an image forensics expert explaining a detector's verdict on an image.",
    "Each candidate artifact below comes with a statistic measured in a Grad-CAM region "
    "(a part of the image that drove the verdict), compared with the whole image.",
    "Rules:",
    "- Explain only the candidates, under their keys; leave out any you cannot explain.",
    "- Start with the candidate's region and measurement exactly as given, then say in "
    "one sentence what that measurement means for the verdict. Speak only of that "
    "candidate's statistic. Never invent a number.",
    f'- For a candidate marked "against the verdict", start with "{AGAINST_MARK}".',
    f"- At most {MAX_WORDS} words each, plain sentences, no markdown.",
)
OUTPUT = {
    "json": "Answer with one JSON object: candidate key to explanation.",
    "text": "Answer in plain text: one line per candidate: its key, a colon, the explanation.",
}


def describe_candidate(candidate: Candidate) -> str:
    """One candidate as the prompt shows it: the numbers a claim may cite."""
    roi = candidate.roi
    whole = f" ({number(candidate.whole)})" if candidate.whole is not None else ""
    stance = "supports the verdict" if candidate.supports_verdict else "against the verdict"
    return (
        f"- {candidate.artifact}: Region {roi.rank}, {roi.position}, {candidate.label} "
        f"{number(candidate.value)} = {ratio(candidate.relative)} the whole image{whole}, "
        f"{candidate.measured}: {candidate.meaning}; {stance}."
    )


def explanation_prompt(
    verdict: VerdictInput, chosen: Sequence[Candidate], answer: str = "json"
) -> str:
    """The prompt: the static rules and answer format, then this job's verdict and
    candidates. ``answer='json'`` asks for the JSON object (constrained decoding),
    ``answer='text'`` for plain text, the first step of the two-step flow."""
    return "\n".join(
        [
            *STATIC_RULES,
            OUTPUT[answer],
            "",
            f"Verdict: {verdict.described}, probability {verdict.probability:.3f} that the "
            f"image is AI-generated ({verdict.tier}).",
            "Candidates:",
            *(describe_candidate(c) for c in chosen),
        ]
    )


def jsonifier_prompt(free_text: str, keys: Iterable[str]) -> str:
    """The A.2 prompt: convert a free-text explanation to the JSON object."""
    return "\n".join(
        [
            "Convert the explanation below into one JSON object. Each key must be one of the "
            "keys listed below; each value is the explanation of that key from the text, as a "
            f"plain string of at most {MAX_WORDS} words with no formatting. Leave out keys the "
            "explanation does not mention. Answer with the JSON object only, nothing before "
            "or after it.",
            "",
            f"Keys: {', '.join(keys)}",
            "",
            "Explanation:",
            free_text.strip(),
        ]
    )


def retry_note(error: str) -> str:
    """Appended to the prompt of the one retry (after the candidates: the cached prefix
    stays the same)."""
    return (
        "\n\nYour previous answer was rejected: "
        f"{error[:400]}. Answer again and follow the rules exactly."
    )


def response_schema(
    keys: Iterable[str], prefixes: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """JSON schema of the answer: the given keys (the job's candidates), string values,
    nothing else; where ``prefixes`` gives one, the value must start with it.

    The prefix (region, statistic and measurement, see ``Candidate.prefix``) is a
    ``pattern``: TGI, vLLM and llama.cpp compile it into their grammar, so a
    constrained answer states its facts by construction. Metacharacters are matched as
    one-character classes (``[.]``), never with a backslash (llama.cpp's server crashed
    on ``\\ `` escapes here); a prefix with a character no class can hold is left out.
    The rest of the value excludes quotes and backslashes.

    No property is required (a candidate the model cannot explain is left out) and
    values carry no ``maxLength``: the 50-word rule is checked after decoding, where a
    long answer costs one retry, instead of in the grammar, where bounded repetition
    makes grammar compilation slow on some servers.
    """
    properties: dict[str, dict[str, Any]] = {}
    for key in keys:
        prefix = (prefixes or {}).get(key)
        properties[key] = {"type": "string", "minLength": 1}
        if prefix and not UNPATTERNABLE.search(prefix):
            literal = "".join(f"[{c}]" if c in CLASS_ESCAPED else c for c in prefix)
            properties[key]["pattern"] = f"^{literal}{PATTERN_REST}"
    return {
        "title": SCHEMA_NAME,
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
