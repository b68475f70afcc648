"""The canary analysis' PromQL, proven on a real Prometheus scraping real servers of different versions.

One bake; the framework's toy app (a `reply` flow: a `label` prompt with an output schema, then an
`echo`) in version directories that differ in their greeting, model or prices; each track a real
`<project> serve` process on its fake model; Debian's `prometheus` scraping every process each second,
each target labelled with its `track` and its scenario `group` (what a PodMonitor does with the pods'
labels in the cluster). Two stable processes mirror half of their answers to a canary's port over
HTTP (`SHADOW_URL`), as the stable pods do to the canary Service. Traffic goes through a small
weighted router on loopback (as the Gateway's HTTPRoute splits it: about 90/10 between each stable and
its canaries, smooth weighted round-robin), then each check of the project's own `serving/analysis.py`, rendered for a scenario,
is asked of Prometheus' HTTP API, and `canary analyze --prometheus` decides from the same queries.

    group  canary                                          expected
    a      same app, another greeting (stable-a mirrors)   every check 1
    b      labels everything "bad" (stable-b mirrors)      agreement 0
    e      its model fails every 20th call: ~10 % 5xx      error-rate 0
    s      its model takes 0.3 s a call                    latency-p95 0
    x      answers outside the schema, 10x the price       schema-valid 0, cost-per-answer 0
    -      min_requests above the traffic                  no sample at all (never a pass)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import yaml

from tests.baked import fake_model_module, free_port, private_project
from tests.bakery import project_env

pytestmark = [pytest.mark.slow, pytest.mark.long]

CANARY = {"min_requests": 20, "min_shadow_samples": 10, "latency_p95_margin_s": 0.3}  # a loaded CI machine
PRICES = {"input_usd_per_1m_tokens": 1.0, "output_usd_per_1m_tokens": 2.0}
STABLE_REQUESTS, CANARY_REQUESTS = 180, 24  # per process: ~90/10
WINDOW = "1m"
ROUNDS = 6
TEXTS = ("a good lamp", "a bad chair", "good service", "the sofa is late")
CHECKS = ("error-rate", "latency-p95", "cost-per-answer", "schema-valid", "agreement")
# group -> the checks that fail (0); every other check passes (1).
EXPECTED = {
    "a": set(),
    "b": {"agreement"},
    "e": {"error-rate"},
    "s": {"latency-p95"},
    "x": {"schema-valid", "cost-per-answer"},
}
# group -> the stable track it is judged against (the one that mirrors to it, for b).
STABLE_OF = {"a": "a", "b": "b", "e": "a", "s": "a", "x": "a"}
WRITE_VERSIONS = """
import json, sys
from pathlib import Path
from {pkg}.testing import toy
from {pkg}.serving.analysis import checks
from dataclasses import replace
from {pkg}.settings import load
for name, spec in json.loads(sys.argv[1]).items():
    toy.write_version(Path(sys.argv[2]), Path(sys.argv[3]) / name, spec["url"], spec["greeting"], **spec["sections"])
config = load(Path(sys.argv[3]) / "canary-a" / "params.yaml").canary
strict = replace(config, min_requests=10**6)
print(json.dumps([{{c.name: c.query for c in checks(cfg)}} for cfg in (config, strict)]))
"""


def answers(fake, label: Callable[[str], str]):
    """The toy app's fake model: `label` -> {"label": label(text)}, `echo` -> the text."""

    def answer(request) -> str:
        if "label" in request.fields:
            return json.dumps({"label": label(request.content)})
        return fake.echo(request)

    return answer


def good(text: str) -> str:
    return "good" if "good" in text else "bad"


