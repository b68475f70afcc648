"""The embedded model: a real llama.cpp server on loopback, started and always stopped."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import requests

# `make setup-dev` (CI's lint/unit job) skips the llama.cpp build; `make setup` installs it.
pytest.importorskip("llama_cpp", reason="the embedded model is installed by `make setup`")

from {{ cookiecutter.package }}.app import App, connect
from {{ cookiecutter.package }}.local_model import embedded_server, model_path
from {{ cookiecutter.package }}.prompts import load_all
from {{ cookiecutter.package }}.settings import load
from {{ cookiecutter.package }}.versions import POLICIES_FILE, load_policies

pytestmark = pytest.mark.model


def test_the_weights_ship_in_a_package():
    path = model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_server_answers_on_loopback_and_is_gone_afterwards(tmp_path):
    with embedded_server(log_dir=tmp_path) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert requests.get(f"{base_url}/models", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/models", timeout=2)


def test_server_stops_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), embedded_server(log_dir=tmp_path) as base_url:
        raise RuntimeError("boom")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/models", timeout=2)


def test_sigterm_stops_the_server_too(tmp_path):
    """DVC and CI cancel with SIGTERM: the child server must not be orphaned."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from {{ cookiecutter.package }}.local_model import embedded_server
        with embedded_server(log_dir=Path({str(tmp_path)!r})) as url:
            print(url, flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    base_url = proc.stdout.readline().strip()
    assert requests.get(f"{base_url}/models", timeout=5).status_code == 200
    os.kill(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/models", timeout=2)


def test_app_answers_a_request_deterministically():
    settings = load()
    with connect(settings.model) as client:
        app = App(load_all(), client, settings.model)
        first = app.answer("My order BH-10422 has not arrived yet.", load_policies(POLICIES_FILE))
        again = app.answer("My order BH-10422 has not arrived yet.", load_policies(POLICIES_FILE))
    assert first.intent in {"order_status", "refund", "account", "product", "other"}
    assert [call.prompt for call in first.calls] == ["classify_intent", "extract_order", "answer_policy"]
    # Temperature 0 and a fixed seed make the embedded model deterministic (latencies aside).
    assert (first.decision(), first.text) == (again.decision(), again.text)
