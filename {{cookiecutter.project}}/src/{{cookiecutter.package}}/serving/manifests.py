"""params.yaml -> the rollout's Kubernetes objects (Argo Rollouts), as `rollout render` writes them.

Two files in k8s/ come from here, so the steps and the analysis are never hand-edited twice:
- `analysis.yaml`: the AnalysisTemplates. `llm-app-analysis` holds one Prometheus metric per check
  of serving/analysis.py; `llm-app-load` a Job that sends golden-set requests at both tracks, so each
  step has at least `canary.min_requests` answers per track; `llm-app-promote` a Job that moves the
  registry's `champion` alias to the version registered from the commit being rolled out.
- `rollout.yaml`: a hand-written Rollout (the hardened pod template, with its comments) whose
  `strategy` section, the part below `MARKER`, is rendered.

A check's query answers 1 (pass) or 0 (fail), or no sample on too little traffic: the metric's
conditions make that Inconclusive (the rollout pauses for a person), never a pass.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..errors import UserError
from ..settings import Settings, seconds
from .analysis import Check, checks, render

APP = NAMESPACE = "llm-app"
TMP = "/tmp"  # noqa: S108 (the pod's own emptyDir, as in rollout.yaml: the root filesystem is read-only)
HEADER_ROUTE = "canary-header"  # testers' requests with `x-canary: always` go to the canary
MARKER = "  # ---- rendered by `rollout render` from params.yaml (rollout.*, canary.*): do not edit below ----\n"


def arg(name: str) -> str:
    """An AnalysisTemplate argument, as Argo Rollouts substitutes it."""
    return "{{args." + name + "}}"


CANARY = f'rollouts_pod_template_hash="{arg("canary-hash")}"'
STABLE = f'rollouts_pod_template_hash="{arg("stable-hash")}"'
HASH_ARGS = ({"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}},
             {"name": "stable-hash", "valueFrom": {"podTemplateHashValue": "Stable"}})  # fmt: skip
# The canary's image and commit (its pod template's `commit` label, set with the image by the deploy).
RELEASE_ARGS = ({"name": "image", "valueFrom": {"fieldRef": {"fieldPath": "spec.template.spec.containers[0].image"}}},
                {"name": "commit", "valueFrom": {"fieldRef": {"fieldPath": "spec.template.metadata.labels.commit"}}})  # fmt: skip


def metric(check: Check, window: str, prometheus: str) -> dict[str, Any]:
    """One check as an AnalysisTemplate metric, measured once, after a window of this step's traffic."""
    return {
        "name": check.name,
        "initialDelay": window,
        "count": 1,
        "failureLimit": 0,
        "inconclusiveLimit": 0,
        # No sample (too little traffic) meets neither condition: Inconclusive, never Successful.
        "successCondition": "len(result) > 0 && result[0] == 1",
        "failureCondition": "len(result) > 0 && result[0] == 0",
        "provider": {"prometheus": {"address": prometheus, "query": render(check.query, CANARY, STABLE, window)}},
    }


