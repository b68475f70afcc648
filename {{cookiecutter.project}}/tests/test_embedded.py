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

from {{ cookiecutter.package }}.app.embedded import embedded_server, model_path
from {{ cookiecutter.package }}.app.prompts import load_all
from {{ cookiecutter.package }}.app.runtime import Caller, client_chat, connect
from {{ cookiecutter.package }}.settings import load

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
        from {{ cookiecutter.package }}.app.embedded import embedded_server
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


def test_every_prompt_answers_deterministically():
    settings = load()
    prompts = load_all()
    with connect(settings.model) as client:
        call = Caller(prompts, client_chat(client, settings.model))
        for prompt in prompts.values():
            variables = {v: "My order BH-10422 has not arrived yet." for v in prompt.variables}
            first, again = call(prompt.id, variables), call(prompt.id, variables)
            assert first.text.strip(), prompt.id
            # Temperature 0 and a fixed seed make the embedded model deterministic (latencies aside).
            assert first.text == again.text, prompt.id
            if prompt.output_schema is not None:
                assert first.data is not None, f"{prompt.id}: the grammar must give JSON: {first.text!r}"
