"""What the HTTP service adds on top of the model, and how much it holds at once: today's service
against the one before it (BASELINE_REF, a thread per waiting request), measured in the same run.

Both are the default project, baked (ours from this tree, the baseline from `git archive
BASELINE_REF`), serving the framework's toy app (`testing/toy.py`: POST /v1/reply makes 2 model
calls) with `python -m support_bot serve` as its own process. The model is a fake OpenAI-compatible
server in a process of its own (asyncio, so that it holds any number of calls itself) that answers
after a fixed latency and counts the calls it holds at once. The client is asyncio too: one
keep-alive connection per concurrent caller.

For each load (concurrency, model latency):
- answers/s, against the limit here: concurrency / (2 x model latency);
- added latency = client latency - the model time the server reports in `Server-Timing: model;dur=`
  (its own wall time waiting on the model, HTTP client included): what the service costs, as a
  caller sees it (the client's own scheduling on this machine included); in-server = the handler's
  time (`app;dur=`) minus the model's: the service's work alone, HTTP parsing excluded.
  Targets: p95 < 5 ms at concurrency 8, < 25 ms at concurrency 1,000;
- model calls in flight at once (at the fake model: the capacity), the server's peak RSS;
- GET /healthz, /readyz and /metrics latency while that load runs (a probe every 100 ms; a probe
  that takes longer than 10 s counts as a timeout - the kubelet's would fail at 2 s);
- the server's CPU time per answer (its own process: user + system), whose inverse is what one
  process can answer per second whatever the model.

Each service runs on the packages its own `serve` extra declares (a venv of its own, as in its
container image), on a CPU of its own when the machine has two or more; the client and the fake
model share the others. Callers start spread over one answer's time (see `drive`); `--burst` starts
them all at once.

    .venv/bin/python benchmarks/bench_server.py [--loads 8:20 1000:1000] [--rounds 3] [--burst] [--no-baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE_REF = "b8ec9528800526584f8e7dde9ff8e23cda6abbe8"  # the last commit with the threaded service (FastAPI)
CALLS = 2  # the toy app's flow: label, then echo
PROBE_TIMEOUT_S = 10.0

# The fake model: a stdlib asyncio HTTP/1.1 server, run as `python -c FAKE_MODEL PORT LATENCY_MS`.
FAKE_MODEL = r"""
import asyncio, json, sys
port, latency = int(sys.argv[1]), float(sys.argv[2]) / 1000
state = {"inflight": 0, "peak": 0, "calls": 0}
ANSWER = {"object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
          "finish_reason": "stop"}], "usage": {"prompt_tokens": 20, "completion_tokens": 3}}

def reply(status, body):
    return b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body)) + body

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await reader.readexactly(length) if length else b""
            if head.startswith(b"GET /stats"):
                writer.write(reply(200, json.dumps(state).encode()))
                state["peak"] = state["inflight"]
            elif head.startswith(b"GET"):
                writer.write(reply(200, b'{"object": "list", "data": []}'))
            else:
                state["inflight"] += 1
                state["calls"] += 1
                state["peak"] = max(state["peak"], state["inflight"])
                await asyncio.sleep(latency)
                state["inflight"] -= 1
                content = '{"label": "good"}' if b"response_format" in body else "hello there"
                ANSWER["choices"][0]["message"]["content"] = content
                writer.write(reply(200, json.dumps(ANSWER).encode()))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=4096)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


def server_timing(header: str) -> dict[str, float]:
    """`model;dur=12.3, app;dur=14.0` -> {"model": 12.3, "app": 14.0}."""
    timings = {}
    for part in header.split(","):
        name, _, duration = part.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return timings


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up in {timeout:g} s")


# ----------------------------------------------------------------------------------------- the client


