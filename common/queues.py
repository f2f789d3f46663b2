"""Task names and queue names: the contract between the gateway and the workers.

The gateway sends tasks by these names and never imports the worker code (or torch).
"""

from __future__ import annotations

from typing import Final

CLASSIFY: Final = "classify"
GRADCAM: Final = "gradcam"
EXPLAIN: Final = "explain"
NOTIFY: Final = "notify"

#: Stages in chain order; each has its own queue of the same name.
STAGES: Final = (CLASSIFY, GRADCAM, EXPLAIN, NOTIFY)
QUEUES: Final = STAGES

TASK_NAMES: Final = {
    CLASSIFY: "aigi.classify",
    GRADCAM: "aigi.gradcam",
    EXPLAIN: "aigi.explain",
    NOTIFY: "aigi.notify",
}
#: A single webhook delivery (retried on its own, so a slow receiver blocks nothing).
DELIVER_WEBHOOK: Final = "aigi.deliver_webhook"
RECONCILE: Final = "aigi.reconcile"
