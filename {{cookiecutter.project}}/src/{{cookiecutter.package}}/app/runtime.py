"""Render a prompt, call the model, parse the answer: the one path the eval, the service, the
registered pyfunc model and every flow take, so that what is evaluated is what ships."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import strict_json
from ..errors import UserError
from ..settings import EvalSettings, ModelSettings
from .client import ChatClient, Completion, RetryPolicy
from .contract import Answer
from .prompts import Prompt, PromptError

if TYPE_CHECKING:
    from .async_client import AsyncChatClient

# (rendered messages, output schema) -> completion: a client's chat, or a cached one in the eval.
Chat = Callable[[Sequence[Mapping[str, str]], Mapping[str, Any] | None], Completion]
# The same on asyncio: the service's client (async_client.AsyncChatClient).
AsyncChat = Callable[[Sequence[Mapping[str, str]], Mapping[str, Any] | None], Awaitable[Completion]]


def sampling(model: ModelSettings) -> dict[str, Any]:
    """The sampling parameters sent with every call (and part of every cache key)."""
    return {"temperature": model.temperature, "max_tokens": model.max_tokens, "seed": model.seed}


def parse_output(prompt: Prompt, text: str) -> Any:
    """The answer's JSON for a prompt with an output schema; None for free text or unparsable JSON
    (the eval scores that as json_valid=False; callers see None)."""
    return None if prompt.output_schema is None else parse_json(text)


def parse_json(text: str) -> Any:
    """`text` as JSON, strictly (no NaN, no infinity, bounded depth: see strict_json); None when it
    is not. An answer Python would take but JSON would not would pass the eval and then fail every
    caller that sends it on as JSON."""
    try:
        return strict_json.loads(text)
    except ValueError:
        return None


def _prompt(prompts: Mapping[str, Prompt], prompt_id: str) -> Prompt:
    prompt = prompts.get(prompt_id)
    if prompt is None:
        raise PromptError(f"no prompt {prompt_id!r} (have: {', '.join(sorted(prompts))})")
    return prompt


def _answer(prompt: Prompt, completion: Completion) -> Answer:
    return Answer(prompt.id, prompt.version, completion.text, parse_output(prompt, completion.text), completion)


class Caller:
    """`caller(prompt_id, variables) -> Answer` over a set of prompts and a chat function."""

    def __init__(self, prompts: Mapping[str, Prompt], chat: Chat) -> None:
        self.prompts = prompts
        self.chat = chat

    def __call__(self, prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        prompt = _prompt(self.prompts, prompt_id)
        return _answer(prompt, self.chat(prompt.render(variables), prompt.output_schema))


class AsyncCaller:
    """`await caller(prompt_id, variables) -> Answer`: the same render and parse around an async chat."""

    def __init__(self, prompts: Mapping[str, Prompt], chat: AsyncChat) -> None:
        self.prompts = prompts
        self.chat = chat

    async def __call__(self, prompt_id: str, variables: Mapping[str, Any]) -> Answer:
        prompt = _prompt(self.prompts, prompt_id)
        return _answer(prompt, await self.chat(prompt.render(variables), prompt.output_schema))


def endpoint_identity(model: ModelSettings) -> str:
    """The endpoint as the cache keys it: the URL, or for `embedded` the runtime, weights and slots."""
    if not model.embedded:
        return model.base_url
    if importlib.util.find_spec(f"{__package__}.embedded") is None:
        return "embedded"
    from .embedded import identity

    return identity(model.embedded_slots, model.embedded_threads)


def client_chat(client: ChatClient, model: ModelSettings) -> Chat:
    """A Chat on `client` with the model's sampling parameters."""
    params = sampling(model)
    return lambda messages, schema: client.chat(messages, schema=schema, **params)


def async_client_chat(client: AsyncChatClient, model: ModelSettings) -> AsyncChat:
    """An AsyncChat on `client` with the model's sampling parameters."""
    params = sampling(model)
    return lambda messages, schema: client.chat(messages, schema=schema, **params)


@dataclass(frozen=True)
class Endpoint:
    """Where a client sends its calls, and how it asks for JSON."""

    base_url: str
    model: str
    api_key: str | None
    json_schema_style: str = "openai"


@contextlib.contextmanager
def endpoint(model: ModelSettings) -> Iterator[Endpoint]:
    """The configured endpoint; for `embedded`, the local llama.cpp server runs meanwhile."""
    if not model.embedded:
        yield Endpoint(model.base_url, model.name, model.api_key())
        return
    if importlib.util.find_spec(f"{__package__}.embedded") is None:
        raise UserError("model.base_url: 'embedded' is not available in this project; set an OpenAI-compatible URL")
    from .embedded import embedded_server

    with embedded_server(seed=model.seed, slots=model.embedded_slots, threads=model.embedded_threads) as base_url:
        yield Endpoint(base_url, "embedded", None, json_schema_style="llama.cpp")


@contextlib.contextmanager
def connect(model: ModelSettings, evaluation: EvalSettings | None = None) -> Iterator[ChatClient]:
    """A client for the configured endpoint; for `embedded`, the local server runs meanwhile."""
    evaluation = evaluation or EvalSettings()
    with endpoint(model) as where:
        client = ChatClient(
            where.base_url, where.model, where.api_key, timeout=(model.connect_timeout_s, model.read_timeout_s),
            retry=RetryPolicy(max_attempts=evaluation.max_attempts, max_retry_s=evaluation.max_retry_s),
            pool_size=evaluation.concurrency,
            json_schema_style=where.json_schema_style,
        )  # fmt: skip
        try:
            yield client
        finally:
            client.close()
