"""What the HTTP service adds on top of the model: requests/s and p95 added latency.

Bakes the default project (or uses --project), starts the baked project's fake OpenAI-compatible
model server with a fixed latency per call, starts `python -m <package> serve` as its own process on
the framework's toy app (`testing/toy.py`: whatever app the project has, the service code is the
same), and drives its flow, POST /v1/reply, from client threads with keep-alive sessions. One
answer = 2 model calls.

- added latency = client-side latency - the model time the server reports in `Server-Timing: model;dur=`
  (the server's own wall time waiting on the model, HTTP client included): what the service costs.
  Target: p95 under 5 ms.
- throughput is compared with its physical limit here: concurrency / (2 x model latency).

    .venv/bin/python benchmarks/bench_server.py [--requests 300] [--concurrency 1 8] [--model-latency-ms 20]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEXTS = ("a good lamp", "a bad chair, write to ana@example.com", "good service", "the sofa is late")
CALLS = 2  # the toy app's flow: label, then echo


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def server_timing(header: str) -> dict[str, float]:
    """`model;dur=12.3, app;dur=14.0` -> {"model": 12.3, "app": 14.0}."""
    timings = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return timings


def drive(url: str, total: int, concurrency: int) -> tuple[float, list[float], list[float], list[float]]:
    """(wall s, client latency ms, model ms, handler ms) per answer, from Server-Timing for the last two.

    The client is http.client on one keep-alive connection per thread: `requests` alone adds ~1 ms
    per call on this machine, which would be charged to the service.
    """
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    bodies = [json.dumps({"text": t}).encode() for t in TEXTS]
    counter = iter(range(total))
    lock = threading.Lock()
    client_ms: list[float] = []
    model_ms: list[float] = []
    app_ms: list[float] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                started = time.perf_counter()
                conn.request("POST", "/v1/reply", bodies[i % len(bodies)], {"Content-Type": "application/json"})
                response = conn.getresponse()
                payload = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
                timing = server_timing(response.getheader("server-timing") or "")
                with lock:
                    client_ms.append(elapsed)
                    model_ms.append(timing["model"])
                    app_ms.append(timing["app"])
        finally:
            conn.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return time.perf_counter() - started, client_ms, model_ms, app_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a baked project with .venv (default: bake one)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--model-latency-ms", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        project = args.project
        if project is None:
            from tests.bakery import bake, link_venv

            project = bake(Path(tmp) / "bake")
            link_venv(project)
        project = project.resolve()
        sys.path.insert(0, str(project / "tests"))
        sys.path.insert(0, str(project / "src"))
        in_process = importlib.import_module("live_server").in_process  # the baked project's test helper

        package = project.name.replace("-", "_")
        fake = importlib.import_module(f"{package}.testing.fake_model")
        toy = importlib.import_module(f"{package}.testing.toy")
        model = fake.FakeModel(toy.answers, latency_s=args.model_latency_ms / 1000)
        model.start()
        source = toy.write_version(project, Path(tmp) / "version", model.base_url)
        floor_ms = CALLS * args.model_latency_ms
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} CPUs, load average {load} (p95 columns include CPU contention)")
        print(f"fake model: {args.model_latency_ms:g} ms per call, {CALLS} calls per answer (floor {floor_ms:g} ms)")
        print(f"{'conc':>4} {'req/s':>8} {'limit':>8} {'ratio':>6} {'p50 ms':>8} {'p95 ms':>8} "
              f"{'model p95':>9} {'added p50':>9} {'added p95':>9} {'in-handler p95':>14}")  # fmt: skip
        try:
            python = str(project / ".venv" / "bin" / "python")
            with in_process(package, source, "champion", Path(tmp) / "server.log", python=python) as url:
                drive(url, 30, 2)  # warm-up: imports, connection pools
                for concurrency in args.concurrency:
                    wall, client_ms, model_ms, app_ms = drive(url, args.requests, concurrency)
                    added = [c - m for c, m in zip(client_ms, model_ms, strict=True)]
                    handler = [a - m for a, m in zip(app_ms, model_ms, strict=True)]
                    rps = len(client_ms) / wall
                    limit = concurrency * 1000 / floor_ms
                    print(
                        f"{concurrency:>4} {rps:>8.1f} {limit:>8.1f} {rps / limit:>6.2f} "
                        f"{statistics.median(client_ms):>8.2f} {percentile(client_ms, 0.95):>8.2f} "
                        f"{percentile(model_ms, 0.95):>9.2f} {statistics.median(added):>9.2f} "
                        f"{percentile(added, 0.95):>9.2f} {percentile(handler, 0.95):>14.2f}"
                    )
        finally:
            model.stop()
    print(f"limit = concurrency / ({CALLS} x model latency): the rate if the service added nothing.")
    print("added = client latency - model time reported by the server (Server-Timing); target p95 < 5 ms.")
    print("in-handler = the answer handler's own work (render, parse, log, metrics): added minus HTTP + framework.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
