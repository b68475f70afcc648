"""Property-based: whatever a client sends, the service answers 2xx or 4xx with a JSON body that
says what was wrong - never a 5xx. The canary and the alerts read the 5xx rate, so no caller's
mistake may move it.

The real server (uvicorn on 127.0.0.1, the framework's toy app, the fake model) gets generated
bodies on every answer route: JSON of any shape and type, the flow's and the prompts' requests with
right and wrong types, texts with lone surrogates (escaped, or raw as invalid UTF-8), NaN and
Infinity, deep nesting, raw bytes, bodies around the size cap, sent whole or chunked.
Derandomized: CI sees the same examples every run.
"""

import json
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live_server import in_thread

from {{ cookiecutter.package }}.serving.server import create_app, open_service
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
MAX_BODY = 2048
PROPERTY = settings(
    max_examples=1000,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# No "!": in a message it would pick a fault of the fake model (a 5xx that is the model's, not the caller's).
TEXT = st.text(st.characters(blacklist_characters="!"), max_size=30)
LONE = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
SURROGATE_TEXT = st.builds(lambda a, s, b: a + s + b, TEXT, LONE, TEXT)
STRINGS = TEXT | SURROGATE_TEXT
SCALARS = st.none() | st.booleans() | st.integers() | st.integers(-(10**40), 10**40) | st.floats() | STRINGS
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=4), max_leaves=12
)
# Requests of the right shape half of the time (so they get past the checks to the model), of any
# shape and type otherwise.
WORDS = st.text(st.characters(blacklist_characters="!"), min_size=1, max_size=30)
FLOW_REQUESTS = st.fixed_dictionaries({"text": WORDS}) | st.fixed_dictionaries(
    {"text": JSON | STRINGS}, optional={"extra": JSON}
)
PROMPT_REQUESTS = st.fixed_dictionaries({"variables": st.fixed_dictionaries({"text": WORDS})}) | st.fixed_dictionaries(
    {"variables": JSON | st.dictionaries(st.sampled_from(["text", "other"]), JSON | STRINGS, max_size=2)},
    optional={"extra": JSON},
)


def dumped(value, ascii_only: bool) -> bytes:
    # Escaped (\ud800) or raw: a raw lone surrogate becomes bytes that are not UTF-8.
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


ANY_BODY = st.one_of(
    st.builds(dumped, JSON, st.booleans()),
    st.binary(max_size=200),
    st.integers(1, 5000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 5000).map(lambda n: b'{"text":' * n + b'"x"' + b"}" * n),
    st.integers(MAX_BODY - 40, MAX_BODY + 40).map(lambda n: json.dumps({"text": "x" * n}).encode()[:n]),
    st.integers(MAX_BODY - 20, MAX_BODY + 20).map(lambda n: json.dumps({"text": "y" * (n - 12)}).encode()),
)
PROMPT_ROUTES = st.sampled_from(["/v1/run/echo", "/v1/run/label"])
CASES = st.one_of(
    st.tuples(st.just("/v1/reply"), st.builds(dumped, FLOW_REQUESTS, st.booleans())),
    st.tuples(PROMPT_ROUTES, st.builds(dumped, PROMPT_REQUESTS, st.booleans())),
    st.tuples(st.just("/v1/reply") | PROMPT_ROUTES, ANY_BODY),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with FakeModel(toy.answers) as model:
        source = toy.write_version(ROOT, tmp_path_factory.mktemp("server") / "v", model.base_url,
                                   serve={"max_body_bytes": MAX_BODY, "max_input_chars": 500})  # fmt: skip
        with open_service("champion", str(source), {}) as service, in_thread(create_app(service)) as url:
            yield url


@PROPERTY
@given(case=CASES, chunked=st.booleans())
def test_no_request_body_gives_a_5xx(server, case, chunked):
    route, body = case
    half = len(body) // 2
    data = iter([body[:half], body[half:]]) if chunked else body  # an iterator goes out chunked
    response = requests.post(f"{server}{route}", data=data, headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code < 500, (route, body[:120], response.text[:300])
    assert response.status_code in (200, 413, 422), (route, body[:120], response.text[:300])
    if response.status_code != 200:
        problem = response.json()
        assert problem["error"] in ("too_large", "invalid_request") and len(problem["detail"]) < 400
