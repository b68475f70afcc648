"""The example app: the support assistant of a homeware shop (Brightside Home).

`POST /v1/answer {"message": ...}` classifies the message into a support queue, pulls out the order
number and email address, and answers from the shop policy of that queue (`data/policies.yaml`).
Three prompts, one flow. The framework knows it only as the `APP` that params.yaml names
(`app.entry`): replace this package, its prompts, its policies and `tests/support/` with your own app,
and nothing else changes.
"""

from __future__ import annotations

from ..app.contract import App, Flow
from .flow import REQUEST, agreement, answer, category, log_fields
from .policies import FALLBACK_INTENT, POLICIES_FILE, load

APP = App(
    name="support",
    prompts=("classify_intent", "extract_order", "answer_policy"),
    files=(POLICIES_FILE,),
    load=load,
    flows={
        "answer": Flow(
            answer,
            request=REQUEST,
            description="classify, extract the order fields, answer from the policy of the intent",
            agreement=agreement,
            log_fields=log_fields,
            category=category,
            fallback=FALLBACK_INTENT,
        )
    },
)
