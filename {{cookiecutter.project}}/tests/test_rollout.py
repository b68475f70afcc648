"""The in-cluster rollout: k8s/ is what params.yaml renders, the deploy's verdict, the load generator."""

from __future__ import annotations

import json
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import yaml
from pipeline_outputs import commit_all, register, write_eval_outputs

from {{ cookiecutter.package }}.cli import main
from {{ cookiecutter.package }}.errors import UserError
from {{ cookiecutter.package }}.evaluation.golden import load as load_golden
from {{ cookiecutter.package }}.serving import loadgen, manifests, rollout
from {{ cookiecutter.package }}.settings import SettingsError, parse

ROOT = Path(__file__).resolve().parents[1]


def test_committed_manifests_are_what_params_yaml_renders():
    """Editing params.yaml's rollout or canary section without `rollout render` fails here."""
    rendered = rollout.render(ROOT / "params.yaml", ROOT / "k8s")
    for path, text in rendered.items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name}: run `{{ cookiecutter.project }} rollout render`"


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "k8s", tmp_path / "k8s")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_render_check_catches_drift_and_render_fixes_it(tmp_path, capsys):
    root = _copy(tmp_path)
    params = root / "params.yaml"
    params.write_text(params.read_text().replace("steps: [10, 25, 50, 100]", "steps: [5, 100]"))
    argv = ["rollout", "render", "--params", str(params), "--k8s", str(root / "k8s")]
    assert main([*argv, "--check"]) == 1
    assert "rollout.yaml: differs" in capsys.readouterr().out
    assert main(argv) == 0 and main([*argv, "--check"]) == 0
    strategy = yaml.safe_load((root / "k8s" / "rollout.yaml").read_text())["spec"]["strategy"]["canary"]
    assert [s["setWeight"] for s in strategy["steps"] if "setWeight" in s] == [5, 100]


def test_eval_shards_render_the_indexed_job(tmp_path, capsys):
    """k8s/eval-job.yaml follows eval.shards and eval.cache_url; `render --check` catches it stale."""
    root = _copy(tmp_path)
    params = root / "params.yaml"
    text = params.read_text()
    text = re.sub(r"(?m)^  shards: 1 ", "  shards: 4 ", text)
    text = re.sub(r'(?m)^  cache_url: "" ', '  cache_url: "s3://team-bucket/eval-cache/" ', text)
    params.write_text(text)
    argv = ["rollout", "render", "--params", str(params), "--k8s", str(root / "k8s")]
    assert main([*argv, "--check"]) == 1
    assert "eval-job.yaml: differs" in capsys.readouterr().out
    assert main(argv) == 0 and main([*argv, "--check"]) == 0
    job = yaml.safe_load((root / "k8s" / "eval-job.yaml").read_text())
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    pod = job["spec"]["template"]["spec"]
    evaluate = next(c for c in pod["initContainers"] if c["name"] == "evaluate")
    assert evaluate["args"][evaluate["args"].index("--shard") + 1] == "$(SHARD_INDEX)/4"
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SHARDS_URL"] == "s3://team-bucket/eval-cache/shards/$(COMMIT)"


def test_every_step_is_judged_and_the_alias_moves_last():
    settings = parse((ROOT / "params.yaml").read_text())
    steps = manifests.strategy(settings)["canary"]["steps"]
    weights = [i for i, s in enumerate(steps) if "setWeight" in s]
    assert [steps[i]["setWeight"] for i in weights] == list(settings.rollout.steps)
    for i in weights:  # each weight is judged before the next one is set
        judged = next(s["analysis"] for s in steps[i + 1 :] if "analysis" in s or "setWeight" in s)
        assert {t["templateName"] for t in judged["templates"]} == {"llm-app-load", "llm-app-analysis"}
    assert steps[-1]["analysis"]["templates"] == [{"templateName": "llm-app-promote"}]
    (header,) = [s["setHeaderRoute"] for s in steps if "setHeaderRoute" in s]
    assert header["match"] == [{"headerName": "x-canary", "headerValue": {"exact": "always"}}]


