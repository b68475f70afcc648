"""What production capture adds to an answer, and that a slow disk adds nothing: the same service
with capture off (CAPTURE_FRACTION 0), on (1.0: every answer recorded) and on with a hung disk (the
writer thread's write(2) blocks until the end of the round, so the queue fills and records drop).

The default project, baked, serving the framework's toy app (`testing/toy.py`: POST /v1/reply makes
2 model calls) against the fake model on 127.0.0.1. Each answer is one call of the ASGI app in this
process, timed from the call to its return (the capture is queued inside it, before the response
leaves), less the time the service waited on the model (`Server-Timing: model;dur=`): the service's
own work per answer. Configurations take turns round by round (fresh service each), so a change in
the machine's load falls on all three alike. Also timed alone: the capture call itself (redaction,
the record, JSON, the queue), the added cost exactly. Target: < 1 ms added at p95; a hung disk adds
nothing and loses only what passes `capture.max_queue` (counted).

    .venv/bin/python benchmarks/bench_capture.py [--answers 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MAX_QUEUE = 200  # small, so that a hung disk fills it within a round
TEXT = b'{"text": "a good lamp; write to ana.lopez@example.com or call +49 151 2345 6789"}'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def answer(app: Any) -> float:
    """One POST /v1/reply through the ASGI app; the service's own ms (total less the model's)."""
    sent: list[dict] = []
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": TEXT, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "POST", "path": "/v1/reply", "client": ("127.0.0.1", 1),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(TEXT)).encode())],
    }  # fmt: skip
    started = time.perf_counter()
    await app(scope, receive, send)
    total = (time.perf_counter() - started) * 1000
    head = dict(sent[0]["headers"])
    assert sent[0]["status"] == 200, sent
    timing = dict(part.strip().split(";dur=") for part in head[b"server-timing"].decode().split(","))
    return total - float(timing["model"])


def run(project: Path, source: Path, env: dict[str, str], answers: int, hang: bool) -> dict[str, Any]:
    # The baked project's package (on sys.path once baked): imported by name, as mypy cannot see it.
    server = importlib.import_module("support_bot.serving.server")
    own: list[float] = []
    capture_ms: list[float] = []
    release = threading.Event()
    with server.open_service("champion", str(source), env) as service:
        if service.capture is not None:
            timed = service._capture

            def timing(*args: Any) -> None:
                started = time.perf_counter()
                timed(*args)
                capture_ms.append((time.perf_counter() - started) * 1000)

            service._capture = timing
            if hang:
                write: Callable[[int, bytes], int] = service.capture.writer._write_fd

                def hung(fd: int, data: bytes) -> int:
                    release.wait()
                    return write(fd, data)

                service.capture.writer._write_fd = hung

        async def drive() -> None:
            app = server.create_app(service)
            for _ in range(20):  # warm-up: the model client's pool, first imports
                await answer(app)
            gc.disable()
            try:
                for _ in range(answers):
                    own.append(await answer(app))
            finally:
                gc.enable()
                release.set()
                await service.stop()

        asyncio.run(drive())
        metrics = service.runner.metrics.registry
        dropped = metrics.get_sample_value("llm_capture_records_total", {"kind": "answer", "outcome": "dropped"})
    return {"own": own, "capture": capture_ms, "dropped": int(dropped or 0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=1000, help="answers per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from tests.bakery import bake, link_venv

    with tempfile.TemporaryDirectory(prefix="bench-capture-") as name:
        tmp = Path(name)
        project = bake(tmp / "ours")
        link_venv(project)
        sys.path.insert(0, str(project / "src"))
        toy = importlib.import_module("support_bot.testing.toy")
        fake_model = importlib.import_module("support_bot.testing.fake_model")

        configs = {
            "off (fraction 0)": ({"CAPTURE_FRACTION": "0"}, False),
            "on (fraction 1.0)": ({"CAPTURE_FRACTION": "1"}, False),
            "on, hung disk": ({"CAPTURE_FRACTION": "1"}, True),
        }
        results: dict[str, dict[str, Any]] = {k: {"own": [], "capture": [], "dropped": 0} for k in configs}
        with fake_model.FakeModel(toy.answers) as model:
            source = toy.write_version(project, tmp / "v", model.base_url, capture={"max_queue": MAX_QUEUE})
            for i in range(args.rounds):
                for k, (label, (env, hang)) in enumerate(configs.items()):
                    where = {**env, "CAPTURE_DIR": str(tmp / f"captures-{i}-{k}")}
                    got = run(project, source, where, args.answers, hang)
                    for key in ("own", "capture"):
                        results[label][key] += got[key]
                    results[label]["dropped"] += got["dropped"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load}; {args.rounds} rounds x {args.answers} answers each")
    print("| capture | service's own ms p50 | p95 | p95 vs off | capture call ms p50 | p95 | answers dropped |")
    print("|" + " --- |" * 7)
    off = percentile(results["off (fraction 0)"]["own"], 0.95)
    for label, got in results.items():
        p95 = percentile(got["own"], 0.95)
        cap = got["capture"]
        capture = f"{percentile(cap, 0.5):.3f} | {percentile(cap, 0.95):.3f}" if cap else "- | -"
        print(
            f"| {label} | {percentile(got['own'], 0.5):.3f} | {p95:.3f} | {p95 - off:+.3f} ms ({p95 / off:.2f}x) "
            f"| {capture} | {got['dropped']} of {len(got['own'])} |"
        )
    print(
        f"own = the ASGI call less the model's time (Server-Timing); target: capture adds < 1 ms at p95, and a hung "
        f"disk adds nothing (it drops what passes capture.max_queue = {MAX_QUEUE}, counted)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
