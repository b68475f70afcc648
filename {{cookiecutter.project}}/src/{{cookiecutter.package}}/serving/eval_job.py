"""params.yaml -> k8s/eval-job.yaml: the eval's shards as one Kubernetes Indexed Job (`rollout render`).

`completions` = `parallelism` = `eval.shards`; each pod is one shard, its index the Job's
completion index (0-based, as `evaluate --shard I/N`). Per pod, in the app's image (the commit being
judged, set with the `commit` label before `kubectl create`):
1. `preprocess` the image's golden set (/app/golden.jsonl) into the pod's own volume;
2. `evaluate --shard I/N` against params.yaml's `model.base_url`: for an in-cluster
   OpenAI-compatible server (vLLM, e.g. `http://vllm.models.svc.cluster.local:8000/v1`), point it at
   that Service; the response cache is `eval.cache_url`, shared by every shard and run;
3. `capture ship` the shard file to `<eval.cache_url>/shards/<commit>/` (the DVC remote's bucket).
CI (or a person) then fetches them and runs `make merge-shards` and the gate, as after CI's shards.

Not in kustomization.yaml: it runs on demand, not with every `kubectl apply -k` of the app (a Job's
pod template cannot change once created, and an eval on each apply would cost model calls).
"""

from __future__ import annotations

from typing import Any

from ..settings import Settings
from .manifests import APP, CONTAINER_SECURITY, NAMESPACE, POD_SECURITY, TMP, dump, secret

NAME = f"{APP}-eval"
WORK = "/work"  # the pod's emptyDir: eval set, shard file (the root filesystem is read-only)
INDEX = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def _container(name: str, args: list[str], env: list[dict[str, Any]], cpu: str, memory: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": f"{APP}:stable",  # the image of the commit being judged: `kubectl set image` or edit
        "args": args,
        "env": [{"name": "HOME", "value": TMP}, {"name": "DO_NOT_TRACK", "value": "1"}, *env],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}, {"name": "work", "mountPath": WORK}],
    }


def job(settings: Settings) -> dict[str, Any]:
    shards = settings.eval.shards
    cache = settings.eval.cache_url.rstrip("/")
    prepare = ["preprocess", "--golden", "/app/golden.jsonl", "--raw", TMP,
               "--out", f"{WORK}/eval_set.jsonl", "--manifest", f"{WORK}/manifest.json"]  # fmt: skip
    evaluate = ["evaluate", "--eval-set", f"{WORK}/eval_set.jsonl", "--prompts", "/app/prompts",
                "--params", "/app/params.yaml", "--metrics", f"{WORK}/metrics.json",
                "--catalogue", f"{WORK}/catalogue.json", "--results", f"{WORK}/results.jsonl",
                "--report", f"{WORK}/report.md",
                "--shard", f"$(SHARD_INDEX)/{shards}", "--shard-dir", f"{WORK}/shards"]  # fmt: skip
    index = {"name": "SHARD_INDEX", "valueFrom": {"fieldRef": {"fieldPath": INDEX}}}
    commit = {"name": "COMMIT", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['commit']"}}}
    model_key = secret("MODEL_API_KEY", "model-api-key")
    model_key["valueFrom"]["secretKeyRef"]["optional"] = True  # the embedded model needs no key
    # Where the shard files go: "" (eval.cache_url unset) fails the upload with one line, never silently.
    shards_url = {"name": "SHARDS_URL", "value": f"{cache}/shards/$(COMMIT)" if cache else ""}
    labels = {"app": APP, "role": "eval", "commit": "none"}  # role: the NetworkPolicy lets it out; no PDB
    pod = {
        "serviceAccountName": APP,  # its cloud role (IRSA / Pod Identity) reaches the bucket; no token
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": POD_SECURITY,
        "initContainers": [
            _container("preprocess", prepare, [], "250m", "256Mi"),
            _container("evaluate", evaluate, [index, model_key], "1", "2Gi"),
        ],
        "containers": [
            _container(
                "upload",
                ["capture", "ship", "--from", f"{WORK}/shards", "--to", "$(SHARDS_URL)"],
                [commit, shards_url],
                "100m",
                "256Mi",
            ),
        ],
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}},
            {"name": "work", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"app": APP, "role": "eval"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": shards,
            "backoffLimitPerIndex": 2,  # a shard retried alone (a node lost); the others keep theirs
            "maxFailedIndexes": 0,  # one shard out of retries fails the Job: the merge would refuse it
            "activeDeadlineSeconds": 6 * 3600,
            "ttlSecondsAfterFinished": 7 * 24 * 3600,
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


def render(settings: Settings) -> str:
    head = (
        "# Rendered by `<project> rollout render` from params.yaml (eval.shards, eval.cache_url): edit those, not\n"
        "# this file. Run on demand, not with the app (not in kustomization.yaml), e.g. for commit SHA:\n"
        "#   sed 's/llm-app:stable/<repo>:<sha12>/; s/commit: none/commit: <sha>/' k8s/eval-job.yaml | kubectl create -f -\n"
        "# Each pod evaluates shard $JOB_COMPLETION_INDEX of eval.shards against params.yaml's model.base_url\n"
        "# (an in-cluster OpenAI-compatible server such as vLLM: its Service's URL) and ships its shard file to\n"
        "# <eval.cache_url>/shards/<sha>/; then: `capture fetch --from <that> --to .cache/shards`, `make merge-shards`\n"
        "# and `make gate`. k8s/networkpolicy.yaml lets these pods out on 443 (S3, a hosted model): a model\n"
        "# Service on another port (vLLM's 8000) needs its own egress rule for the `role: eval` pods.\n"
    )
    return head + dump([job(settings)])
