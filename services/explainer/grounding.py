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
candidates go to the LLM: their keys are the answer's schema, and each value must
start with its :attr:`Candidate.prefix` (region, statistic, measurement, and the
counter-evidence mark where it applies), a ``pattern`` the servers' grammars enforce. What the model
writes after it is checked by :mod:`.claims`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from common.artifacts import Taxonomy
from services.explainer.evidence import LABELS, RULES, Rule
from services.explainer.inputs import EvidenceInput, RoiInput, RoiStat, VerdictInput
from services.explainer.prompt import AGAINST_MARK, number, ratio

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

    @property
    def prefix(self) -> str:
        """How its explanation starts: the counter-evidence mark where it applies, the
        region, the statistic and its measurement, e.g. ``Region 1, upper left: the
        high-frequency energy is 0.184, 2.30x the whole image (0.0801), higher, ``.

        The schema's ``pattern`` makes a constrained answer start with it, so the facts
        of every claim are the measured ones by construction; the model writes what
        they mean, and :mod:`.claims` checks that part."""
        mark = "" if self.supports_verdict else f"{AGAINST_MARK} "
        value = "" if self.value is None else f"{number(self.value)}, "
        whole = "" if self.whole is None else f" ({number(self.whole)})"
        return (
            f"{mark}Region {self.roi.rank}, {self.roi.position}: the {self.label} is "
            f"{value}{ratio(self.relative)} the whole image{whole}, {self.measured}, "
        )

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
