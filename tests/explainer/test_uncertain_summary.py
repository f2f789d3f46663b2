"""An uncertain verdict says so in the explanation's summary, with its reason."""

from __future__ import annotations

from typing import Any

from common.artifacts import Taxonomy
from common.settings import Settings
from services.explainer.explainer import Explainer
from services.explainer.inputs import VerdictInput


def test_uncertain_summary_gives_the_reason(document: dict[str, Any], taxonomy: Taxonomy) -> None:
    explainer = Explainer(None, taxonomy, Settings(llm_url=None))
    verdict = VerdictInput(
        "FAKE", 0.93, "uncertain", "test-tiny", reason="outside the training distribution"
    )
    summary = explainer.explain(verdict, document).summary
    assert "(uncertain, model test-tiny)" in summary
    assert "The verdict is uncertain (outside the training distribution)" in summary
    assert "should not be acted on without a person's review" in summary
    sure = explainer.explain(VerdictInput("FAKE", 0.93, "mostly fake"), document).summary
    assert "uncertain" not in sure