@contextlib.contextmanager
def processes(specs: dict[str, tuple[list[str], dict[str, str], Path, str]], project: Path) -> Iterator[None]:
    """Start every process at once (name -> argv, env, cwd, ready URL), wait until each is ready,
    stop them all at the end."""
    procs = {}
    try:
        for name, (argv, env, cwd, _) in specs.items():
            with (cwd / f"{name}.log").open("w") as out:
                procs[name] = subprocess.Popen(
                    argv, cwd=cwd, env=project_env(project, **env), stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        deadline = time.monotonic() + 60
        for name, (_, _, cwd, ready) in specs.items():
            while True:
                log = cwd / f"{name}.log"
                assert procs[name].poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
                with contextlib.suppress(requests.RequestException):
                    if requests.get(ready, timeout=1).status_code == 200:
                        break
                assert time.monotonic() < deadline, f"{name} not ready:\n{log.read_text()[-3000:]}"
                time.sleep(0.1)
        yield
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def weighted_router(weights: Mapping[str, int]) -> Iterator[str]:
    """A loopback HTTP router that forwards each request to one backend (base URL -> weight) by smooth
    weighted round-robin, as a Gateway splits a route's traffic by its backendRefs' weights. Yields
    its own base URL."""
    lock = threading.Lock()
    current = dict.fromkeys(weights, 0)
    total = sum(weights.values())

    def pick() -> str:
        with lock:  # nginx's smooth weighted round-robin: exact shares, interleaved
            for backend, weight in weights.items():
                current[backend] += weight
            chosen = max(current, key=lambda b: current[b])
            current[chosen] -= total
            return chosen

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            answer = requests.post(pick() + self.path, data=body, headers=headers, timeout=30)
            self.send_response(answer.status_code)
            self.send_header("Content-Type", answer.headers.get("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: object) -> None:
            pass

    class Router(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 128  # the default listen backlog (5) resets connections under 16 callers

    router = Router(("127.0.0.1", 0), Forward)
    thread = threading.Thread(target=router.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{router.server_address[1]}"
    finally:
        router.shutdown()
        router.server_close()


def drive(url: str, requests_: range) -> list[int]:
    """POST /v1/reply to `url` once for each i of `requests_`, 16 at a time; their statuses."""

    def send(i: int) -> int:
        return requests.post(f"{url}/v1/reply", json={"text": TEXTS[i % len(TEXTS)]}, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(send, requests_))


def instant(prometheus: str, query: str) -> list[float]:
    response = requests.get(f"{prometheus}/api/v1/query", params={"query": query}, timeout=10)
    assert response.status_code == 200, response.text
    return [float(sample["value"][1]) for sample in response.json()["data"]["result"]]


def requests_total(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("llm_requests_total{"))


def test_the_analysis_queries_judge_real_canaries_on_a_real_prometheus(tmp_path: Path):
    assert shutil.which("prometheus"), "prometheus not installed (make tools: Debian's prometheus package)"
    project = private_project(tmp_path / "bake")
    package = next((project / "src").glob("*/__main__.py")).parent.name
    fake = fake_model_module(project)
    models = {
        "good": fake.FakeModel(answers(fake, good)),
        "bad": fake.FakeModel(answers(fake, lambda text: "bad")),
        "errors": fake.FakeModel(answers(fake, good), error_every=20),  # 2 calls an answer: ~10 % fail
        "slow": fake.FakeModel(answers(fake, good), latency_s=0.3),  # 2 calls: p95 ~0.6 s, far past 0.3 s
        "off-schema": fake.FakeModel(answers(fake, lambda text: "maybe")),
    }
    with contextlib.ExitStack() as stack:
        for model in models.values():
            stack.enter_context(model)
        versions = tmp_path / "versions"
        ports = {name: free_port() for name in ("stable-a", "stable-b", *(f"canary-{g}" for g in EXPECTED))}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        pricey = {k: 10 * v for k, v in PRICES.items()}
        specs = {
            "stable-a": ("good", "Hello", PRICES),
            "stable-b": ("good", "Hello", PRICES),
            "canary-a": ("good", "Hi", PRICES),
            "canary-b": ("bad", "Hi", PRICES),
            "canary-e": ("errors", "Hi", PRICES),
            "canary-s": ("slow", "Hi", PRICES),
            "canary-x": ("off-schema", "Hi", pricey),
        }
        # The stables keep each model call to one attempt, as the canaries do: `error_every` is a 400.
        serve = {"max_attempts": 1, "shadow_max_inflight": 32}
        layout = {
            name: {
                "url": models[model].base_url,
                "greeting": greeting,
                "sections": {"model": prices, "canary": CANARY, "serve": serve},
            }
            for name, (model, greeting, prices) in specs.items()
        }
        written = subprocess.run(
            [str(project / ".venv" / "bin" / "python"), "-c",
             WRITE_VERSIONS.format(pkg=package), json.dumps(layout), str(project), str(versions)],
            cwd=project, env=project_env(project), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert written.returncode == 0, written.stderr
        queries, strict = json.loads(written.stdout)
        assert tuple(queries) == CHECKS

        prometheus_port = free_port()
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        targets = [
            {"targets": [f"127.0.0.1:{port}"], "labels": {"track": name.split("-")[0], "group": name.split("-")[1]}}
            for name, port in ports.items()
        ]
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                  "scrape_configs": [{"job_name": "llm-app", "static_configs": targets}]}  # fmt: skip
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        python = str(project / ".venv" / "bin" / "python")
        launch = {}
        for name, port in ports.items():
            env = {"APP_MODEL_ALIAS": "candidate" if name.startswith("canary") else "champion",
                   "APP_VERSION_SOURCE": str(versions / name)}  # fmt: skip
            if name.startswith("stable"):
                env.update(SHADOW_FRACTION="0.5", SHADOW_URL=url[f"canary-{name[-1]}"])
            argv = [python, "-m", package, "serve", "--port", str(port)]
            launch[name] = (argv, env, versions / name, f"{url[name]}/readyz")
        launch["prometheus"] = (
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
            {}, tmp_path, f"{prometheus}/-/ready",
        )  # fmt: skip
        stack.enter_context(processes(launch, project))

        # One answer each first, so that every series exists before the measured traffic: increase()
        # cannot count what happened before a series' first scrape.
        for name in ports:
            assert requests.post(f"{url[name]}/v1/reply", json={"text": "good"}, timeout=10).status_code == 200
        deadline = time.monotonic() + 20
        while instant(prometheus, 'count(llm_requests_total{status="200"} > 0)') != [len(ports)]:
            assert time.monotonic() < deadline, "Prometheus did not scrape every server"
            time.sleep(0.2)

        # Spread over several scrapes: a series born during the traffic (the first 5xx, the first
        # comparison with a new version) loses what came before its first scrape to increase().
        weights = {url[name]: STABLE_REQUESTS if "stable" in name else CANARY_REQUESTS for name in ports}
        router = stack.enter_context(weighted_router(weights))
        total_requests = sum(weights.values())
        statuses = []
        for part in range(ROUNDS):
            statuses += drive(router, range(part, total_requests, ROUNDS))
            time.sleep(1.0)
        assert set(statuses) <= {200, 502} and 0 < statuses.count(502) < CANARY_REQUESTS
        # Every mirror answered, then Prometheus has every answer (the servers' own counts).
        total, previous = -1.0, -2.0
        while total != previous:
            previous, total = total, sum(requests_total(u) for u in url.values())
            time.sleep(0.3)
        deadline = time.monotonic() + 20
        while instant(prometheus, "sum(llm_requests_total)") != [total]:
            assert time.monotonic() < deadline, "Prometheus did not catch up with the servers"
            time.sleep(0.2)

        def results(group: str, checks: dict[str, str] = queries) -> dict[str, list[float]]:
            """Each check's samples for the canary of `group` (the placeholders as analysis.render fills them)."""
            canary = f'track="canary", group="{group}"'
            stable = f'track="stable", group="{STABLE_OF.get(group, "a")}"'
            return {
                name: instant(prometheus, query.replace("{canary}", canary).replace("{stable}", stable)
                              .replace("{window}", WINDOW))
                for name, query in checks.items()
            }  # fmt: skip

        found = {group: results(group) for group in EXPECTED}
        for group, failing in EXPECTED.items():
            expected = {name: [0.0] if name in failing else [1.0] for name in CHECKS}
            assert found[group] == expected, (group, found)

        # Too little traffic is no sample, never a pass: fewer answers than min_requests, or none at all.
        nothing: dict[str, list[float]] = {name: [] for name in CHECKS}
        assert results("a", strict) == nothing
        assert results("none") == nothing

        # The project's CLI asks the same queries and decides: promote, rollback naming the check.
        def analyze(group: str) -> tuple[int, dict]:
            argv = [python, "-m", package, "canary", "analyze", "--prometheus", prometheus, "--window", WINDOW,
                    "--canary-match", f'track="canary", group="{group}"',
                    "--stable-match", f'track="stable", group="{STABLE_OF[group]}"',
                    "--params", str(versions / f"canary-{group}" / "params.yaml"), "--json"]  # fmt: skip
            done = subprocess.run(
                argv, cwd=project, env=project_env(project), capture_output=True, text=True, check=False
            )
            return done.returncode, json.loads(done.stdout)

        code, decision = analyze("a")
        assert (code, decision["verdict"]) == (0, "promote"), decision
        code, decision = analyze("e")
        assert (code, decision["verdict"], decision["failing"]) == (1, "rollback", ["error-rate"]), decision
