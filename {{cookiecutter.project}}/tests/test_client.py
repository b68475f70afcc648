"""The chat clients against a real local server that misbehaves on purpose (no mocks of our code).

Every test runs twice: on the eval's client (`ChatClient`, requests, threads) and on the service's
(`AsyncChatClient`, aiohttp, asyncio). They share one request format and one retry policy, so each
fault must end the same way on both: same attempts, same waits, same errors, same scrubbed key.
"""

import asyncio
import time

import pytest

from {{ cookiecutter.package }}.app.async_client import AsyncChatClient
from {{ cookiecutter.package }}.app.client import REDACTED, ChatClient, ModelError, RetryPolicy, parse_retry_after
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

SENTINEL = "sk-SENTINEL-client-0123456789abcdef"
MESSAGES = [{"role": "system", "content": "Repeat the message."}]


def ask(text):
    return [*MESSAGES, {"role": "user", "content": text}]


@pytest.fixture
def model():
    with FakeModel(retry_after="1", hang_s=3.0) as server:
        yield server


class Awaited:
    """The async client called from a test: one event loop per call, a client per loop (its
    connection pool belongs to the loop it was first used on)."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs

    def chat(self, messages, **options):
        async def call():
            client = AsyncChatClient(*self.args, **self.kwargs)
            try:
                return await client.chat(messages, **options)
            finally:
                await client.aclose()

        return asyncio.run(call())


@pytest.fixture(params=["requests", "aiohttp"])
def new_client(request):
    """A factory of the client under test: ChatClient, or AsyncChatClient called through `Awaited`."""
    return ChatClient if request.param == "requests" else Awaited


@pytest.fixture
def client_for(new_client):
    def make(model, rand=None, **retry):
        policy = RetryPolicy(**{"max_attempts": 3, "max_retry_s": 10.0, "backoff_base_s": 0.01, **retry})
        extra = {"rand": rand} if rand else {}
        return new_client(model.base_url, "fake", SENTINEL, timeout=(1.0, 0.5), retry=policy, **extra)

    return make


def test_answer_usage_latency_and_the_key_in_the_header_only(model, client_for):
    completion = client_for(model).chat(ask("hello there"))
    assert completion.text == "hello there"
    assert completion.tokens_in == 5 and completion.tokens_out == 2
    assert completion.latency_ms > 0 and completion.attempts == 1
    assert model.seen[0].authorization == f"Bearer {SENTINEL}"


def test_retry_after_is_honoured_as_the_server_measures_it(model, client_for):
    completion = client_for(model).chat(ask("!429 wait for me"))
    assert completion.text == "wait for me" and completion.attempts == 2
    first, second = model.seen
    assert first.status == 429 and second.status == 200
    assert second.received - first.replied >= 1.0  # the server said 1 s; jittered backoff is ~0.01 s


def test_backoff_without_retry_after_is_short_and_jittered(model, client_for):
    completion = client_for(model).chat(ask("!500once flaky"))
    assert completion.attempts == 2
    first, second = model.seen
    assert second.received - first.replied < 0.5


def test_max_attempts_bounds_the_calls(model, client_for):
    with pytest.raises(ModelError) as err:
        client_for(model, max_attempts=2).chat(ask("!500 always"))
    assert err.value.kind == "http" and err.value.attempts == 2
    assert model.calls("!500") == 2


def test_max_retry_s_bounds_the_total_time(model, client_for):
    # rand=1.0: a deterministic backoff of exactly 0.2 s
    client = client_for(
        model, rand=lambda: 1.0, max_attempts=100, backoff_base_s=0.2, backoff_cap_s=0.2, max_retry_s=1.0
    )
    started = time.monotonic()
    with pytest.raises(ModelError):
        client.chat(ask("!500 always"))
    assert time.monotonic() - started < 2.0
    assert 3 <= model.calls("!500") <= 7  # about 1 s / 0.2 s, never 100


def test_a_retry_after_beyond_the_budget_gives_up_at_once(client_for):
    with FakeModel(retry_after="30") as server:
        client = client_for(server, max_retry_s=2.0)
        with pytest.raises(ModelError, match="HTTP 429"):
            client.chat(ask("!429 too long"))
        assert server.calls() == 1


def test_a_hang_is_a_timeout_error_after_each_attempt(model, client_for):
    with pytest.raises(ModelError) as err:
        client_for(model, max_attempts=2).chat(ask("!hang"))
    assert err.value.kind == "timeout" and model.calls("!hang") == 2


@pytest.mark.parametrize("marker", ["!badjson", "!nochoices", "!deepjson"])
def test_an_unusable_body_is_a_parse_error_not_retried(model, marker, client_for):
    with pytest.raises(ModelError) as err:
        client_for(model).chat(ask(marker))
    assert err.value.kind == "parse" and model.calls(marker) == 1


def test_nonsense_token_counts_are_zero_not_a_crash(model, client_for):
    """`usage` is a figure, not the answer: counts that are not counts are 0 (the answer stands)."""
    answer = client_for(model).chat(ask("hello !badusage"))
    assert answer.text == "hello" and (answer.tokens_in, answer.tokens_out) == (0, 0)


def test_an_error_body_echoing_the_key_is_redacted(model, client_for):
    with pytest.raises(ModelError) as err:
        client_for(model).chat(ask("!echoauth"))
    assert model.calls("!echoauth") == 1  # 401 is not retried
    assert model.seen[0].authorization == f"Bearer {SENTINEL}"  # the server did get (and echo) the key
    assert SENTINEL not in str(err.value) and REDACTED in str(err.value)


def test_a_dead_endpoint_is_a_transport_error(new_client):
    with FakeModel() as server:
        url = server.base_url
    client = new_client(
        url, "fake", SENTINEL, timeout=(0.5, 0.5), retry=RetryPolicy(max_attempts=2, backoff_base_s=0.01)
    )
    with pytest.raises(ModelError) as err:
        client.chat(ask("anyone?"))
    assert err.value.kind == "transport" and err.value.attempts == 2
    assert SENTINEL not in str(err.value)


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
