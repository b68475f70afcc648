"""`canary analyze`: the decision from real servers' metrics, and from Prometheus with the analysis' queries."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml
from live_server import in_process, metric, wait_for

from {{ cookiecutter.package }}.cli import main
from {{ cookiecutter.package }}.serving.analysis import checks, render
from {{ cookiecutter.package }}.serving.canary import TrackStats, decide, quantile, stats_from_metrics
from {{ cookiecutter.package }}.serving.observability import Metrics
from {{ cookiecutter.package }}.settings import CanarySettings
from {{ cookiecutter.package }}.testing import toy
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
TRAFFIC = 24
# A wide latency margin: this must not flake on a loaded CI machine; the slow candidate is far beyond it.
THRESHOLDS = {"min_requests": 20, "min_shadow_samples": 10, "latency_p95_margin_s": 0.2}
TEXTS = ("a good lamp", "a bad chair, write to ana@example.com", "good service", "the sofa is late")


# ------------------------------------------------------------------------------------------ pure parts


def test_quantile_matches_prometheus_histogram_quantile():
    buckets = [(0.1, 50.0), (0.5, 100.0), (float("inf"), 100.0)]
    assert quantile(0.95, buckets) == pytest.approx(0.1 + 0.4 * (95 - 50) / 50)
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.95, [(0.1, 0.0), (float("inf"), 10.0)]) == 0.1  # above the last bucket: its bound
    assert quantile(0.95, []) is None and quantile(0.95, [(1.0, 0.0)]) is None


def test_stats_are_read_back_from_the_servers_own_metrics():
    metrics = Metrics("m", "p1")
    for status, seconds in (("200", 0.02), ("200", 0.03), ("502", 0.2), ("422", 0.001)):
        metrics.label(metrics.requests, status=status, route="/v1/reply").inc()
        metrics.label(metrics.latency, route="/v1/reply").observe(seconds)
    metrics.shadow.labels(outcome="agree", shadow_version="v2").inc(3)
    metrics.shadow.labels(outcome="disagree", shadow_version="v2").inc()
    stats = stats_from_metrics(metrics.render()[0].decode())
    assert (stats.requests, stats.errors, stats.error_rate) == (4, 1, 0.25)
    assert stats.shadow == {"agree": 3, "disagree": 1}
    assert 0.1 < stats.p95_s <= 0.25


def _track(requests_: int, errors: int = 0, p95_bucket: float = 0.05, agree: int = 0, disagree: int = 0):
    buckets = ((0.01, 0.0), (p95_bucket, float(requests_)), (float("inf"), float(requests_)))
    return TrackStats(float(requests_), float(errors), buckets, {"agree": float(agree), "disagree": float(disagree)})


@pytest.mark.parametrize(
    ("canary", "verdict", "failing"),
    [
        (_track(100), "promote", []),
        (_track(100, errors=5), "rollback", ["error_rate"]),
        (_track(100, p95_bucket=1.0), "rollback", ["latency_p95"]),
        (_track(100, agree=10, disagree=20), "rollback", ["shadow_agreement"]),
        (_track(100, errors=50, p95_bucket=1.0), "rollback", ["error_rate", "latency_p95"]),
        (_track(10, errors=10), "inconclusive", ["error_rate"]),
    ],
    ids=["good", "errors", "slow", "disagrees", "errors+slow", "too-little-traffic"],
)
def test_decide(canary, verdict, failing):
    decision = decide(_track(100, errors=1), canary, CanarySettings(min_requests=50, min_shadow_samples=20))
    assert decision.verdict == verdict
    assert decision.failing == failing
    if verdict == "rollback":
        assert all(name in decision.reason for name in failing)


def test_every_check_is_a_query_on_both_tracks_with_params_thresholds():
    """The queries themselves are proven on a real Prometheus by the template's tests
    (tests/test_canary_prometheus.py there); here: names, placeholders and thresholds."""
    cfg = CanarySettings(min_requests=37, cost_ratio=1.25, min_schema_valid_rate=0.625, min_shadow_samples=11)
    found = {check.name: check.query for check in checks(cfg)}
    assert list(found) == ["error-rate", "latency-p95", "cost-per-answer", "schema-valid", "agreement"]
    for name, query in found.items():
        assert "{canary}" in query and "{stable}" in query and "[{window}]" in query, name
        assert query.count(">= 37)") == 2, f"{name}: no sample below min_requests on either track"
        rendered = render(query, 'track="c"', 'track="s"', "3m")
        assert "{canary}" not in rendered and "{window}" not in rendered and "[3m]" in rendered
    assert "1.25 *" in found["cost-per-answer"] and ">= bool 0.625" in found["schema-valid"]
    assert ">= 11)" in found["agreement"]


# ------------------------------------------------------------------------- two real servers on loopback


@pytest.fixture(scope="module")
def stable(tmp_path_factory):
    """The stable track: a server process on the champion, whose model behaves."""
    model = FakeModel(toy.answers)
    model.start()
    root = tmp_path_factory.mktemp("stable")
    source = toy.write_version(ROOT, root / "champion", model.base_url, canary=THRESHOLDS)
    with in_process(PACKAGE, source, "champion", root / "server.log") as url:
        assert set(_traffic(url)) == {200}, "the stable track must answer every request"
        yield url, source
    model.stop()


def _traffic(url: str) -> list[int]:
    """TRAFFIC answers from the track at `url`: their HTTP statuses."""
    from concurrent.futures import ThreadPoolExecutor

    def send(i: int) -> int:
        return requests.post(f"{url}/v1/reply", json={"text": TEXTS[i % len(TEXTS)]}, timeout=30).status_code

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(send, range(TRAFFIC)))


@pytest.mark.parametrize(
    ("model", "verdict", "signal"),
    [
        (FakeModel(toy.answers, error_every=3), "rollback", "error_rate"),
        (FakeModel(toy.answers, latency_s=0.2), "rollback", "latency_p95"),
        (FakeModel(toy.always("bad")), "rollback", "shadow_agreement"),
        (FakeModel(toy.answers), "promote", None),
    ],
    ids=["erroring-candidate", "slow-candidate", "disagreeing-candidate", "good-candidate"],
)
def test_canary_analyze_on_live_servers(stable, tmp_path, capsys, model, verdict, signal):
    stable_url, _ = stable
    model.start()
    try:
        source = toy.write_version(ROOT, tmp_path / "candidate", model.base_url, canary=THRESHOLDS)
        # The canary mirrors every request to the stable track: that is where agreement is measured.
        env = {"SHADOW_FRACTION": "1", "SHADOW_URL": stable_url}
        with in_process(PACKAGE, source, "candidate", tmp_path / "canary.log", **env) as canary_url:
            _traffic(canary_url)
            answered = metric(canary_url, "llm_requests_total", status="200")  # only answers are mirrored
            wait_for(lambda: metric(canary_url, "llm_shadow_requests_total") >= answered, what="shadow comparisons")
            code = main(["canary", "analyze", "--stable", stable_url, "--canary", canary_url,
                         "--params", str(source / "params.yaml")])  # fmt: skip
            out = capsys.readouterr().out
            main(["canary", "analyze", "--stable", stable_url, "--canary", canary_url,
                  "--params", str(source / "params.yaml"), "--json"])  # fmt: skip
            decision = json.loads(capsys.readouterr().out)
    finally:
        model.stop()
    assert decision["verdict"] == verdict, out
    assert code == {"promote": 0, "rollback": 1}[verdict]
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"decision: {verdict}"), out
    if signal:
        assert decision["failing"] == [signal], out
        assert signal in last
    else:
        assert decision["failing"] == []


def test_analyze_cannot_read_a_dead_url_and_says_so(stable, capsys):
    stable_url, champion = stable
    code = main(["canary", "analyze", "--stable", stable_url, "--canary", "http://127.0.0.1:9",
                 "--params", str(champion / "params.yaml")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "http://127.0.0.1:9/metrics: cannot read" in err and "Traceback" not in err
    assert main(["canary", "analyze", "--params", str(champion / "params.yaml")]) == 2


def test_too_little_traffic_is_inconclusive_exit_3(stable, capsys):
    stable_url, champion = stable
    params = champion / "params.yaml"
    strict = params.parent / "strict.yaml"
    values = yaml.safe_load(params.read_text())
    values["canary"]["min_requests"] = 1000
    values.setdefault("rollout", {})["load_rate_per_s"] = 10.0  # params refuses a load below min_requests
    strict.write_text(yaml.safe_dump(values))
    code = main(["canary", "analyze", "--stable", stable_url, "--canary", stable_url, "--params", str(strict)])
    assert code == 3 and "decision: inconclusive (too few requests" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------ Prometheus


def _prometheus(answer):
    """A stand-in for Prometheus' instant-query API: `answer(query)` -> the samples' values. The
    queries themselves are proven on a real Prometheus by the template's tests."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)["query"][0]
            seen.append((parts.path, query))
            result = [{"metric": {}, "value": [0, str(v)]} for v in answer(query)]
            body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll: shutdown() waits for the loop's next poll (0.5 s by default), 4 times a suite run.
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return server, seen


