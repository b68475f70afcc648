"""From production back to the golden set, end to end on loopback with real parts.

One bake (the default project, its example app). Two real `<project> serve` processes, each on its
own fake model: the stable version (champion) and a canary whose model routes refund requests to the
catch-all queue and reports another `system_fingerprint`. Both capture every answer to their own
volume; the stable mirrors every answer to the canary over HTTP (SHADOW_URL), as in the cluster.
Users send messages the golden set has never seen (one with an email address) and rate some answers
(`POST /v1/feedback`, one with a correction). Then, as the retrain workflow does:

    capture ship (each volume -> S3 on moto_server)  ->  capture fetch (-> captures/)
    harvest  ->  preprocess (candidates kept aside)  ->  a person labels two  ->  preprocess
    ->  evaluate (the labelled ones are scored)       ->  drift (production's provider is not main's)

and the proof is in the files: candidates ordered negative feedback first, then shadow disagreements;
no address in clear anywhere; the eval set holds a candidate only once it is labelled.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.baked import fake_model_module, free_port, private_project, server
from tests.conftest import run
from tests.test_canary_prometheus import processes

pytestmark = [pytest.mark.slow, pytest.mark.long]

ROUTES = {"money back": "refund", "where is": "order_status", "password": "account"}
# New to the golden set: what production sends.
MESSAGES = [
    "I would like my money back for the broken kettle, order BH-55501.",
    "where is my parcel with the blue rug? Reach me at rosa.new@example.org",
    "I forgot my password and cannot sign in.",
    "Can I get my money back on a gift voucher?",
    "where is order BH-55502, it has been two weeks",
    "Do you sell garden furniture in green?",
]
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def routing(fake, routes: dict[str, str]):
    """A fake model for the example app: the queue by keyword (else the catch-all), null order
    fields, the don't-know sentence as the answer."""

    def answer(request) -> str:
        if "intent" in request.fields:
            text = request.content.lower()
            return json.dumps({"intent": next((q for k, q in routes.items() if k in text), "other")})
        return fake.dont_know(request)

    return answer


def version_dir(project: Path, dest: Path, base_url: str) -> Path:
    """The project's version (params.yaml, prompts/, data) with its model at `base_url`."""
    run(project, "python", "-m", project_env_package(project), "export", str(dest))
    params = dest / "params.yaml"
    text = params.read_text().replace("base_url: embedded", f"base_url: {base_url}")
    # Answers come faster than their mirrors here: room for all of them (beyond it, mirrors are dropped).
    params.write_text(text.replace("shadow_max_inflight: 4", "shadow_max_inflight: 16"))
    return dest


def project_env_package(project: Path) -> str:
    return next((project / "src").glob("*/__main__.py")).parent.name


@contextlib.contextmanager
def moto(cwd: Path, project: Path) -> Iterator[str]:
    import boto3

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with server(argv, f"{endpoint}/moto-api/", cwd=cwd, project=project):
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        s3.create_bucket(Bucket="team-dvc")
        yield endpoint


def post(url: str, body: dict) -> requests.Response:
    return requests.post(url, json=body, timeout=30)


