"""The chat client against a real local server that misbehaves on purpose (no mocks of our code)."""

import time

import pytest

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


def client_for(model, **retry):
    policy = RetryPolicy(**{"max_attempts": 3, "max_retry_s": 10.0, "backoff_base_s": 0.01, **retry})
    return ChatClient(model.base_url, "fake", SENTINEL, timeout=(1.0, 0.5), retry=policy)


def test_answer_usage_latency_and_the_key_in_the_header_only(model):
    completion = client_for(model).chat(ask("hello there"))
    assert completion.text == "hello there"
    assert completion.tokens_in == 5 and completion.tokens_out == 2
    assert completion.latency_ms > 0 and completion.attempts == 1
    assert model.seen[0].authorization == f"Bearer {SENTINEL}"


def test_retry_after_is_honoured_as_the_server_measures_it(model):
    completion = client_for(model).chat(ask("!429 wait for me"))
    assert completion.text == "wait for me" and completion.attempts == 2
    first, second = model.seen
    assert first.status == 429 and second.status == 200
    assert second.received - first.replied >= 1.0  # the server said 1 s; jittered backoff is ~0.01 s


def test_backoff_without_retry_after_is_short_and_jittered(model):
    completion = client_for(model).chat(ask("!500once flaky"))
    assert completion.attempts == 2
    first, second = model.seen
    assert second.received - first.replied < 0.5


def test_max_attempts_bounds_the_calls(model):
    with pytest.raises(ModelError) as err:
        client_for(model, max_attempts=2).chat(ask("!500 always"))
    assert err.value.kind == "http" and err.value.attempts == 2
    assert model.calls("!500") == 2


def test_max_retry_s_bounds_the_total_time(model):
    client = client_for(model, max_attempts=100, backoff_base_s=0.2, backoff_cap_s=0.2, max_retry_s=1.0)
    client._rand = lambda: 1.0  # deterministic backoff of exactly 0.2 s
    started = time.monotonic()
    with pytest.raises(ModelError):
        client.chat(ask("!500 always"))
    assert time.monotonic() - started < 2.0
    assert 3 <= model.calls("!500") <= 7  # about 1 s / 0.2 s, never 100


def test_a_retry_after_beyond_the_budget_gives_up_at_once():
    with FakeModel(retry_after="30") as server:
        client = client_for(server, max_retry_s=2.0)
        with pytest.raises(ModelError, match="HTTP 429"):
            client.chat(ask("!429 too long"))
        assert server.calls() == 1


def test_a_hang_is_a_timeout_error_after_each_attempt(model):
    with pytest.raises(ModelError) as err:
        client_for(model, max_attempts=2).chat(ask("!hang"))
    assert err.value.kind == "timeout" and model.calls("!hang") == 2


@pytest.mark.parametrize("marker", ["!badjson", "!nochoices"])
def test_an_unusable_body_is_a_parse_error_not_retried(model, marker):
    with pytest.raises(ModelError) as err:
        client_for(model).chat(ask(marker))
    assert err.value.kind == "parse" and model.calls(marker) == 1


def test_an_error_body_echoing_the_key_is_redacted(model):
    with pytest.raises(ModelError) as err:
        client_for(model).chat(ask("!echoauth"))
    assert model.calls("!echoauth") == 1  # 401 is not retried
    assert model.seen[0].authorization == f"Bearer {SENTINEL}"  # the server did get (and echo) the key
    assert SENTINEL not in str(err.value) and REDACTED in str(err.value)


def test_a_dead_endpoint_is_a_transport_error():
    with FakeModel() as server:
        url = server.base_url
    client = ChatClient(
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
