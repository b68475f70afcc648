"""DVC remotes for real: push the preprocessed eval set, wipe the cache and the output, pull it back.

`dvc_remote=local` uses the directory remote the template configures; `dvc_remote=s3` uses dvc-s3
against `moto_server` on 127.0.0.1, with the endpoint in `--local` config and the credentials in
the environment, as a developer or CI would set them (never in the committed .dvc/config).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest

from tests.baked import free_port, private_project, server
from tests.conftest import run

pytestmark = pytest.mark.slow
EVAL_SET = Path("data/processed/eval_set.jsonl")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def round_trip(project: Path, **env: str) -> None:
    """preprocess -> push -> wipe cache and output -> pull: the same bytes come back."""
    run(project, "python", "-m", "dvc", "repro", "preprocess", env=env)
    before = sha256(project / EVAL_SET)
    pushed = run(project, "python", "-m", "dvc", "push", env=env)
    assert "1 file pushed" in pushed.stdout, pushed.stdout
    shutil.rmtree(project / ".dvc" / "cache")
    (project / EVAL_SET).unlink()
    pulled = run(project, "python", "-m", "dvc", "pull", env=env)
    assert "1 file" in pulled.stdout and "added" in pulled.stdout, pulled.stdout
    assert sha256(project / EVAL_SET) == before
    # And the remote agrees with the workspace.
    status = run(project, "python", "-m", "dvc", "status", "--cloud", env=env)
    assert "Cache and remote 'storage' are in sync." in status.stdout, status.stdout


def test_local_remote_round_trip(tmp_path):
    project = private_project(tmp_path / "bake", dvc_remote="local")
    round_trip(project)
    storage = tmp_path / "bake" / "support-bot-dvc-storage"
    assert storage.is_dir() and any(p.is_file() for p in storage.rglob("*"))


def test_s3_remote_round_trip_on_moto(tmp_path):
    import boto3

    project = private_project(tmp_path / "bake", dvc_remote="s3")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    moto = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with server(moto, f"{endpoint}/moto-api/", cwd=tmp_path, project=project):
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_boto_creds(creds))
        s3.create_bucket(Bucket="support-bot-dvc")
        run(project, "python", "-m", "dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint)
        assert endpoint not in (project / ".dvc" / "config").read_text(), "the endpoint belongs in config.local"
        round_trip(project, **creds)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="support-bot-dvc").get("Contents", [])]
        assert keys and all(k.startswith("cache/files/md5/") for k in keys), keys


def _boto_creds(env: dict[str, str]) -> dict[str, str]:
    return {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