@pytest.mark.parametrize(
    ("answer", "code", "verdict", "failing"),
    [
        (lambda q: [1], 0, "promote", []),
        (lambda q: [0] if "llm_shadow_requests_total" in q else [1], 1, "rollback", ["agreement"]),
        (lambda q: [] if "llm_shadow_requests_total" in q else [1], 3, "inconclusive", []),
        (lambda q: [0] if "llm_cost_usd_total" in q else [], 1, "rollback", ["cost-per-answer"]),
    ],
    ids=["all-pass", "one-fails", "one-without-a-sample", "fail-beats-no-sample"],
)
def test_analyze_asks_prometheus_the_analysis_checks(project, capsys, answer, code, verdict, failing):
    server, seen = _prometheus(answer)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        got = main(["canary", "analyze", "--prometheus", url, "--window", "15m", "--json",
                    "--canary-match", 'track="c"'])  # fmt: skip
    finally:
        server.shutdown()
    decision = json.loads(capsys.readouterr().out)
    assert (got, decision["verdict"], decision["failing"]) == (code, verdict, failing), decision
    expected = [render(c.query, 'track="c"', 'app="llm-app", track="stable"', "15m") for c in checks(CanarySettings())]
    assert seen == [("/api/v1/query", q) for q in expected]  # the controller's queries, nothing else
