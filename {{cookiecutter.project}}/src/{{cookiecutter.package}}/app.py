"""The inference wrapper: render a prompt, call the model, parse the answer.

The eval, the server and the smoke tests all go through here, so what is evaluated is what ships.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .client import ChatClient, Completion, RetryPolicy
from .errors import UserError
from .prompts import Prompt
from .settings import EvalSettings, ModelSettings

if TYPE_CHECKING:
    from .support import Reply


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
        """A support request end to end (intent, order fields, grounded reply): see support.py."""
        from .support import answer  # support.py builds on this module's Answer

        return answer(self.run, policies, message)