@dataclass
class Load:
    concurrency: int
    latency_ms: float
    client_ms: list[float] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    app_ms: list[float] = field(default_factory=list)
    probe_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    peak_calls: int = 0
    rss_mib: float = 0.0
    cpu_ms: float = 0.0  # the server's CPU time over the measured load


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, dict, bytes]:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def drive(port: int, load: Load, rounds: int, spread_s: float) -> None:
    """`rounds` answers from each of `load.concurrency` callers, probes every 100 ms meanwhile.

    Caller k starts at k/concurrency of `spread_s`: independent users arrive spread out, and so do
    their next requests. With spread_s = 0 every caller fires in the same millisecond, and the figure
    is the time one event loop takes to take in 1,000 requests at once, not what a request pays."""
    bodies = [b'{"text": "a good lamp"}', b'{"text": "a bad chair, write to ana@example.com"}', b'{"text": "good"}']
    requests = [
        b"POST /v1/reply HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(b), b)
        for b in bodies
    ]

    async def caller(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        await asyncio.sleep(spread_s * k / load.concurrency)
        try:
            for i in range(k, k + rounds):
                started = time.perf_counter()
                status, headers, _ = await exchange(reader, writer, requests[i % len(requests)])
                elapsed = (time.perf_counter() - started) * 1000
                if status != 200:
                    load.errors[str(status)] = load.errors.get(str(status), 0) + 1
                    continue
                load.client_ms.append(elapsed)
                timing = server_timing(headers.get("server-timing", ""))
                load.model_ms.append(timing["model"])
                load.app_ms.append(timing["app"])
        finally:
            writer.close()

    async def prober(done: asyncio.Event) -> None:
        while not done.is_set():
            for path in ("/healthz", "/readyz", "/metrics"):
                started = time.perf_counter()
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    request = b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path.encode()
                    await asyncio.wait_for(exchange(reader, writer, request), PROBE_TIMEOUT_S)
                    writer.close()
                    load.probe_ms.setdefault(path, []).append((time.perf_counter() - started) * 1000)
                except (TimeoutError, OSError):
                    load.errors[f"{path} timeout"] = load.errors.get(f"{path} timeout", 0) + 1
            await asyncio.sleep(0.1)

    done = asyncio.Event()
    probes = asyncio.create_task(prober(done))
    started = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(load.concurrency)))
    load.wall_s = time.perf_counter() - started - spread_s * (load.concurrency - 1) / load.concurrency
    done.set()
    await probes


# ------------------------------------------------------------------------------------------ the runs


def baseline_project(tmp: Path) -> Path:
    """The default project of BASELINE_REF, baked from `git archive`, on the shared venv."""
    from cookiecutter.main import cookiecutter

    from tests.bakery import link_venv

    archive = subprocess.run(["git", "-C", str(ROOT), "archive", BASELINE_REF], capture_output=True, check=True).stdout
    template = tmp / "baseline-template"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(template, filter="data")
    project = Path(cookiecutter(str(template), no_input=True, output_dir=str(tmp / "baseline")))
    link_venv(project)
    return project


