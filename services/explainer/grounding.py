"""Which artifacts the LLM may discuss, and which of its claims are kept.

The evidence rules (:mod:`.evidence`) know which region statistics stand out from the
whole image, and in which direction. From them each job gets a few *candidates*: an
artifact, the region and statistic that bear on it, the measured numbers, and what
the measurement says:

* a rule that fires (the statistic stands out the way the artifact would make it)
  *indicates generation*;
* a statistic close to the whole image's value in the strongest region shows *no
  sign* of the artifact there.

A candidate whose reading agrees with the verdict *supports* it; the others are
evidence *against* it, and the prompt asks for them to be marked so. Only the
candidates go to the LLM (their keys are the answer's schema), and each claim it
makes is checked against them (:func:`check_claim`): it must name its region or
cite a measurement, cite no number that was not measured, state the statistic's
direction as measured, read the measurement as the rule does, and agree with the
verdict unless it says it is evidence against the verdict. A claim that fails is
dropped with the reason.

The checks read English with patterns: a claim they cannot classify (no direction
words) is judged on its citations alone, and a correct claim in unusual wording
may be dropped. Dropping is the safe failure: the job keeps its other claims, or
the evidence explanation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from common.artifacts import Taxonomy
from services.explainer.evidence import LABELS, RULES, Rule
from services.explainer.inputs import EvidenceInput, RoiInput, RoiStat, VerdictInput

#: Candidates per job: enough to explain a verdict, few enough for a short prompt.
MAX_CANDIDATES = 4
#: A region statistic within this ratio of the whole image's shows no local artifact.
NORMAL_RANGE = (0.87, 1.15)

Reading = Literal["generated", "photograph"]


@dataclass(frozen=True)
class Candidate:
    """One artifact the LLM may discuss, with the measurement that bears on it."""

    artifact: str
    name: str
    statistic: str
    roi: RoiInput
    value: float | None
    relative: float
    whole: float | None
    reading: Reading
    meaning: str  # what the measurement says about the artifact, in words
    supports_verdict: bool
    strength: float  # how far the statistic is from the whole image (log ratio)

    @property
    def label(self) -> str:
        return LABELS.get(self.statistic, self.statistic)

    @property
    def direction(self) -> Literal["higher", "lower", "about the same"]:
        """The statistic in the region against the whole image (5 % either way is the same)."""
        if self.relative >= 1.05:
            return "higher"
        if self.relative <= 0.95:
            return "lower"
        return "about the same"

    @property
    def measured(self) -> str:
        """The direction in words: "slightly" within the normal range."""
        near = NORMAL_RANGE[0] <= self.relative <= NORMAL_RANGE[1]
        return (
            f"slightly {self.direction}"
            if near and self.direction != "about the same"
            else (self.direction)
        )

    def names(self) -> tuple[str, ...]:
        """How a claim may name the artifact (its name, its key in words) or repeat the
        prompt's words on the measurement."""
        return (self.meaning, self.name, self.artifact.replace("_", " "), self.artifact)

    def numbers(self) -> tuple[float, ...]:
        return tuple(v for v in (self.value, self.relative, self.whole) if v is not None)


def _fires(rule: Rule, relative: float) -> bool:
    return relative >= rule.threshold if rule.direction == "high" else relative <= rule.threshold


def _firing(rule: Rule, evidence: EvidenceInput) -> tuple[RoiInput, RoiStat] | None:
    """The region where ``rule`` fires most strongly (ties: the hotter region)."""
    hits = [
        (roi, stat)
        for roi in evidence.rois
        if (stat := roi.stat(rule.statistic)) is not None
        and stat.relative is not None
        and _fires(rule, stat.relative)
    ]
    if not hits:
        return None
    sign = -1.0 if rule.direction == "high" else 1.0
    return min(hits, key=lambda h: (sign * (h[1].relative or 0.0), h[0].rank))


