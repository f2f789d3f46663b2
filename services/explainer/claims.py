"""Checking the LLM's claims against the job's candidates (:mod:`.grounding`).

A claim is kept when it names its region and statistic or cites its measurement,
states the measurement (a measured number, or higher/lower), cites no number but
its own candidate's (a ratio as the ratio, a value as a value), places no region
where none is, states the statistic's direction as measured, reads the measurement
as the rule does (generation, or no sign of it), and agrees with the verdict unless
it says it is evidence against the verdict. A claim that fails is dropped with the
reason.

The checks read English with patterns: a claim they cannot classify (no direction
words) is judged on its citations alone, and a correct claim in unusual wording may
be dropped. Dropping is the safe failure: the job keeps its other claims, or the
evidence explanation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from services.explainer.evidence import LABELS
from services.explainer.grounding import Candidate, Reading
from services.explainer.inputs import EvidenceInput, RoiInput, VerdictInput
from services.explainer.prompt import number

_NUMBER = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)(\s*%|\s*(?:x|×)(?![\w\d])|\s+times\b)?", re.IGNORECASE
)
_HIGH = re.compile(
    r"\b(higher|greater|stronger|elevated|excess(?:ive)?|increased|above|sharper|crisper|"
    r"noisier|more saturated)\b",
    re.IGNORECASE,
)
_LOW = re.compile(
    r"\b(lower|less|weaker|reduced|missing|lacks?|lacking|below|smoother|softer|fewer|"
    r"decreased|diminished|weak|little)\b",
    re.IGNORECASE,
)
_NEGATED_GENERATED = re.compile(
    r"\b(?:not|no|never|without|nor|isn't|aren't|doesn't)\s+(?:\w+\s+){0,3}?"
    r"(?:ai[- ]generated|generated|generation|synthetic|artificial\w*|fake|generator\w*|sign)\b",
    re.IGNORECASE,
)
_NEGATED_PHOTOGRAPH = re.compile(
    r"\b(?:not|no|never|isn't|aren't|unlike)\s+(?:\w+\s+){0,2}?"
    r"(?:real|natural|authentic|genuine|photo\w*|camera)\b",
    re.IGNORECASE,
)
_GENERATED = re.compile(
    r"\b(ai[- ]generated|generated|generation|generator\w*|synthetic|artificial\w*|fake|"
    r"manipulat\w+|upsampl\w+|computer[- ]generated|diffusion|gan)\b",
    re.IGNORECASE,
)
_PHOTOGRAPH = re.compile(
    r"\b(photograph\w*|photo|camera|natural(?:ly)?|real|authentic|genuine|sensor)\b",
    re.IGNORECASE,
)
_AGAINST = re.compile(
    r"against the verdict|counter[- ]?evidence|evidence against|however|although|despite|"
    r"even though|nevertheless|contrary|but the detector|yet the detector",
    re.IGNORECASE,
)


def reading_of(text: str, names: Iterable[str] = ()) -> Reading | Literal["mixed"] | None:
    """What a claim says the measurement means: generation, a photograph, both
    ("mixed") or neither (None). ``names`` (the artifact's) are not read: "artificial
    smoothness" names an artifact, it does not say the image is artificial."""
    for name in names:
        text = re.sub(re.escape(name), " ", text, flags=re.IGNORECASE)
    generated = bool(_NEGATED_PHOTOGRAPH.search(text))
    photograph = bool(_NEGATED_GENERATED.search(text))
    rest = _NEGATED_PHOTOGRAPH.sub(" ", _NEGATED_GENERATED.sub(" ", text))
    generated = generated or bool(_GENERATED.search(rest))
    photograph = photograph or bool(_PHOTOGRAPH.search(rest))
    if generated and photograph:
        return "mixed"
    if generated or photograph:
        return "generated" if generated else "photograph"
    return None


def _decimals(token: str) -> int:
    return len(token.split(".")[1]) if "." in token else 0


def _matches(cited: float, decimals: int, known: float) -> bool:
    """``cited`` is ``known`` as rounded to the digits shown (or within 2 %)."""
    tolerance = max(0.5 * 10**-decimals + 1e-9, 0.02 * abs(known))
    return abs(cited - known) <= tolerance


def _cited(text: str) -> list[tuple[float, int, str]]:
    """Measurement-like numbers in ``text``: decimals, percentages and ratios (a bare
    integer, such as a region's rank, is not a measurement)."""
    out = []
    for match in _NUMBER.finditer(text):
        token, unit = match.group(1), (match.group(2) or "").strip().lower()
        if "." not in token and not unit:
            continue
        kind = "%" if unit == "%" else ("x" if unit else "")
        out.append((float(token), _decimals(token), kind))
    return out


def _number_known(
    value: float, decimals: int, kind: str, candidate: Candidate, verdict: VerdictInput
) -> bool:
    """Is a cited number this candidate's measurement, in the unit it is cited in? A
    ratio (``2.3x``, ``2.3 times``) must be the ratio; a percentage its region's heat
    share, the ratio, or the ratio as a change (``130% higher``); a plain decimal any
    of its numbers, the probability or the heat share."""
    heat = [candidate.roi.heat_share] if candidate.roi.heat_share is not None else []
    if kind == "x":
        return _matches(value, decimals, candidate.relative)
    if kind == "%":
        fraction, digits = value / 100, decimals + 2
        return any(_matches(fraction, digits, k) for k in [*heat, candidate.relative]) or any(
            _matches(1 + sign * fraction, digits, candidate.relative) for sign in (1, -1)
        )
    known = [*candidate.numbers(), verdict.probability, *heat]
    return any(_matches(value, decimals, k) for k in known)


#: How a claim may name each statistic.
STATISTIC_WORDS: dict[str, tuple[str, ...]] = {
    "high_freq_energy": ("high frequency", "high freq", "spectral"),
    "noise_residual": ("noise",),
    "edge_sharpness": ("edge", "sharpness"),
    "laplacian_var": ("laplacian", "fine detail"),
    "saturation_mean": ("saturat",),
    "saturation_std": ("saturat",),
}
_POSITION = re.compile(
    r"\b(?:(upper|top|middle|lower|bottom)\s+(left|right|centre|center)|(centre|center))\b"
)
MIN_WORDS = 6
#: After the given prefix: at least this many words on what the measurement means.
MEANING_MIN_WORDS = 3


def _plain(text: str) -> str:
    return text.lower().replace("-", " ").replace("_", " ")


def positions_in(text: str) -> set[str]:
    """The grid positions a text names, in the gradcam stage's words."""
    out = set()
    for row, col, _alone in _POSITION.findall(_plain(text)):
        row = {"top": "upper", "bottom": "lower"}.get(row, row)
        col = "centre" if col == "center" else col
        out.add(f"{row} {col}" if row else "centre")
    return out


def _names_region(text: str, roi: RoiInput) -> bool:
    plain = _plain(text)
    return bool(re.search(rf"\bregion\s*#?\s*{roi.rank}\b", plain)) or roi.position in plain


def _names_statistic(text: str, statistic: str) -> bool:
    plain = _plain(text)
    return any(word in plain for word in STATISTIC_WORDS.get(statistic, (statistic,)))


def check_claim(
    text: str,
    candidate: Candidate,
    verdict: VerdictInput,
    positions: tuple[str, ...],
) -> str | None:
    """Why the claim about ``candidate`` is dropped; None when it is kept.

    ``positions``: where the job's regions are (a claim placing one elsewhere is
    wrong)."""
    if len(text.split()) < MIN_WORDS:
        return f"fewer than {MIN_WORDS} words"
    given = " ".join(candidate.prefix.split())
    said = " ".join(text.split())
    meaning = said[len(given) :] if said.startswith(given) else said
    if said.startswith(given) and len(meaning.split()) < MEANING_MIN_WORDS:
        return "repeats its measurement but does not say what it means"
    if "{" in text or "}" in text:
        return "holds JSON debris ({ or })"
    if said.startswith(given) and reading_of(meaning, candidate.names()) is None:
        return (
            "does not say what its measurement indicates (generation, a photograph, or no "
            "sign of the artifact)"
        )
    if not _names_statistic(meaning, candidate.statistic):
        other = next((s for s in STATISTIC_WORDS if _names_statistic(meaning, s)), None)
        if other is not None:
            return (
                f"speaks of the {LABELS.get(other, other)}; its measurement is the "
                f"{candidate.label}"
            )
    cited = _cited(text)
    unknown = [
        f"{v:g}{kind}" for v, d, kind in cited if not _number_known(v, d, kind, candidate, verdict)
    ]
    if unknown:
        return (
            f"cites {', '.join(unknown)}, which is not its measurement ({candidate.label} "
            f"{number(candidate.value)}, {candidate.relative:.2f}x the whole image)"
        )
    cites_own = bool(cited)
    named = _names_region(text, candidate.roi) and _names_statistic(text, candidate.statistic)
    if not cites_own and not named:
        return (
            f"names neither its region and statistic (region {candidate.roi.rank}, "
            f"{candidate.roi.position}, {candidate.label}) nor its measurement "
            f"({candidate.relative:.2f}x the whole image)"
        )
    # "lower right" is a place, not a direction
    unplaced = _POSITION.sub(" ", _plain(text))
    high, low = bool(_HIGH.search(unplaced)), bool(_LOW.search(unplaced))
    if not cites_own and not (high or low):
        return f"states no measurement: cite {candidate.relative:.2f}x or say {candidate.direction}"
    placed = positions_in(text)
    if placed - set(positions):
        return (
            f"places a region in the {', '.join(sorted(placed - set(positions)))}; the "
            f"regions are in the {', '.join(positions)}"
        )
    if (
        placed
        and re.search(rf"\bregion\s*#?\s*{candidate.roi.rank}\b", _plain(text))
        and candidate.roi.position not in placed
    ):
        return f"misplaces region {candidate.roi.rank}: it is in the {candidate.roi.position}"
    if candidate.direction != "about the same" and high != low:
        said = "higher" if high else "lower"
        if said != candidate.direction:
            return (
                f"says the {candidate.label} is {said}; it was measured "
                f"{candidate.direction} ({candidate.relative:.2f}x the whole image)"
            )
    reading = reading_of(text, candidate.names())
    against = bool(_AGAINST.search(text))
    if reading == "mixed" and not against:
        return "reads both as generated and as photographic"
    if reading in ("generated", "photograph") and reading != candidate.reading:
        what = "indicates generation" if reading == "generated" else "is photographic"
        return (
            f"says the measurement {what}, but {candidate.label} "
            f"{candidate.relative:.2f}x is {candidate.meaning}"
        )
    verdict_reading: Reading = "generated" if verdict.is_fake else "photograph"
    if reading in ("generated", "photograph") and reading != verdict_reading and not against:
        return (
            f"reads as {reading} evidence against the {verdict.label_name} verdict "
            "without saying it is evidence against the verdict"
        )
    return None


@dataclass(frozen=True)
class Dropped:
    artifact: str
    reason: str
    text: str

    def as_document(self) -> dict[str, str]:
        return {"artifact": self.artifact, "reason": self.reason, "text": self.text[:400]}


def ground(
    artifacts: dict[str, str],
    chosen: tuple[Candidate, ...],
    verdict: VerdictInput,
    evidence: EvidenceInput,
) -> tuple[dict[str, str], list[Dropped]]:
    """Split an answer's claims into the kept ones and the dropped ones (with reasons)."""
    by_key = {c.artifact: c for c in chosen}
    positions = tuple(dict.fromkeys(roi.position for roi in evidence.rois))
    kept: dict[str, str] = {}
    dropped: list[Dropped] = []
    for key, text in artifacts.items():
        candidate = by_key.get(key)
        if candidate is None:
            dropped.append(Dropped(key, "not a candidate: no measurement bears on it", text))
            continue
        reason = check_claim(text, candidate, verdict, positions)
        if reason is None:
            kept[key] = text
        else:
            dropped.append(Dropped(key, reason, text))
    return kept, dropped