def serve_venv(project: Path, tmp: Path) -> Path:
    """A venv with exactly the project's `serve` extra, as its container image has: each service
    runs on what it declares (the baseline on FastAPI, ours on its own extra), not on the shared
    test venv. uv installs from its cache when it has the wheels."""
    import tomllib

    serve = tomllib.loads((project / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    venv = tmp / f"serve-venv-{project.parent.name}"
    uv = str(Path(sys.executable).with_name("uv"))
    subprocess.run([uv, "venv", "-q", "-p", sys.executable, str(venv)], check=True)
    subprocess.run([uv, "pip", "install", "-q", "-p", str(venv / "bin" / "python"), *serve], check=True)
    return venv / "bin" / "python"


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(project: Path, tmp: Path, loads: list[tuple[int, float]], rounds: int, burst: bool) -> list[Load]:
    """Every load against one project's server, each with a fake model of its latency."""
    python = str(project / ".venv" / "bin" / "python")
    server_python = str(serve_venv(project, tmp))
    sys.path.insert(0, str(project / "src"))
    toy = __import__("support_bot.testing.toy", fromlist=["write_version"])
    results = []
    for concurrency, latency_ms in loads:
        model_port, port = free_port(), free_port()
        model = subprocess.Popen([python, "-c", FAKE_MODEL, str(model_port), str(latency_ms)], stdout=subprocess.PIPE)
        source = toy.write_version(project, tmp / f"version-{project.parent.name}-{concurrency}",
                                   f"http://127.0.0.1:{model_port}/v1")  # fmt: skip
        env = {**os.environ, "APP_VERSION_SOURCE": str(source), "LOG_LEVEL": "warning",
               "PYTHONPATH": str(project / "src")}  # fmt: skip
        log = (tmp / f"server-{project.parent.name}-{concurrency}.log").open("wb")
        server = subprocess.Popen([server_python, "-m", "support_bot", "serve", "--port", str(port), "--log-level", "warning"],
                                  cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > 1:  # the server gets a CPU of its own, as a pod would; client and model share the rest
            os.sched_setaffinity(server.pid, cpus[-1:])
            os.sched_setaffinity(model.pid, cpus[:-1])
            os.sched_setaffinity(0, cpus[:-1])
        try:
            assert model.stdout is not None and model.stdout.readline().strip() == b"ready"
            wait_http(f"http://127.0.0.1:{port}/readyz")
            load = Load(concurrency, latency_ms)
            asyncio.run(drive(port, Load(min(concurrency, 8), latency_ms), 4, 0.0))  # warm-up: imports, pools
            urllib.request.urlopen(f"http://127.0.0.1:{model_port}/stats").read()  # resets the peak
            cpu_before = cpu_s(server.pid)
            gc.disable()  # the measuring client's own collector pauses would count as the server's latency
            try:
                asyncio.run(drive(port, load, rounds, 0.0 if burst else CALLS * latency_ms / 1000))
            finally:
                gc.enable()
            load.cpu_ms = (cpu_s(server.pid) - cpu_before) * 1000
            stats = urllib.request.urlopen(f"http://127.0.0.1:{model_port}/stats").read()
            load.peak_calls = __import__("json").loads(stats)["peak"]
            status = Path(f"/proc/{server.pid}/status")
            if status.exists():
                hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM"))
                load.rss_mib = int(hwm.split()[1]) / 1024
            results.append(load)
        finally:
            os.sched_setaffinity(0, cpus)
            server.terminate()
            model.terminate()
            server.wait(timeout=30)
            model.wait(timeout=30)
            log.close()
    sys.path.remove(str(project / "src"))
    for name in [m for m in sys.modules if m.startswith("support_bot")]:
        del sys.modules[name]
    return results


def row(name: str, load: Load) -> str:
    added = [c - m for c, m in zip(load.client_ms, load.model_ms, strict=True)]
    inside = [a - m for a, m in zip(load.app_ms, load.model_ms, strict=True)]
    limit = load.concurrency * 1000 / (CALLS * load.latency_ms)
    rps = len(load.client_ms) / load.wall_s
    probes = [ms for values in load.probe_ms.values() for ms in values]
    timeouts = sum(v for k, v in load.errors.items() if k.endswith("timeout"))
    refused = {k: v for k, v in load.errors.items() if not k.endswith("timeout")}
    probe = f"{statistics.median(probes):.1f} / {max(probes):.0f}" if probes else "-"
    return (
        f"| {name} | {load.concurrency} | {load.latency_ms:g} | {rps:.1f} | {rps / limit:.2f} "
        f"| {percentile(load.client_ms, 0.5):.0f} | {percentile(load.client_ms, 0.95):.0f} "
        f"| {statistics.median(added) if added else float('nan'):.2f} | {percentile(added, 0.95):.2f} "
        f"| {percentile(inside, 0.95):.2f} "
        f"| {load.peak_calls} | {load.rss_mib:.0f} | {load.cpu_ms / max(1, len(load.client_ms)):.2f} "
        f"| {probe} | {timeouts} | {refused or '-'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loads", nargs="+", default=["8:20", "1000:1000"],
                        help="concurrency:model-latency-ms pairs")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="answers per caller")
    parser.add_argument("--burst", action="store_true", help="every caller starts at once")
    parser.add_argument("--no-baseline", action="store_true", help="measure only this tree's service")
    args = parser.parse_args(argv)
    loads = [(int(c), float(ms)) for c, ms in (pair.split(":") for pair in args.loads)]
    sys.path.insert(0, str(ROOT))
    from tests.bakery import bake, link_venv

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per caller, twice
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    with tempfile.TemporaryDirectory(prefix="bench-server-") as name:
        tmp = Path(name)
        ours = bake(tmp / "ours")
        link_venv(ours)
        results = {"ours": measure(ours, tmp, loads, args.rounds, args.burst)}
        if not args.no_baseline:
            results["baseline"] = measure(baseline_project(tmp), tmp, loads, args.rounds, args.burst)
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {load_avg} (client, server and fake model share them)")
    start = "all at once" if args.burst else "spread over one answer's time"
    print(f"{CALLS} model calls per answer; {args.rounds} answers per caller, callers starting {start}; "
          "probes every 100 ms during the load")  # fmt: skip
    print("| service | conc | model ms | answers/s | of limit | p50 ms | p95 ms | added p50 ms | added p95 ms | in-server p95 ms "
          "| model calls in flight | peak RSS MiB | server CPU ms per answer | probe p50 / max ms | probe timeouts | not 200 |")  # fmt: skip
    print("|" + " --- |" * 16)
    labels = {"ours": "async (this tree)", "baseline": f"threads ({BASELINE_REF[:7]})"}
    for i in range(len(loads)):
        for key, runs in results.items():
            print(row(labels[key], runs[i]))
    print("limit = concurrency / (2 x model latency): the rate if the service added nothing.")
    print(
        "added = client latency - model time reported by the server (Server-Timing); targets p95 < 5 ms at 8, < 25 ms at 1,000."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
