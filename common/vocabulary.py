"""The closed vocabularies of the API as ``Literal`` types, built from their single sources.

A job's status (``JobStatus.ALL``), label (``LABELS``), tier (``ALL_TIERS``), why a tier is
``uncertain`` (``REASON_OOD``/``REASON_BAND``) and a review's decision (``DECISIONS``) are
each defined once; pydantic models and route parameters use these aliases, so validation
and the OpenAPI enums follow those tuples.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from common.db.models import JobStatus
from common.detector.config import ALL_TIERS, LABELS, REASON_BAND, REASON_OOD

DECISIONS = ("confirmed", "overturned")
UNREVIEWED = "unreviewed"
#: The review filter of the job lists: no review yet, or one with this decision.
REVIEW_STATES = (UNREVIEWED, *DECISIONS)
REASONS = (REASON_OOD, REASON_BAND)

if TYPE_CHECKING:
    # mypy cannot read a Literal built from a tuple; to it these are plain strings.
    StatusName = str
    LabelName = str
    TierName = str
    ReasonText = str
    Decision = str
    ReviewState = str
else:
    # Literal[("a", "b")] is Literal["a", "b"]: pydantic and FastAPI validate against the
    # tuple's values and document them as the enum.
    StatusName = Literal[JobStatus.ALL]
    LabelName = Literal[LABELS]
    TierName = Literal[ALL_TIERS]
    ReasonText = Literal[REASONS]
    Decision = Literal[DECISIONS]
    ReviewState = Literal[REVIEW_STATES]