def candidates(
    verdict: VerdictInput,
    evidence: EvidenceInput,
    taxonomy: Taxonomy,
    limit: int = MAX_CANDIDATES,
) -> tuple[Candidate, ...]:
    """The artifacts this job's measurements bear on; none where nothing was measured.

    Supporting candidates come first (strongest first), at most ``limit - 1`` of them
    when there is evidence against the verdict, so the strongest counter-evidence is
    always among them."""
    if not evidence.available or not evidence.rois:
        return ()
    found: dict[str, Candidate] = {}
    for rule in RULES:
        if rule.artifact not in taxonomy:
            continue
        hit = _firing(rule, evidence)
        if hit is None:
            continue
        roi, stat = hit
        assert stat.relative is not None
        found[rule.artifact] = Candidate(
            artifact=rule.artifact,
            name=taxonomy.by_key[rule.artifact].name,
            statistic=rule.statistic,
            roi=roi,
            value=stat.value,
            relative=stat.relative,
            whole=evidence.image_stats.get(rule.statistic),
            reading="generated",
            meaning=rule.reading,
            supports_verdict=verdict.is_fake,
            strength=abs(math.log(stat.relative)) / abs(math.log(rule.threshold)),
        )
    top = evidence.rois[0]
    for rule in RULES:
        top_stat = top.stat(rule.statistic)
        if rule.artifact in found or rule.artifact not in taxonomy or top_stat is None:
            continue
        relative = top_stat.relative
        if relative is None or not NORMAL_RANGE[0] <= relative <= NORMAL_RANGE[1]:
            continue
        if (rule.direction == "high") != (relative >= 1.0):
            continue  # the rule of the other direction speaks for this statistic
        found[rule.artifact] = Candidate(
            artifact=rule.artifact,
            name=taxonomy.by_key[rule.artifact].name,
            statistic=rule.statistic,
            roi=top,
            value=top_stat.value,
            relative=relative,
            whole=evidence.image_stats.get(rule.statistic),
            reading="photograph",
            meaning=f"close to the whole image: no sign of {rule.artifact.replace('_', ' ')}",
            supports_verdict=not verdict.is_fake,
            strength=abs(math.log(relative)),
        )
    ranked = sorted(found.values(), key=lambda c: -c.strength)
    supporting = [c for c in ranked if c.supports_verdict]
    against = [c for c in ranked if not c.supports_verdict]
    chosen = supporting[: limit - 1 if against else limit] + against[:1]
    rest = [c for c in supporting + against[1:] if c not in chosen]
    chosen += rest[: limit - len(chosen)]
    order = {key: i for i, key in enumerate(taxonomy.keys)}
    return tuple(sorted(chosen, key=lambda c: (not c.supports_verdict, order[c.artifact])))


# ------------------------------------------------------------------ checking claims
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


def _number_known(value: float, decimals: int, kind: str, known: list[float]) -> bool:
    if kind == "%":
        fraction_decimals = decimals + 2
        return any(
            _matches(value / 100, fraction_decimals, k)
            or _matches(1 + value / 100, fraction_decimals, k)
            or _matches(1 - value / 100, fraction_decimals, k)
            for k in known
        )
    return any(_matches(value, decimals, k) for k in known)


def measured_numbers(verdict: VerdictInput, evidence: EvidenceInput) -> list[float]:
    """Every number the prompt could have shown: statistics, ratios, heat shares."""
    known = [verdict.probability]
    known += [v for v in evidence.image_stats.values() if v is not None]
    if evidence.heat_outside_rois is not None:
        known.append(evidence.heat_outside_rois)
    for roi in evidence.rois:
        if roi.heat_share is not None:
            known.append(roi.heat_share)
        for stat in roi.stats:
            known += [v for v in (stat.value, stat.relative) if v is not None]
    return known


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
    known: list[float],
    positions: tuple[str, ...],
) -> str | None:
    """Why the claim about ``candidate`` is dropped; None when it is kept.

    ``positions``: where the job's regions are (a claim placing one elsewhere is
    wrong)."""
    if len(text.split()) < MIN_WORDS:
        return f"fewer than {MIN_WORDS} words"
    cited = _cited(text)
    unknown = [f"{v:g}{kind}" for v, d, kind in cited if not _number_known(v, d, kind, known)]
    if unknown:
        return f"cites {', '.join(unknown)}, which was not measured"
    cites_own = any(_number_known(v, d, kind, list(candidate.numbers())) for v, d, kind in cited)
    named = _names_region(text, candidate.roi) and _names_statistic(text, candidate.statistic)
    if not cites_own and not named:
        return (
            f"names neither its region and statistic (region {candidate.roi.rank}, "
            f"{candidate.roi.position}, {candidate.label}) nor its measurement "
            f"({candidate.relative:.2f}x the whole image)"
        )
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
    high, low = bool(_HIGH.search(text)), bool(_LOW.search(text))
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
    known = measured_numbers(verdict, evidence)
    positions = tuple(dict.fromkeys(roi.position for roi in evidence.rois))
    kept: dict[str, str] = {}
    dropped: list[Dropped] = []
    for key, text in artifacts.items():
        candidate = by_key.get(key)
        if candidate is None:
            dropped.append(Dropped(key, "not a candidate: no measurement bears on it", text))
            continue
        reason = check_claim(text, candidate, verdict, known, positions)
        if reason is None:
            kept[key] = text
        else:
            dropped.append(Dropped(key, reason, text))
    return kept, dropped
