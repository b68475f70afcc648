"""Run the real service on 127.0.0.1 for a test: in a thread (to capture its logs and spans) or as a
separate `python -m <package> serve` process (as it runs in production), on a version directory
(usually the framework's toy app, `testing.toy.write_version`, pointed at `testing.fake_model`)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, timeout: float = 30.0, process: subprocess.Popen | None = None, probe: str = "/readyz"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}{probe}", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready in {timeout} s")


@contextlib.contextmanager
def in_thread(asgi_app, ready: bool = True) -> Iterator[str]:
    """uvicorn serving `asgi_app` in a thread of this process; yields its base URL once it is ready
    (`ready=False`: once it is alive, for a server that is not meant to become ready)."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, probe="/readyz" if ready else "/healthz")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def in_process(
    package: str, source: Path, alias: str, log: Path, python: str = sys.executable, **env: str
) -> Iterator[str]:
    """`python -m <package> serve` in its own process; yields its base URL; SIGTERM at the end."""
    port = free_port()
    full_env = {**os.environ, "APP_MODEL_ALIAS": alias, "APP_VERSION_SOURCE": str(source), **env}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [python, "-m", package, "serve", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
            env=full_env, cwd=source,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process=proc)
        yield url
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples `name` on `url`/metrics whose labels include `labels`."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
