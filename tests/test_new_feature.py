"""A team's own feature in a bake of `example_app=none`, without touching the framework.

The feature: a product-review extractor (sentiment + the aspects a review talks about, a list).
Added the way the README says - `new prompt`, the template filled in, a dozen golden examples, the
model URL in params.yaml - then the project's own commands: `make repro`, `make test`,
`make lint`, `make gate` on a branch with a worse prompt (exit 1), and `make serve` answering the
feature. The model is a fake endpoint of this test's own (not the project's), which reads the
prompt the way a model does: it only finds the aspects the prompt lists.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.baked import free_port, local_store, private_project, server
from tests.conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.long]
ANSWERS = {"example_app": "none", "model_backend": "openai-compatible", "project": "review-insights"}
ASPECTS = ("battery", "screen", "price", "delivery", "sound")
PROMPT = """\
id: review_insights
description: The sentiment of a product review and the aspects it talks about.
notes: First version.
variables: [review]
messages:
  - role: system
    content: |
      Read the product review. Say whether it is positive, negative or neutral, and list the
      aspects it talks about, from: battery, screen, price, delivery, sound.
      Reply with JSON only.
  - role: user
    content: "{review}"
output_schema:
  type: object
  additionalProperties: false
  properties:
    sentiment: {type: string, enum: [positive, negative, neutral]}
    aspects: {type: array, items: {type: string}}
  required: [sentiment, aspects]