def test_production_flows_back_into_the_golden_set_through_review(tmp_path: Path):
    project = private_project(tmp_path / "bake")
    package = project_env_package(project)
    fake = fake_model_module(project)
    python = str(project / ".venv" / "bin" / "python")
    with (
        fake.FakeModel(routing(fake, ROUTES), fingerprint="b4242-stable") as stable_model,
        fake.FakeModel(routing(fake, {**ROUTES, "money back": "other"}), fingerprint="b5151-canary") as canary_model,
    ):
        stable_dir = version_dir(project, tmp_path / "stable", stable_model.base_url)
        canary_dir = version_dir(project, tmp_path / "canary", canary_model.base_url)
        ports = {"stable": free_port(), "canary": free_port()}
        url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

        def serve(name: str, source: Path, **env: str):
            argv = [python, "-m", package, "serve", "--port", str(ports[name]), "--source", str(source)]
            env = {"CAPTURE_FRACTION": "1", "CAPTURE_DIR": str(tmp_path / f"volume-{name}"), **env}
            return argv, env, tmp_path, f"{url[name]}/readyz"

        specs = {
            "canary": serve("canary", canary_dir, APP_MODEL_ALIAS="candidate"),
            "stable": serve("stable", stable_dir, SHADOW_FRACTION="1", SHADOW_URL=url["canary"]),
        }
        with processes(specs, project):
            ids = []
            for message in MESSAGES:
                answered = post(f"{url['stable']}/v1/answer", {"message": message})
                assert answered.status_code == 200, answered.text
                ids.append(answered.json()["request_id"])
            # Users rate: the gift-voucher refund and the garden question were answered badly.
            rated: list[tuple[str, dict[str, object]]] = [
                (ids[3], {"rating": "down", "correction": {"intent": "refund"}}),
                (ids[5], {"rating": "down", "comment": "no answer at all; write to me at rosa.new@example.org"}),
                (ids[2], {"rating": "up"}),
            ]
            for request_id, rating in rated:
                sent = post(f"{url['stable']}/v1/feedback", {"request_id": request_id, **rating})
                assert sent.status_code == 202, sent.text
            refused = post(f"{url['stable']}/v1/feedback", {"request_id": ids[0], "rating": "meh"})
            assert refused.status_code == 422, refused.text
            # Every mirror has reached the canary (it captures them too) before the processes stop.
            deadline = time.monotonic() + 20
            while _mirrored(url["canary"]) < len(MESSAGES):
                assert time.monotonic() < deadline, "the stable did not mirror every answer to the canary"
                time.sleep(0.1)
        # SIGTERM closed every capture file: nothing is left open on the volumes.
        for name in ports:
            volume = tmp_path / f"volume-{name}"
            assert list(volume.rglob("*.jsonl")), f"{name} captured nothing"
            assert not list(volume.rglob("*.open")), f"{name} left a capture file open"
            assert "rosa.new@example.org" not in _all_text(volume), "an address was captured in clear"

        # The sidecar's job, then the retrain workflow's: through object storage.
        env = {**CREDS}
        with moto(tmp_path, project) as endpoint:
            env["AWS_ENDPOINT_URL"] = endpoint
            for name in ports:
                shipped = run(project, "python", "-m", package, "capture", "ship", "--from",
                              str(tmp_path / f"volume-{name}"), "--to", "s3://team-dvc/captures", env=env)  # fmt: skip
                assert "0 failed" in shipped.stdout, shipped.stdout
                assert not list((tmp_path / f"volume-{name}").rglob("*.jsonl")), "shipped files stay on the volume"
            run(project, "python", "-m", package, "capture", "fetch", "--from", "s3://team-dvc/captures",
                "--to", "captures", "--days", "2", env=env)  # fmt: skip

        today = dt.datetime.now(dt.UTC).date().isoformat()
        harvested = run(project, "python", "-m", package, "harvest", "--captures", "captures",
                        "--golden", "eval/golden.jsonl", "--raw", "data/raw", "--date", today)  # fmt: skip
        candidates_file = project / "data" / "raw" / f"candidates-{today}.jsonl"
        lines = [json.loads(line) for line in candidates_file.read_text().splitlines()]
        assert "rosa.new@example.org" not in candidates_file.read_text(), "a candidate holds an address in clear"
        reasons = [line["harvest"]["reason"] for line in lines]
        messages = [line["input"]["message"] for line in lines]
        # Negative feedback first, then what the canary decided differently (the other refund request).
        assert messages[:2] == [MESSAGES[3], MESSAGES[5]] and len(set(reasons[:2])) == 1, (reasons, harvested.stdout)
        assert MESSAGES[0] in messages[2:] and reasons[messages.index(MESSAGES[0])] != reasons[0], reasons
        assert all("todo" in line for line in lines), "a candidate must wait for a person's label"
        assert lines[0]["harvest"].get("correction") == {"intent": "refund"}, "the user's correction is shown"

        def preprocess() -> tuple[str, list[str]]:
            out = run(project, "python", "-m", package, "preprocess", "--golden", "eval/golden.jsonl",
                      "--raw", "data/raw", "--out", "data/processed/eval_set.jsonl",
                      "--manifest", "data/processed/manifest.json").stdout  # fmt: skip
            eval_set = (project / "data" / "processed" / "eval_set.jsonl").read_text().splitlines()
            return out, [json.loads(line)["id"] for line in eval_set]

        out, ids_before = preprocess()
        assert not {line["id"] for line in lines} & set(ids_before), "an unlabelled candidate entered the eval set"
        assert f"{len(lines)} " in out and "candidates-" in out, out

        # A person labels the first two (the reviewed PR's diff), leaves the rest for later.
        for line, intent in zip(lines[:2], ("refund", "other"), strict=True):
            del line["todo"]
            line["expected"] = {"intent": intent}
        candidates_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
        out, ids_after = preprocess()
        labelled = [line["id"] for line in lines[:2]]
        assert set(ids_after) - set(ids_before) == set(labelled), out
        assert f"{len(lines) - 2} " in out, out

        # main's answers came from an older build of the provider than the one production now talks to.
        with fake.FakeModel(routing(fake, ROUTES), fingerprint="b4000-main") as model:
            params = project / "params.yaml"
            params.write_text(params.read_text().replace("base_url: embedded", f"base_url: {model.base_url}"))
            run(project, "python", "-m", package, "evaluate", "--eval-set", "data/processed/eval_set.jsonl",
                "--prompts", "prompts", "--params", "params.yaml", "--metrics", "eval/metrics.json",
                "--catalogue", "eval/catalogue.json", "--results", "eval/results.jsonl",
                "--report", "eval/report.md")  # fmt: skip
        results = {json.loads(line)["id"]: json.loads(line) for line in (project / "eval" / "results.jsonl").open()}
        assert set(labelled) <= set(results), "the labelled candidates were not evaluated"
        assert results[labelled[0]]["passed"] is True and "b4000-main" in results[labelled[0]]["provider"]

        drift = run(project, "python", "-m", package, "drift", "--reference", "data/processed/eval_set.jsonl",
                    "--reference-results", "eval/results.jsonl", "--current", "captures",
                    "--out-dir", "drift", check=False)  # fmt: skip
        assert drift.returncode == 1, drift.stdout + drift.stderr
        assert "b4242-stable" in (project / "drift" / "report.md").read_text(), "the new provider is not named"
        metrics = json.loads((project / "drift" / "metrics.json").read_text())
        assert metrics, "drift wrote no metrics"


def _mirrored(canary: str) -> float:
    text = requests.get(f"{canary}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("llm_requests_total{") and 'route="/v1/answer"' in line
    )


def _all_text(root: Path) -> str:
    return "".join(p.read_text() for p in root.rglob("*") if p.is_file())
