"""The inference wrapper: render a prompt, call the model, parse the answer.

The eval, the server and the smoke tests all go through here, so what is evaluated is what ships.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import ChatClient, Completion, RetryPolicy
from .errors import UserError
from .prompts import Prompt
from .settings import EvalSettings, ModelSettings

POLICIES_FILE = Path("data/policies.yaml")


@dataclass(frozen=True)
class Answer:
    prompt: str
    prompt_version: str
    text: str
    data: Any  # parsed JSON when the prompt has an output schema, else None
    completion: Completion


def sampling(model: ModelSettings) -> dict[str, Any]:
    """The sampling parameters sent with every call (and part of every cache key)."""
    return {"temperature": model.temperature, "max_tokens": model.max_tokens, "seed": model.seed}


@contextlib.contextmanager
def connect(model: ModelSettings, evaluation: EvalSettings | None = None) -> Iterator[ChatClient]:
    """A client for the configured endpoint; for `embedded`, the local server runs meanwhile."""
    evaluation = evaluation or EvalSettings()
    retry = RetryPolicy(max_attempts=evaluation.max_attempts, max_retry_s=evaluation.max_retry_s)
    timeout = (model.connect_timeout_s, model.read_timeout_s)
    if not model.embedded:
        client = ChatClient(
            model.base_url, model.name, model.api_key(), timeout=timeout, retry=retry,
            pool_size=evaluation.concurrency,
        )  # fmt: skip
        try:
            yield client
        finally:
            client.close()
        return
    if importlib.util.find_spec(f"{__package__}.local_model") is None:
        raise UserError("model.base_url: 'embedded' is not available in this project; set an OpenAI-compatible URL")
    from .local_model import embedded_server

    with embedded_server(seed=model.seed) as base_url:
        client = ChatClient(
            base_url, "embedded", None, timeout=timeout, retry=retry,
            pool_size=evaluation.concurrency, json_schema_style="llama.cpp",
        )  # fmt: skip
        try:
            yield client
        finally:
            client.close()


@dataclass(frozen=True)
class Reply:
    """What the assistant makes of one customer message."""

    intent: str | None
    order_id: str | None
    email: str | None
    answer: str | None
    versions: dict[str, str]  # prompt id -> version, for headers, logs and lineage
    tokens_in: int
    tokens_out: int


def load_policies(path: Path = POLICIES_FILE) -> dict[str, str]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"{path}: cannot read the policies ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise UserError(f"{path}: expected a mapping of intent -> policy text")
    return data


class App:
    """The support assistant: one method per capability, each a prompt + a model call + parsing."""

    def __init__(self, prompts: Mapping[str, Prompt], client: ChatClient, model: ModelSettings) -> None:
        self.prompts = prompts
        self.client = client
        self.model = model

    def run(self, prompt_id: str, variables: Mapping[str, str]) -> Answer:
        prompt = self.prompts[prompt_id]
        completion = self.client.chat(prompt.render(variables), schema=prompt.output_schema, **sampling(self.model))
        data = None
        if prompt.output_schema is not None:
            try:
                data = json.loads(completion.text)
            except ValueError:
                data = None  # the eval scores this as json_valid=False; callers see None
        return Answer(prompt.id, prompt.version, completion.text, data, completion)

    def answer(self, message: str, policies: Mapping[str, str]) -> Reply:
        """Route the message, pull out the order fields, and answer from the matching policy.

        The reply is grounded only when a policy exists for the intent; otherwise `answer` is None
        and the caller hands over to a person (never an ungrounded guess)."""
        routed = self.run("classify_intent", {"message": message})
        fields = self.run("extract_order", {"message": message})
        intent = routed.data.get("intent") if isinstance(routed.data, dict) else None
        order = fields.data if isinstance(fields.data, dict) else {}
        answers = [routed, fields]
        text = None
        policy = policies.get(intent) if intent else None
        if policy:
            grounded = self.run("answer_policy", {"policy": policy, "question": message})
            answers.append(grounded)
            text = grounded.data.get("answer") if isinstance(grounded.data, dict) else None
        return Reply(
            intent=intent,
            order_id=order.get("order_id"),
            email=order.get("email"),
            answer=text,
            versions={a.prompt: a.prompt_version for a in answers},
            tokens_in=sum(a.completion.tokens_in for a in answers),
            tokens_out=sum(a.completion.tokens_out for a in answers),
        )