# As locked down as the app's pods (k8s/rollout.yaml): every Job container rendered here runs so.
CONTAINER_SECURITY = {
    "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "readOnlyRootFilesystem": True,
    "allowPrivilegeEscalation": False, "privileged": False, "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}  # fmt: skip
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip


def secret(var: str, key: str) -> dict[str, Any]:
    return {"name": var, "valueFrom": {"secretKeyRef": {"name": f"{APP}-secrets", "key": key}}}


def _job(name: str, args: list[str], deadline_s: int, secrets: list[dict[str, Any]]) -> dict[str, Any]:
    """A Job metric running `<project> ARGS` (the image's entrypoint) in the canary's image, as locked
    down as the app's pods."""
    env: list[dict[str, Any]] = [{"name": "HOME", "value": TMP}, {"name": "DO_NOT_TRACK", "value": "1"},
                                 {"name": "MLFLOW_DISABLE_TELEMETRY", "value": "true"}]  # fmt: skip
    env += secrets
    container = {
        "name": name,
        "image": arg("image"),
        "args": args,
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": [{"name": "tmp", "mountPath": TMP}],
    }
    pod = {
        "serviceAccountName": APP,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": POD_SECURITY,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
    }
    labels = {"app": APP, "role": name}  # the NetworkPolicy's `role` rules let these pods out
    return {"name": name, "provider": {"job": {
        "metadata": {"labels": labels},
        "spec": {"backoffLimit": 0, "activeDeadlineSeconds": deadline_s,
                 "template": {"metadata": {"labels": labels}, "spec": pod}},
    }}}  # fmt: skip


def _template(name: str, args: list[dict[str, Any]], metrics: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": APP}},
        "spec": {"args": args, "metrics": metrics},
    }


def analysis_templates(settings: Settings) -> list[dict[str, Any]]:
    """The three AnalysisTemplates: the checks, the load, the promotion."""
    r, window = settings.rollout, settings.rollout.window
    hashes = [{"name": "canary-hash"}, {"name": "stable-hash"}]
    load = ["loadgen", "--params", "/app/params.yaml", "--golden", "/app/golden.jsonl",
            "--rate", f"{r.load_rate_per_s:g}", "--duration", window,
            f"http://{APP}-canary.{NAMESPACE}", f"http://{APP}-stable.{NAMESPACE}"]  # fmt: skip
    # The service asks callers for a key when serve.api_keys_env names one: the load sends one of them.
    keys = [secret(settings.serve.api_keys_env, "api-keys")] if settings.serve.api_keys_env else []
    promote = ["promote", "--params", "/app/params.yaml", "--commit", arg("commit")]
    return [
        _template(f"{APP}-analysis", hashes, [metric(c, window, r.prometheus_url) for c in checks(settings.canary)]),
        _template(f"{APP}-load", [{"name": "image"}], [_job("load", load, seconds(window) + 300, keys)]),
        _template(f"{APP}-promote", [{"name": "image"}, {"name": "commit"}],
                  [_job("promote", promote, 600, [secret("MLFLOW_TRACKING_URI", "mlflow-tracking-uri")])]),
    ]  # fmt: skip


def strategy(settings: Settings) -> dict[str, Any]:
    """The Rollout's `strategy`: the header route for testers, then per step its weight and analysis
    (load + checks); the promotion Job last, so on any abort the registry's alias stays."""
    judge = {"templates": [{"templateName": f"{APP}-load"}, {"templateName": f"{APP}-analysis"}],
             "args": [*HASH_ARGS, RELEASE_ARGS[0]]}  # fmt: skip
    header = {"setHeaderRoute": {"name": HEADER_ROUTE, "match": [
        {"headerName": "x-canary", "headerValue": {"exact": "always"}}]}}  # fmt: skip
    steps: list[dict[str, Any]] = []
    for i, weight in enumerate(settings.rollout.steps):
        # The header route from the first step on (the canary has pods only once it has a weight).
        steps += [{"setWeight": weight}, *([header] if i == 0 else []), {"analysis": judge}]
    steps.append({"analysis": {"templates": [{"templateName": f"{APP}-promote"}], "args": list(RELEASE_ARGS)}})
    return {"canary": {
        "canaryService": f"{APP}-canary",
        "stableService": f"{APP}-stable",
        "canaryMetadata": {"labels": {"track": "canary"}},
        "stableMetadata": {"labels": {"track": "stable"}},
        "abortScaleDownDelaySeconds": 30,
        "trafficRouting": {
            "managedRoutes": [{"name": HEADER_ROUTE}],
            "plugins": {"argoproj-labs/gatewayAPI": {
                "httpRoutes": [{"name": APP, "useHeaderRoutes": True}], "namespace": NAMESPACE}},
        },
        "steps": steps,
    }}  # fmt: skip


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a repeated step is written out again: no &anchors a reader must chase


def dump(documents: list[dict[str, Any]]) -> str:
    # One line per query, however long: a changed threshold is a one-line diff.
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1_000_000)


def render_analysis(settings: Settings) -> str:
    head = (
        "# Rendered by `<project> rollout render` from params.yaml (rollout.*, canary.*): edit those, not this file.\n"
    )
    return head + dump(analysis_templates(settings))


def render_rollout(settings: Settings, current: str, source: str = "k8s/rollout.yaml") -> str:
    """`current` (the hand-written Rollout) with everything below MARKER replaced by the strategy."""
    head, found, _ = current.partition(MARKER)
    if not found:
        raise UserError(f"{source}: the line {MARKER.strip()!r} is missing (the strategy is rendered below it)")
    body = dump([{"strategy": strategy(settings)}])
    return head + MARKER + "".join(f"  {line}\n" for line in body.splitlines())