def test_every_check_is_a_metric_and_no_sample_is_never_a_pass():
    settings = parse((ROOT / "params.yaml").read_text())
    (checks, load, promote) = manifests.analysis_templates(settings)
    metrics = checks["spec"]["metrics"]
    assert [m["name"] for m in metrics] == [c.name for c in manifests.checks(settings.canary)]
    for m in metrics:
        query = m["provider"]["prometheus"]["query"]
        assert manifests.CANARY in query and manifests.STABLE in query  # Argo arguments: the tracks' pod hashes
        assert "{canary}" not in query and f"[{settings.rollout.window}]" in query
        # An empty result (too little traffic) meets neither condition: Inconclusive, a pause.
        assert m["successCondition"].startswith("len(result) > 0 &&")
        assert m["failureCondition"].startswith("len(result) > 0 &&")
    (job,) = promote["spec"]["metrics"]
    container = job["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--commit", manifests.arg("commit")]
    assert (
        "loadgen" in load["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_the_promotion_job_moves_champion_to_the_shipped_commits_version(project, monkeypatch, capsys):
    """The last step's Job, its arguments as analysis.yaml has them (the commit filled in as Argo
    would): champion goes to the version registered from that commit, not to the newest candidate."""
    from mlflow import MlflowClient

    write_eval_outputs(project)
    first = commit_all(project, "A")
    name = register(project)["registry"]["model_name"]
    commit_all(project, "B")
    assert register(project)["registry"]["version"] == "2"  # B is the newest: the candidate
    docs = yaml.safe_load_all((ROOT / "k8s" / "analysis.yaml").read_text())
    (job,) = next(d for d in docs if d["metadata"]["name"] == "llm-app-promote")["spec"]["metrics"]
    argv = job["provider"]["job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    argv = [a.replace(manifests.arg("commit"), first).replace("/app/params.yaml", "params.yaml") for a in argv]
    assert main(argv) == 0
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == "1"
    # A commit nothing was registered from (an aborted or foreign image): refused, the alias stays.
    assert main([*argv[:-1], "0" * 40]) == 2
    assert str(MlflowClient().get_model_version_by_alias(name, "champion").version) == "1"


def test_the_load_job_reads_the_services_keys_when_it_asks_for_them(tmp_path, monkeypatch, capsys):
    text = (ROOT / "params.yaml").read_text()
    plain = manifests.analysis_templates(parse(text))[1]
    keyed = manifests.analysis_templates(parse(text.replace('api_keys_env: ""', "api_keys_env: APP_API_KEYS")))[1]

    def env(template: dict) -> dict:
        (container,) = template["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"]["containers"]
        return {e["name"]: e for e in container["env"]}

    assert "APP_API_KEYS" not in env(plain)
    assert env(keyed)["APP_API_KEYS"]["valueFrom"]["secretKeyRef"] == {"name": "llm-app-secrets", "key": "api-keys"}
    params = tmp_path / "params.yaml"
    params.write_text(text.replace('api_keys_env: ""', "api_keys_env: APP_API_KEYS"))
    monkeypatch.delenv("APP_API_KEYS", raising=False)
    assert (
        main(
            ["loadgen", "--params", str(params), "--golden", str(ROOT / "eval" / "golden.jsonl"), "http://127.0.0.1:9"]
        )
        == 2
    )
    assert "APP_API_KEYS holds no key" in capsys.readouterr().err


def test_too_little_load_for_the_minimum_sample_is_refused():
    text = (ROOT / "params.yaml").read_text().replace("load_rate_per_s: 1.0", "load_rate_per_s: 0.1")
    with pytest.raises(
        SettingsError, match=r"params.yaml:\d+: rollout.load_rate_per_s: .* fewer than canary.min_requests"
    ):
        parse(text, "params.yaml")


@pytest.mark.parametrize(
    ("steps", "message"),
    [("[10, 50]", r"rollout.steps\[1\]: the last step must be 100"),
     ("[50, 25, 100]", r"rollout.steps\[1\]: must be more than the step before"),
     ("[]", r"rollout.steps: must name at least one step")],
)  # fmt: skip
def test_bad_steps_are_one_line_naming_the_key(steps, message):
    text = (ROOT / "params.yaml").read_text().replace("steps: [10, 25, 50, 100]", f"steps: {steps}")
    with pytest.raises(SettingsError, match=r"params.yaml:\d+: " + message):
        parse(text, "params.yaml")


def _rollout(phase: str, generation: int = 2, observed: int = 2, **status: object) -> dict:
    return {
        "metadata": {"generation": generation},
        "spec": {"template": {"spec": {"containers": [{"image": "repo:abc"}]}}},
        "status": {"phase": phase, "observedGeneration": str(observed), **status},
    }


@pytest.mark.parametrize(
    ("found", "state"),
    [(_rollout("Healthy"), "promoted"), (_rollout("Healthy", observed=1), "pending"),
     (_rollout("Progressing"), "pending"), (_rollout("Paused", message="InconclusiveAnalysisRun"), "paused"),
     (_rollout("Degraded", message="RolloutAborted: metric error-rate failed"), "aborted"),
     (_rollout("Progressing", abort=True, message="aborted"), "aborted")],
)  # fmt: skip
def test_verdict(found, state):
    assert rollout.verdict(found, "repo:abc").state == state


def test_wait_reports_the_abort_message_and_times_out_without_a_verdict(capsys):
    seen = iter([_rollout("Progressing"), _rollout("Degraded", message="RolloutAborted: metric error-rate failed")])
    found = rollout.wait(60, "repo:abc", read=lambda: next(seen), sleep=lambda s: None)
    assert found == rollout.Verdict("aborted", "RolloutAborted: metric error-rate failed")
    now = iter(range(0, 1000, 10))
    with pytest.raises(UserError, match="no verdict within 30 s"):
        rollout.wait(
            30, "repo:abc", read=lambda: _rollout("Progressing"), clock=lambda: next(now), sleep=lambda s: None
        )


def test_wait_retries_a_failed_read_but_not_forever(capsys):
    def flaky(answers):
        def read():
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

        return read

    blink = iter([UserError("connection refused"), _rollout("Healthy")])
    assert rollout.wait(60, "repo:abc", read=flaky(blink), sleep=lambda s: None).state == "promoted"
    down = iter([UserError("connection refused")] * rollout.READ_ATTEMPTS)
    with pytest.raises(UserError, match="connection refused"):
        rollout.wait(60, "repo:abc", read=flaky(down), sleep=lambda s: None)


def test_ship_patch_sets_image_and_commit_together():
    patch = rollout.ship_patch("repo:0123456789ab", "0123456789abcdef0123456789abcdef01234567")
    assert [op["path"] for op in patch] == [
        "/spec/template/spec/containers/0/image",
        "/spec/template/metadata/labels/commit",
    ]
    with pytest.raises(UserError, match="--commit: expected a git commit"):
        rollout.ship_patch("repo:x", "main; rm -rf /")


def test_ship_patch_moves_every_container_of_the_app_image():
    """The capture-ship sidecar runs the app's image: a deploy that left it on the old one would ship
    captures with old code (or pull `llm-app:stable`, which no registry has)."""
    pod = rollout.pod_template(ROOT / "k8s")
    assert pod is not None and [c["name"] for c in pod["initContainers"]] == ["capture-ship"]
    patch = rollout.ship_patch("repo:0123456789ab", "0123456789abcdef0123456789abcdef01234567", pod)
    assert [op["path"] for op in patch] == [
        "/spec/template/spec/containers/0/image",
        "/spec/template/spec/initContainers/0/image",
        "/spec/template/metadata/labels/commit",
    ]
    assert {op["value"] for op in patch[:2]} == {"repo:0123456789ab"}


class _Recorder(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict]]] = []
    keys: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, body))
        self.keys.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_loadgen_posts_golden_inputs_to_every_url(capsys):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        examples = load_golden(ROOT / "eval" / "golden.jsonl")
        batch = loadgen.to_requests(examples, prompt_routes=True)
        counts = loadgen.run([url, url + "/"], batch, rate_per_s=200, duration_s=0.05,
                             send=lambda u, r: loadgen.post(u, r, 5))  # fmt: skip
        assert counts == {url: {200: 10}, url + "/": {200: 10}}
        first = examples[0]
        path = f"/v1/{first.flow}" if first.flow else f"/v1/run/{first.prompt}"
        assert (path, dict(first.input) if first.flow else {"variables": dict(first.input)}) in _Recorder.seen
        # A service that asks for keys gets one of its own (the Job reads them from the same Secret).
        assert loadgen.post(url, batch[0], 5, key="k1") == 200 and _Recorder.keys[-1] == "Bearer k1"
        assert set(_Recorder.keys[:-1]) == {None}
        # A URL that never answers is exit 1, named.
        code = main(["loadgen", "--rate", "1", "--duration", "1s", "--timeout", "1", "http://127.0.0.1:9"])
        assert code == 1 and "no answer at all from http://127.0.0.1:9" in capsys.readouterr().out
    finally:
        server.shutdown()
