"""A fake model that answers the support app's three prompts like a decent model would."""

import json
import re

from {{ cookiecutter.package }}.testing.fake_model import Request

INTENT_WORDS = (
    ("refund", ("refund", "return", "money back", "cancel")),
    ("order_status", ("order", "where", "shipped", "tracking", "parcel")),
    ("account", ("password", "account", "login", "sign in")),
    ("product", ("size", "material", "stock", "colour", "color")),
)


def classify(text: str) -> str:
    low = text.lower()
    return next((intent for intent, words in INTENT_WORDS if any(w in low for w in words)), "other")


def support_answers(intent: str | None = None):
    """Keyword intent, regex order fields, an answer quoting the policy. The prompt is recognised by
    its output schema (its wording may change; its output contract is what the app relies on).
    Answers ECHO the user's message, which makes leak tests meaningful. `intent`: always this
    intent (a worse candidate)."""

    def answer(request: Request) -> str:
        user = request.content
        if "intent" in request.fields:
            return json.dumps({"intent": intent or classify(user)})
        if "order_id" in request.fields:
            order = re.search(r"\bBH-\d+\b", user)
            email = re.search(r"[\w.+-]+@[\w-]+\.[\w.]+", user)
            return json.dumps({"order_id": order.group() if order else None, "email": email.group() if email else None})
        policy = request.system.split("Policy:", 1)[-1].strip().split(". ")[0]
        return json.dumps({"answer": f"You asked: {user} {policy}."})

    return answer
