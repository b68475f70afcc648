"""A support request end to end: classify the intent, extract the order fields, answer from policy.

Three prompt calls, no Jinja: the policy snippet of the intent is passed to `answer_policy` as a
plain variable. The reply is what `POST /v1/answer` sends and what end-to-end golden examples
(`"flow": "answer"`) score field by field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..app.contract import Context
from .policies import FALLBACK_INTENT

REQUEST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["message"],
    "properties": {"message": {"type": "string", "minLength": 1, "pattern": r"\S"}},
}


async def answer(ctx: Context, request: Mapping[str, Any]) -> dict[str, Any]:
    """Raises the model's error (client.ModelError) if any of the three calls fails."""
    policies: Mapping[str, str] = ctx.data
    message = request["message"]
    intent = _field((await ctx.call("classify_intent", {"message": message})).data, "intent")
    if intent is None or intent not in policies:
        intent = FALLBACK_INTENT
    order = (await ctx.call("extract_order", {"message": message})).data
    reply = await ctx.call("answer_policy", {"policy": policies[intent], "question": message})
    return {
        "intent": intent,
        "order": {"order_id": _field(order, "order_id"), "email": _field(order, "email")},
        "reply": _field(reply.data, "answer") or reply.text.strip(),
    }


def agreement(reply: Mapping[str, Any]) -> Any:
    """Two versions agree when they route the same way and read the same order fields (the wording of
    the answer is judged by the eval, not here)."""
    return {"intent": reply["intent"], "order": reply["order"]}


def category(reply: Mapping[str, Any]) -> str:
    """The support queue a message was routed to: drift watches their mix."""
    return str(reply["intent"])


def log_fields(reply: Mapping[str, Any]) -> dict[str, Any]:
    """What is safe to log about a reply: the route taken, never the customer's text or address."""
    return {"intent": reply["intent"], "has_order_id": reply["order"]["order_id"] is not None}


def _field(data: Any, name: str) -> str | None:
    value = data.get(name) if isinstance(data, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None
