"""A support request end to end: classify the intent, extract the order fields, answer from policy.

Three prompts, three model calls, no Jinja: the policy snippet for the intent is passed to
`answer_policy` as a plain variable. `run` is `App.run` (or a traced wrapper of it), so the server,
the shadow and the tests all take this one path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .app import Answer

Run = Callable[[str, Mapping[str, str]], Answer]
FALLBACK_INTENT = "other"


@dataclass(frozen=True)
class Reply:
    intent: str
    order_id: str | None
    email: str | None
    text: str
    calls: tuple[Answer, ...] = field(default=(), repr=False)

    @property
    def tokens_in(self) -> int:
        return sum(c.completion.tokens_in for c in self.calls)

    @property
    def tokens_out(self) -> int:
        return sum(c.completion.tokens_out for c in self.calls)

    @property
    def model_ms(self) -> float:
        """Time spent waiting on the model (successful attempts), the floor of the request's latency."""
        return sum(c.completion.latency_ms for c in self.calls)

    def decision(self) -> tuple[str, str | None, str | None]:
        """What two versions must agree on in shadow mode (free text is compared by the eval, not here)."""
        return (self.intent, self.order_id, self.email)


def answer(run: Run, policies: Mapping[str, str], message: str) -> Reply:
    """Raises the model's error (client.ModelError) if any of the three calls fails."""
    intent_call = run("classify_intent", {"message": message})
    intent = _field(intent_call.data, "intent")
    if intent not in policies:
        intent = FALLBACK_INTENT
    order_call = run("extract_order", {"message": message})
    reply_call = run("answer_policy", {"policy": policies[intent], "question": message})
    text = _field(reply_call.data, "answer") or reply_call.text.strip()
    return Reply(
        intent=intent,
        order_id=_field(order_call.data, "order_id"),
        email=_field(order_call.data, "email"),
        text=text,
        calls=(intent_call, order_call, reply_call),
    )


def _field(data: Any, name: str) -> str | None:
    value = data.get(name) if isinstance(data, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None
