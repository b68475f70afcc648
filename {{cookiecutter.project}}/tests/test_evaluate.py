"""`<package> evaluate` end to end, as a process, against a local server that misbehaves on purpose."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from {{ cookiecutter.package }}.cli import main as cli
from {{ cookiecutter.package }}.evaluation.cache import ResponseCache
from {{ cookiecutter.package }}.testing.fake_model import FakeModel

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
SENTINEL = "sk-SENTINEL-e2e-4f1c9a7d2b8e6f30"
KEY_ENV = "TEST_MODEL_API_KEY"

# Braces below are template placeholders, not cookiecutter variables.{% raw %}
TEMPLATE = "id: {id}\ndescription: test\nvariables: [text]\nmessages:\n  - {{role: system, content: '{system}'}}\n  - {{role: user, content: '{{text}}'}}\n"
# {% endraw %}(end of the template placeholders)


def params(url, *, concurrency=4, repeats=1, max_error_rate=0.9, min_pass_rate=0.1):
    return (
        f"model:\n  base_url: {url}\n  name: fake-model\n  api_key_env: {KEY_ENV}\n  max_tokens: 32\n"
        "  connect_timeout_s: 2.0\n  read_timeout_s: 0.5\n"
        f"eval:\n  concurrency: {concurrency}\n  repeats: {repeats}\n  max_error_rate: {max_error_rate}\n"
        "  max_attempts: 2\n  max_retry_s: 5.0\n  cache_dir: .cache/eval\n"
        f"thresholds:\n  min:\n    pass_rate: {min_pass_rate}\n  max:\n    error_rate: 1.0\n"
    )


def setup(root, url, rows, templates=("echo",), **settings):
    """A scratch project: params pointing at the fake server, echo-like templates, a golden set."""
    (root / "prompts").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "prompts" / "schema.json", root / "prompts" / "schema.json")
    for name in templates:
        (root / "prompts" / f"{name}.yaml").write_text(TEMPLATE.format(id=name, system=f"Repeat ({name})."))
    (root / "eval").mkdir(exist_ok=True)
    golden = [{"id": i, "prompt": p, "input": {"text": t}, "expected": e} for i, p, t, e in rows]
    (root / "eval" / "golden.jsonl").write_text("".join(json.dumps(g) + "\n" for g in golden))
    (root / "params.yaml").write_text(params(url, **settings))


def evaluate(root, *args, **popen):
    env = {**os.environ, KEY_ENV: SENTINEL}
    cmd = [sys.executable, "-m", PACKAGE, "evaluate", "--eval-set", "eval/golden.jsonl", *args]
    if popen:
        # Ctrl-C as a terminal sends it: a runner that started the suite in the background hands its
        # children SIGINT ignored (POSIX), and Python then installs no KeyboardInterrupt handler.
        return subprocess.Popen(cmd, cwd=root, env=env, preexec_fn=_default_sigint, **popen)
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=120)


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def results(root):
    return [json.loads(line) for line in (root / "eval" / "results.jsonl").read_text().splitlines()]


def test_the_api_key_reaches_the_server_and_nothing_else(tmp_path):
    rows = [("ok", "echo", "fine", "fine"), ("wrong", "echo", "fine too", "other"), ("down", "echo", "!500 down", "x")]
    with FakeModel() as server:
        setup(tmp_path, server.base_url, rows)
        first = evaluate(tmp_path)
        assert first.returncode == 0, first.stderr
        assert {r["id"] for r in results(tmp_path) if r["error"]} == {"down"}
        # A gateway that echoes the Authorization header in its 401: the run stops on it, and the
        # error it names on stderr and in results.jsonl is scrubbed.
        setup(tmp_path, server.base_url, [("leaky", "echo", "!echoauth", "x")])
        refused = evaluate(tmp_path)
        assert refused.returncode == 2 and "the model endpoint refused the credentials" in refused.stderr
        assert "[REDACTED]" in refused.stderr and "[REDACTED]" in results(tmp_path)[0]["error"]
        assert "Traceback" not in refused.stderr
        assert server.calls() == 1 + 1 + 2 + 1
        assert all(seen.authorization == f"Bearer {SENTINEL}" for seen in server.seen)  # it was really sent
    for output in (first.stdout, first.stderr, refused.stdout, refused.stderr):
        assert SENTINEL not in output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(".cache" in p.parts for p in written) and (tmp_path / "eval" / "report.md").exists()
    for path in written:
        assert SENTINEL.encode() not in path.read_bytes(), path


def test_a_rerun_makes_zero_calls_and_a_template_change_requeries_only_its_examples(tmp_path):
    rows = [(f"{p}-{n}", p, f"{p} text {n}", f"{p} text {n}") for p in ("echo", "shout") for n in range(3)]
    with FakeModel() as server:
        setup(tmp_path, server.base_url, rows, templates=("echo", "shout"))
        assert evaluate(tmp_path).returncode == 0
        assert server.calls() == 6
        first = results(tmp_path)

        server.reset()
        again = evaluate(tmp_path)
        assert again.returncode == 0 and server.calls() == 0
        assert "(0 to the model, 6 cached)" in again.stdout
        assert [r["output"] for r in results(tmp_path)] == [r["output"] for r in first]

        shout = tmp_path / "prompts" / "shout.yaml"
        shout.write_text(shout.read_text().replace("Repeat (shout).", "Repeat it LOUDLY."))
        assert evaluate(tmp_path).returncode == 0
        assert server.calls() == 3 and all(s.content.startswith("shout") for s in server.seen)
        versions = {(r["target"], r["version"]) for r in results(tmp_path)}
        old = {(r["target"], r["version"]) for r in first}
        assert {v for v in versions if v[0] == "echo"} == {v for v in old if v[0] == "echo"}
        assert {v for v in versions if v[0] == "shout"}.isdisjoint(old)

        # The repeat index is in the key: a second repeat is 6 new calls, and going back is free.
        server.reset()
        (tmp_path / "params.yaml").write_text(params(server.base_url, repeats=2))
        assert evaluate(tmp_path).returncode == 0 and server.calls() == 6
        assert sorted((r["id"], r["repeat"]) for r in results(tmp_path)) == sorted(
            (i, k) for i, *_ in rows for k in range(2)
        )
        server.reset()
        (tmp_path / "params.yaml").write_text(params(server.base_url, repeats=1))
        assert evaluate(tmp_path).returncode == 0 and server.calls() == 0


def test_an_unwritable_cache_is_one_clear_error_not_a_hang(tmp_path):
    with FakeModel() as server:
        setup(tmp_path, server.base_url, [("a", "echo", "one", "one"), ("b", "echo", "two", "two")])
        (tmp_path / ".cache").write_text("a file where the cache directory should be")
        run = evaluate(tmp_path)  # before, the worker died silently and this waited forever
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert "eval.cache_dir: cannot write .cache/eval" in run.stderr


def test_check_fails_on_missed_thresholds_while_the_stage_always_writes(tmp_path):
    rows = [("good", "echo", "yes", "yes"), ("bad-1", "echo", "no", "yes"), ("bad-2", "echo", "maybe", "yes")]
    with FakeModel() as server:
        setup(tmp_path, server.base_url, rows, min_pass_rate=0.9)
        stage = evaluate(tmp_path)
        assert stage.returncode == 0, stage.stderr
        metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
        assert metrics["pass_rate"] == pytest.approx(1 / 3) and metrics["error_rate"] == 0.0
        assert metrics["pass_rate_ci_low"] < 1 / 3 < metrics["pass_rate_ci_high"]
        report = (tmp_path / "eval" / "report.md").read_text()
        assert "thresholds missed" in report and "pass_rate = " in report
        failing = report.split("## Failing and errored calls")[1]
        assert "| bad-1 |" in failing and "| bad-2 |" in failing and "| good |" not in failing

        (tmp_path / "eval" / "metrics.json").unlink()
        check = evaluate(tmp_path, "--check")
        assert check.returncode == 1 and "threshold missed: pass_rate" in check.stderr
        assert (tmp_path / "eval" / "metrics.json").exists()


def test_sigint_keeps_finished_results_and_the_rerun_makes_only_the_remaining_calls(tmp_path):
    rows = [(f"r{n:02}", "echo", f"text {n}", f"text {n}") for n in range(16)]
    with FakeModel(latency_s=0.3) as server:
        setup(tmp_path, server.base_url, rows, concurrency=2)
        with open(tmp_path / "out.txt", "w") as out:
            proc = evaluate(tmp_path, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 60
            while sum(s.status == 200 for s in server.seen) < 6 and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 130
        kept = results(tmp_path)
        account = f"{len(kept)} of 16 calls finished: {len(kept)} passed, 0 failed, 0 errors"
        text = (tmp_path / "out.txt").read_text()
        assert f"interrupted, {account}" in text and text.count(account) == 2, text  # one account
        cached = len(ResponseCache(tmp_path / ".cache" / "eval"))
        assert 4 <= len(kept) <= cached < len(rows)
        assert all(r["passed"] for r in kept)
        assert not (tmp_path / "eval" / "metrics.json").exists()  # no numbers from part of the set

        server.reset()
        resumed = evaluate(tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert server.calls() == len(rows) - cached
        assert len(results(tmp_path)) == len(rows) and all(r["passed"] for r in results(tmp_path))


def test_an_aborted_run_gives_one_account_and_no_metrics(tmp_path):
    rows = [(f"e{n:02}", "echo", f"!500 down {n}", "x") for n in range(38)]
    with FakeModel(latency_s=0.05) as server:
        setup(tmp_path, server.base_url, rows, concurrency=8, max_error_rate=0.2)
        (tmp_path / "eval" / "metrics.json").write_text('{"pass_rate": 1.0}\n')  # a previous run's
        (tmp_path / "params.yaml").write_text(
            (tmp_path / "params.yaml").read_text().replace("max_attempts: 2", "max_attempts: 1")
        )
        run = evaluate(tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    written = results(tmp_path)
    errors = sum(r["error"] is not None for r in written)
    assert errors > 7  # 38 * 0.2: the 8th error stops the run; calls in flight then finish too
    account = f"{len(written)} of 38 calls finished: 0 passed, 0 failed, {errors} errors"
    (summary,) = run.stdout.splitlines()
    (error,) = run.stderr.splitlines()
    assert summary.startswith(account) and "no metrics written" in summary
    assert "error rate above eval.max_error_rate=0.2 (at most 7 of 38 calls may fail)" in error and account in error
    assert account in (tmp_path / "eval" / "report.md").read_text()
    assert not (tmp_path / "eval" / "metrics.json").exists()  # the same rule as Ctrl-C


def test_a_refused_key_ends_the_run_at_once_and_is_never_cached(tmp_path):
    rows = [(f"r{n:02}", "echo", f"text {n}", f"text {n}") for n in range(10)]
    with FakeModel(api_key="sk-the-right-one") as server:
        setup(tmp_path, server.base_url, rows, concurrency=1)
        refused = evaluate(tmp_path)
        assert refused.returncode == 2 and server.calls() == 1  # not retried, and no further call
        (error,) = refused.stderr.splitlines()
        assert "the model endpoint refused the credentials (http: HTTP 401" in error
        assert "model.api_key_env" in error and "1 of 10 calls finished: 0 passed, 0 failed, 1 errors" in error
        assert not (tmp_path / "eval" / "metrics.json").exists()

        setup(tmp_path, server.base_url, rows, concurrency=4)
        server.reset()
        again = evaluate(tmp_path)
        assert again.returncode == 2 and 1 <= server.calls() <= 4  # at most the calls already in flight

        server.reset()
        env = {**os.environ, KEY_ENV: "sk-the-right-one"}
        cmd = [sys.executable, "-m", PACKAGE, "evaluate", "--eval-set", "eval/golden.jsonl"]
        fixed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert fixed.returncode == 0, fixed.stderr
        assert server.calls() == len(rows)  # nothing of the refused runs was cached


def test_the_key_in_dotenv_is_used_and_the_environment_wins(tmp_path):
    rows = [("a", "echo", "one", "one"), ("b", "echo", "two", "two")]
    from_file = "sk-from-dotenv-7d2b8e6f30"
    with FakeModel(api_key=from_file) as server:
        setup(tmp_path, server.base_url, rows)
        (tmp_path / ".env").write_text(f'# local secrets\n{KEY_ENV}="{from_file}"  # the model key\n')
        env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
        cmd = [sys.executable, "-m", PACKAGE, "evaluate", "--eval-set", "eval/golden.jsonl", "--no-cache"]
        used = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert used.returncode == 0, used.stderr
        assert server.calls() == 2 and all(s.authorization == f"Bearer {from_file}" for s in server.seen)
        server.reset()
        wins = evaluate(tmp_path, "--no-cache")  # KEY_ENV set in the environment: it wins, and is refused here
        assert wins.returncode == 2 and "refused the credentials" in wins.stderr
        assert all(s.authorization == f"Bearer {SENTINEL}" for s in server.seen)
    for output in (used.stdout, used.stderr, wins.stdout, wins.stderr):
        assert from_file not in output and SENTINEL not in output


def _labelled_prompt(prompts: Path):
    """A shipped prompt with an enum in its output schema, its labels, one of them, and the system
    lines naming it: (template path, labels, label, lines to drop); None when no prompt has one."""
    for path in sorted(prompts.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        properties = (data.get("output_schema") or {}).get("properties") or {}
        labels = [str(v) for p in properties.values() if isinstance(p, dict) for v in p.get("enum", [])]
        system = "\n".join(m["content"] for m in data["messages"] if m["role"] == "system")
        for label in labels[:-1]:  # the last is the catch-all the fake model answers when it does not know
            lines = [line for line in system.splitlines() if re.search(rf"\b{re.escape(label)}\b", line)]
            if lines:
                return path, labels, label, lines
    return None


def test_a_worse_prompt_is_caught_through_the_cli_with_the_fake_model(project):
    """The fake model's golden mode (`python -m <package>.testing.fake_model --golden ...`) answers as
    far as the prompt allows: a prompt that stops naming a label loses examples that need it, and
    only those (a dropped line may name several labels: each of them is gone)."""
    found = _labelled_prompt(project / "prompts")
    if found is None:
        pytest.skip("no shipped prompt has labels for the fake model to miss")
    template, labels, label, lines = found
    cmd = [sys.executable, "-m", f"{PACKAGE}.testing.fake_model", "--golden", "eval/golden.jsonl"]
    fake = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, text=True)
    try:
        url = fake.stdout.readline().strip()
        params = project / "params.yaml"
        text = re.sub(r"(?m)^(  base_url:) .*$", rf"\1 {url}", params.read_text(), count=1)
        params.write_text(re.sub(r"(?m)^(  api_key_env:) .*$", r'\1 ""', text, count=1))
        argv = ["evaluate", "--eval-set", "eval/golden.jsonl", "--no-cache"]
        assert cli(argv) == 0
        before = {r["id"]: r["passed"] for r in results(project)}
        assert all(before.values()), [i for i, ok in before.items() if not ok]

        worse = template.read_text()
        for line in lines:
            worse = worse.replace(line.strip(), "", 1)
        template.write_text(worse)
        system = "\n".join(m["content"] for m in yaml.safe_load(worse)["messages"] if m["role"] == "system")
        gone = [x for x in labels if not re.search(rf"\b{re.escape(x)}\b", system)]
        assert label in gone
        assert cli(argv) == 0
        after = {r["id"]: r["passed"] for r in results(project)}
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    lost = sorted(i for i in before if before[i] and not after[i])
    golden = [json.loads(line) for line in (project / "eval" / "golden.jsonl").read_text().splitlines() if line]
    expected = {g["id"]: json.dumps(g.get("expected", "")) for g in golden}
    needs_gone = sorted(i for i, e in expected.items() if any(f'"{x}"' in e for x in gone))
    assert lost and set(lost) <= set(needs_gone), (gone, lost)