"""
REVIEWS = [
    ("I love it: the battery lasts two days and the screen is sharp.", "positive", ["battery", "screen"]),
    ("Great sound for the price.", "positive", ["sound", "price"]),
    ("The screen cracked within a week. Terrible.", "negative", ["screen"]),
    ("Delivery took a month and the battery was dead on arrival.", "negative", ["delivery", "battery"]),
    ("It does what it says.", "neutral", []),
    ("Average sound, average price.", "neutral", ["sound", "price"]),
    ("Love the screen, hate the battery.", "neutral", ["screen", "battery"]),
    ("Fast delivery, great value for the price!", "positive", ["delivery", "price"]),
    ("Broken on arrival, I want a refund.", "negative", []),
    ("The sound is great but the battery is terrible.", "neutral", ["sound", "battery"]),
    ("Screen is fine.", "neutral", ["screen"]),
    ("Great battery, great screen, great sound.", "positive", ["battery", "screen", "sound"]),
]


def sentiment_of(review: str) -> str:
    low = review.lower()
    good = sum(low.count(w) for w in ("love", "great", "sharp", "fast"))
    bad = sum(low.count(w) for w in ("terrible", "hate", "broken", "cracked", "dead", "refund", "month"))
    return "positive" if good > bad else "negative" if bad > good else "neutral"


def answer(system: str, review: str) -> dict:
    """What the fake model says: an aspect is found only when the prompt lists it."""
    listed = [a for a in ASPECTS if a in system]
    return {"sentiment": sentiment_of(review), "aspects": [a for a in listed if a in review.lower()]}


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """The test's own OpenAI-compatible endpoint on 127.0.0.1."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # the readiness probe
            self._send({"object": "list", "data": [{"id": "fake"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            system = "\n".join(m["content"] for m in body["messages"] if m["role"] == "system")
            review = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
            text = json.dumps(answer(system, review))
            self._send(
                {
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(system.split()), "completion_tokens": len(text.split())},
                }
            )

        def _send(self, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def golden_lines() -> str:
    lines = []
    for n, (review, sentiment, aspects) in enumerate(REVIEWS, 1):
        example = {"id": f"review-{n:02}", "prompt": "review_insights", "input": {"review": review}}
        example |= {"expected": {"sentiment": sentiment, "aspects": aspects}, "tags": ["reviews"]}
        lines.append(json.dumps(example))
    return "\n".join(lines) + "\n"


def git(project: Path, *args: str) -> str:
    return run(project, "git", "-c", "user.name=t", "-c", "user.email=t@t.invalid", *args).stdout


def make(project: Path, *args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    return run(project, "make", "--no-print-directory", *args, check=check, timeout=600, env=env)


def test_a_new_feature_needs_no_framework_file(endpoint, tmp_path):
    project = private_project(tmp_path, **ANSWERS)
    baked = git(project, "rev-parse", "HEAD").strip()
    env = {**local_store(project), "MODEL_API_KEY": "test-key"}

    # The feature, as the README tells a team to add it.
    created = run(project, "review-insights", "new", "prompt", "review_insights", "--variables", "review",
                  "--fields", "sentiment", "--lists", "aspects").stdout  # fmt: skip
    assert "wrote tests/prompts/test_review_insights.py" in created
    written = (project / "tests" / "prompts" / "test_review_insights.py").read_text()
    # The starter's test is what `new prompt` writes (the prompt's name aside; the package is review_insights too).
    for mention in ("prompts/{}.yaml", "new prompt {}", 'PROMPT = "{}"'):
        written = written.replace(mention.format("review_insights"), mention.format("sentiment"))
    assert written == (project / "tests/prompts/test_sentiment.py").read_text()
    stubbed = make(project, "repro", env=env, check=False)
    assert stubbed.returncode != 0 and "todo: a stub to fill in" in stubbed.stdout + stubbed.stderr
    (project / "prompts" / "review_insights.yaml").write_text(PROMPT)
    (project / "eval" / "golden.jsonl").write_text(golden_lines())  # the starter's examples go too
    for starter in ("prompts/sentiment.yaml", "tests/prompts/test_sentiment.py"):
        (project / starter).unlink()
    params = project / "params.yaml"
    # the model's base_url only (the first): judge.base_url stays empty, the judge off
    params.write_text(re.sub(r"(?m)^  base_url: .*$", f"  base_url: {endpoint}", params.read_text(), count=1))

    make(project, "repro", env=env)
    metrics = json.loads((project / "eval" / "metrics.json").read_text())
    assert metrics["examples"] == len(REVIEWS) <= 15 and metrics["pass_rate"] == 1.0
    assert metrics["exact_match_rate"] == metrics["json_schema_rate"] == 1.0
    assert json.loads((project / "models" / "version.json").read_text())["prompts"].keys() == {"review_insights"}
    tests = make(project, "test", env=env)
    assert re.search(r"\d+ passed", tests.stdout) and "failed" not in tests.stdout
    make(project, "lint", env=env)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Review insights")

    # Nothing of the framework was touched: only the files that describe the feature.
    outputs = {"dvc.lock", "data/processed/manifest.json", "models/version.json"}
    outputs |= {
        f"eval/{name}" for name in ("metrics.json", "catalogue.json", "results.jsonl", "report.md", "report.html")
    }
    outputs |= {"eval/plots/latency.json", "eval/plots/tags.json"}
    touched = set(git(project, "diff", "--no-renames", "--name-only", baked, "HEAD").split()) - outputs
    assert touched == {
        "params.yaml", "eval/golden.jsonl", "prompts/review_insights.yaml", "tests/prompts/test_review_insights.py",
        "prompts/sentiment.yaml", "tests/prompts/test_sentiment.py",
    }  # fmt: skip

    # A worse prompt (the aspect list gone) is caught by the gate.
    git(project, "checkout", "-q", "-b", "worse")
    prompt = project / "prompts" / "review_insights.yaml"
    worse = prompt.read_text().replace("talks about, from: battery, screen, price, delivery, sound.", "talks about.")
    assert worse != prompt.read_text()
    prompt.write_text(worse)
    assert make(project, "repro", env=env, check=False).returncode != 0  # below the bars: not registered
    git(project, "commit", "-q", "-am", "Shorter prompt")
    gate = make(project, "gate", "BASE=main", env=env, check=False)
    assert gate.returncode == 1, gate.stdout + gate.stderr
    report = (project / "eval" / "gate.md").read_text()
    assert report.startswith("## ❌ Gate failed") and "Flipped pass → fail" in report

    # The feature, served.
    git(project, "checkout", "-q", "main")
    port = free_port()
    serve = ["make", "--no-print-directory", "serve", f"PORT={port}"]
    with server(serve, f"http://127.0.0.1:{port}/readyz", cwd=project, project=project, env=env):
        review = REVIEWS[0][0]
        response = requests.post(
            f"http://127.0.0.1:{port}/v1/run/review_insights", json={"variables": {"review": review}}, timeout=10
        )
    assert response.status_code == 200, response.text
    assert response.json()["output"] == {"sentiment": "positive", "aspects": ["battery", "screen"]}
