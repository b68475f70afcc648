"""The baked project's Kubernetes manifests and runbooks.

- Every manifest passes `kubernetes-validate --strict` (the schemas ship inside the wheel, offline),
  against the newest Kubernetes it knows and against 1.30, the oldest we support (`preStop.sleep`).
- kubernetes-validate has no schema for CRDs: it prints `WARN ... Couldn't find schema for kind
  HTTPRoute` and exits 0, i.e. it silently skips custom resources. So the test insists that the
  custom kinds are the ONLY skipped documents; the HTTPRoute is also checked against HTTPROUTE_SCHEMA
  below, a strict subset of the Gateway API v1 HTTPRoute CRD covering the fields we use.
- Custom resources (Rollout, AnalysisTemplate, HTTPRoute, PrometheusRule) validate against their
  CRD's JSON schema, vendored in
  tests/schemas/crds/ with its licence, with `check-jsonschema`; the alert rules pass the baked
  project's own promtool tests (tests/test_alerts.py there), run here with promtool required.
- kustomization.yaml is not a Kubernetes object either; it is checked to list exactly the other files,
  and rendered with `kubectl kustomize` where kubectl is installed.
- Structural checks for every hardening item, cross-references (Service selectors, HTTPRoute
  backends, PDB, NetworkPolicy), and the runbooks' commands.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

NAMESPACE = "llm-app"
APP = "llm-app"
TRACKS = ("stable", "canary")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
CLI_SUBCOMMANDS = {"prompts", "evaluate", "gate", "promote", "rollback", "serve", "canary", "rollout"}
CANARY_SUBCOMMANDS = {"analyze"}
MAKE_TARGETS_USED_BY_RUNBOOKS = {"rollback", "promote", "gate", "repro"}
METRICS = {
    "llm_requests_total", "llm_request_latency_seconds_bucket", "llm_tokens_total", "llm_model_endpoint_up",
    "llm_shed_requests_total",
}  # fmt: skip
RUNBOOKS = ("rollback.md", "alerting.md", "incident.md")
# Custom resources: kubernetes-validate skips them (WARN); their schemas are in CRD_SCHEMAS.
CUSTOM_KINDS = {"Rollout", "AnalysisTemplate", "HTTPRoute", "PrometheusRule"}
CRD_SCHEMAS = Path(__file__).parent / "schemas" / "crds"
ALERT_METRICS = METRICS | {
    "llm_schema_checks_total",
    "llm_shadow_requests_total",
    "llm_cost_usd_total",
    "llm_feedback_total",
}
OLDEST_KUBERNETES = "1.30"
# Applied on demand, not with the app (`kubectl apply -k`): the eval's shards (rendered from params.yaml).
ON_DEMAND = {"eval-job.yaml"}

# Strict subset of gateway.networking.k8s.io/v1 HTTPRoute (Gateway API v1.x CRD), fields we use.
_NAME = {"type": "string", "minLength": 1, "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
HTTPROUTE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": _NAME,
                "namespace": _NAME,
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["parentRefs", "rules"],
            "properties": {
                "hostnames": {"type": "array", "items": {"type": "string"}, "maxItems": 16},
                "parentRefs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "group": {"type": "string"},
                            "kind": {"type": "string"},
                            "name": _NAME,
                            "namespace": _NAME,
                            "sectionName": {"type": "string"},
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                        },
                    },
                },
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string"},
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                                                "value": {"type": "string", "pattern": "^/", "maxLength": 1024},
                                            },
                                        },
                                        "method": {"type": "string"},
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name", "port"],
                                    "properties": {
                                        "group": {"type": "string"},
                                        "kind": {"const": "Service"},
                                        "name": _NAME,
                                        "namespace": _NAME,
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def project(bake) -> Path:
    return bake()


@pytest.fixture(scope="module")
def k8s_dir(project: Path) -> Path:
    path = project / "k8s"
    assert path.is_dir(), f"{path} missing"
    return path


@pytest.fixture(scope="module")
def manifest_files(k8s_dir: Path) -> list[Path]:
    files = sorted(p for p in k8s_dir.glob("*.yaml") if p.name != "kustomization.yaml")
    assert files, "no manifests"
    assert not list(k8s_dir.glob("*.yml")), "use the .yaml extension"
    return files


@pytest.fixture(scope="module")
def objects(manifest_files: list[Path]) -> list[dict]:
    docs = []
    for path in manifest_files:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def _of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def _by_name(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in _of_kind(objects, kind)}


def _strip(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "__file__"}


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# ------------------------------------------------------------------------------------------ validators


def _kubernetes_validate() -> Path:
    exe = Path(sys.executable).parent / ("kubernetes-validate" + (".exe" if sys.platform == "win32" else ""))
    if not exe.exists():
        pytest.fail(f"kubernetes-validate not installed next to {sys.executable} (pip install kubernetes-validate)")
    return exe


@pytest.mark.parametrize("version", [None, OLDEST_KUBERNETES], ids=["latest", OLDEST_KUBERNETES])
def test_kubernetes_validate_strict(manifest_files: list[Path], objects: list[dict], version: str | None):
    cmd = [str(_kubernetes_validate()), "--strict"]
    if version:
        cmd += ["-k", version]
    out = subprocess.run(
        cmd + [str(p) for p in manifest_files], capture_output=True, text=True, timeout=300, check=False
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "ERROR" not in text and "FATAL" not in text, text
    # A document without a schema is skipped with a WARN and rc 0: only the custom resources may be.
    warned = sorted(Path(m).name for m in re.findall(r"^WARN (\S+) ", text, re.MULTILINE))
    assert warned == sorted(o["__file__"] for o in objects if o["kind"] in CUSTOM_KINDS), text
    passed = re.findall(r"^INFO \S+ passed for resource", text, re.MULTILINE)
    assert len(passed) == len([o for o in objects if o["kind"] not in CUSTOM_KINDS]), text


def test_httproute_schema(objects: list[dict]):
    routes = _of_kind(objects, "HTTPRoute")
    assert len(routes) == 1
    jsonschema.Draft202012Validator.check_schema(HTTPROUTE_SCHEMA)
    jsonschema.Draft202012Validator(HTTPROUTE_SCHEMA).validate(_strip(routes[0]))


def test_httproute_schema_rejects_typos():
    """The hand-written schema is strict: a misspelt field fails."""
    bad = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"parentRefs": [{"name": "g"}], "rules": [{"backendRef": [{"name": "s", "port": 80}]}]},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(HTTPROUTE_SCHEMA).validate(bad)


def _crd_schema(obj: dict, tmp: Path) -> Path:
    """The vendored schema of a custom resource, as check-jsonschema can read it: Go's regexps (the
    CRDs') take an inline flag after `^` (`^(?i)(abort|warn)?$`), Python's only at the start."""
    group, _, version = obj["apiVersion"].rpartition("/")
    vendored = CRD_SCHEMAS / group / f"{obj['kind'].lower()}_{version}.json"
    assert vendored.is_file(), f"{obj['__file__']}: no schema for {obj['apiVersion']} {obj['kind']} in {CRD_SCHEMAS}"
    text = re.sub(r'"pattern": "\^\(\?([a-z]+)\)', r'"pattern": "(?\1)^', vendored.read_text())
    path = tmp / vendored.name
    path.write_text(text)
    return path


def _check_jsonschema(schema: Path, *documents: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "check-jsonschema"
    cmd = [str(exe), "--regex-variant", "python", "--schemafile", str(schema), *map(str, documents)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_custom_resources_match_their_crd_schema(objects: list[dict], k8s_dir: Path, tmp_path: Path):
    custom = [o for o in objects if o["kind"] in CUSTOM_KINDS]
    assert {o["kind"] for o in custom} == CUSTOM_KINDS
    for i, obj in enumerate(custom):
        # One document per file: check-jsonschema reads no multi-document YAML (analysis.yaml is one).
        document = tmp_path / f"{i}-{obj['__file__']}"
        document.write_text(yaml.safe_dump(_strip(obj)))
        out = _check_jsonschema(_crd_schema(obj, tmp_path), document)
        assert out.returncode == 0, f"{obj['__file__']} {obj['metadata']['name']}: {out.stdout}{out.stderr}"


def test_the_crd_schema_check_refuses_a_misspelt_field(objects: list[dict], tmp_path: Path):
    (rule,) = _of_kind(objects, "PrometheusRule")
    bad = copy.deepcopy(_strip(rule))
    bad["spec"]["groups"][0]["rules"][0]["annotation"] = bad["spec"]["groups"][0]["rules"][0].pop("annotations")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = _check_jsonschema(_crd_schema(rule, tmp_path), tmp_path / "bad.yaml")
    assert out.returncode == 1 and "'annotation' was unexpected" in out.stdout, out.stdout + out.stderr


def test_the_rollout_schema_refuses_a_misspelt_step(objects: list[dict], tmp_path: Path):
    (ro,) = _of_kind(objects, "Rollout")
    bad = copy.deepcopy(_strip(ro))
    steps = bad["spec"]["strategy"]["canary"]["steps"]
    steps[0] = {"setWeigth": steps[0]["setWeight"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = _check_jsonschema(_crd_schema(ro, tmp_path), tmp_path / "bad.yaml")
    assert out.returncode == 1 and "'setWeigth' was unexpected" in out.stdout, out.stdout + out.stderr


def test_kustomization_lists_exactly_the_manifests(k8s_dir: Path, manifest_files: list[Path], objects):
    kust = yaml.safe_load((k8s_dir / "kustomization.yaml").read_text())
    assert kust["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kust["kind"] == "Kustomization"
    resources = kust["resources"]
    assert len(resources) == len(set(resources)), "duplicate resource"
    assert set(resources) == {p.name for p in manifest_files} - ON_DEMAND
    # namespace.yaml first, so `kubectl apply -k` creates the namespace before what lives in it.
    assert resources[0] == "namespace.yaml"
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run(
            [kubectl, "kustomize", str(k8s_dir)], capture_output=True, text=True, timeout=120, check=False
        )
        assert out.returncode == 0, out.stderr
        rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
        key = lambda o: (o["kind"], o["metadata"]["name"])
        assert sorted(map(key, rendered)) == sorted(key(o) for o in objects if o["__file__"] not in ON_DEMAND)


def test_no_jinja_in_manifests(k8s_dir: Path):
    # k8s/ is copied without rendering: any {{ cookiecutter.* }} would ship verbatim. The alerts'
    # annotations are Prometheus templates ({{ $value }}, {{ $labels.x }}) and README.md shows an
    # Alertmanager one ({{ .CommonAnnotations.x }}): Go templates, which start with `$` or `.`. The
    # rollout's analysis passes Argo Rollouts arguments, `{{args.name}}`.
    for path in k8s_dir.iterdir():
        text = re.sub(r"\{\{ [$.][^}]*\}\}|\{\{args\.[a-z-]+\}\}", "", path.read_text())
        assert "{{" not in text and "{%" not in text, path.name


# --------------------------------------------------------------------------------------------- objects


def test_every_namespaced_object_names_the_namespace(objects: list[dict]):
    namespaces = _of_kind(objects, "Namespace")
    assert [n["metadata"]["name"] for n in namespaces] == [NAMESPACE]
    labels = namespaces[0]["metadata"].get("labels", {})
    assert labels.get("pod-security.kubernetes.io/enforce") == "restricted"
    for obj in objects:
        if obj["kind"] in CLUSTER_SCOPED:
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['__file__']}: {obj['kind']}"


def test_one_rollout_runs_both_tracks(objects: list[dict]):
    """The app is a Rollout (Argo Rollouts): no Deployment per track, the controller runs both."""
    assert _of_kind(objects, "Deployment") == []
    (ro,) = _of_kind(objects, "Rollout")
    assert ro["metadata"]["name"] == APP and ro["spec"]["replicas"] == 3
    # Pods that never get ready abort the rollout (Degraded) instead of leaving it Progressing.
    assert ro["spec"]["progressDeadlineAbort"] is True and ro["spec"]["progressDeadlineSeconds"] > 0
    pod_labels = ro["spec"]["template"]["metadata"]["labels"]
    assert ro["spec"]["selector"]["matchLabels"] == {"app": APP}
    assert _selects(ro["spec"]["selector"]["matchLabels"], pod_labels)
    canary = ro["spec"]["strategy"]["canary"]
    # Pods get their track as a label from the controller: the alerts and `canary analyze` use it.
    assert {t: canary[f"{t}Metadata"]["labels"] for t in TRACKS} == {t: {"track": t} for t in TRACKS}
    assert (canary["stableService"], canary["canaryService"]) == (f"{APP}-stable", f"{APP}-canary")
    assert canary["trafficRouting"]["plugins"]["argoproj-labs/gatewayAPI"]["httpRoutes"] == [
        {"name": APP, "useHeaderRoutes": True}
    ]
    templates = _by_name(objects, "AnalysisTemplate")
    used = {t["templateName"] for step in canary["steps"] if "analysis" in step for t in step["analysis"]["templates"]}
    assert used == set(templates) == {f"{APP}-analysis", f"{APP}-load", f"{APP}-promote"}


@pytest.fixture(scope="module")
def deployments(objects: list[dict]) -> list[dict]:
    """The app's workload (the Rollout): what the pod checks below read."""
    rollouts = _of_kind(objects, "Rollout")
    assert rollouts
    return rollouts


@pytest.fixture(scope="module")
def jobs(objects: list[dict]) -> list[dict]:
    """The rollout's Jobs (load, promotion), as `{metadata, spec}` like a workload's, and the eval's."""
    return [
        {"metadata": {"name": m["name"]}, "spec": m["provider"]["job"]["spec"]}
        for t in _of_kind(objects, "AnalysisTemplate")
        for m in t["spec"]["metrics"]
        if "job" in m["provider"]
    ] + _of_kind(objects, "Job")


def _containers(pod: dict) -> list[dict]:
    return pod["containers"] + pod.get("initContainers", [])


def test_pod_hardening(deployments: list[dict], jobs: list[dict], objects: list[dict]):
    assert len(jobs) == 3
    for dep in deployments + jobs:
        pod = dep["spec"]["template"]["spec"]
        name = dep["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        sa = pod.get("serviceAccountName")
        if sa:
            account = _by_name(objects, "ServiceAccount")[sa]
            assert account["automountServiceAccountToken"] is False
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] == 10001, name
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in _containers(pod):
            where = f"{name}/{c['name']}"
            sc = c["securityContext"]
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", psc.get("runAsUser")) == 10001, where
            assert sc.get("seccompProfile", psc.get("seccompProfile"))["type"] == "RuntimeDefault", where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged", False) is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{where}: {kind}"
            tmp = [m for m in c["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, where
            assert "emptyDir" in volumes[tmp[0]["name"]], where


def test_eval_job_runs_the_shards_as_an_indexed_job(objects: list[dict], project: Path):
    """k8s/eval-job.yaml: one pod per shard of params.yaml's eval.shards, its index the shard's,
    in the app's image; `rollout render` writes it (its --check fails when params.yaml moved on)."""
    (job,) = _of_kind(objects, "Job")
    assert job["__file__"] == "eval-job.yaml" and job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    shards = yaml.safe_load((project / "params.yaml").read_text())["eval"]["shards"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == shards
    assert spec["backoffLimitPerIndex"] >= 1 and spec["maxFailedIndexes"] == 0
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (ro,) = _of_kind(objects, "Rollout")
    app_image = ro["spec"]["template"]["spec"]["containers"][0]["image"]
    assert {c["image"] for c in _containers(pod)} == {app_image}
    evaluate = next(c for c in pod["initContainers"] if c["args"][0] == "evaluate")
    args = evaluate["args"]
    assert args[args.index("--shard") + 1] == f"$(SHARD_INDEX)/{shards}" and "--shard-dir" in args
    env = {e["name"]: e for e in evaluate["env"]}
    index = env["SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    (upload,) = pod["containers"]
    assert upload["args"][:2] == ["capture", "ship"]
    assert spec["template"]["metadata"]["labels"]["role"] == "eval"


def test_probes_and_port(deployments: list[dict]):
    for dep in deployments:
        for c in dep["spec"]["template"]["spec"]["containers"]:
            where = f"{dep['metadata']['name']}/{c['name']}"
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            assert ports == {"http": 8000}, where
            live, ready = c["livenessProbe"], c["readinessProbe"]
            assert live["httpGet"]["path"] == "/healthz", where
            assert ready["httpGet"]["path"] == "/readyz", where
            assert live != ready, where
            for probe in (live, ready, c.get("startupProbe")):
                if probe:
                    assert ports.get(probe["httpGet"]["port"], probe["httpGet"]["port"]) == 8000, where


def test_image_and_env(deployments: list[dict], objects: list[dict]):
    configmaps = _by_name(objects, "ConfigMap")
    for dep in deployments:
        (c,) = dep["spec"]["template"]["spec"]["containers"]
        assert c["name"] == "app"
        assert c["image"] == f"{APP}:stable"  # the deploy sets <repo>:<commit> (`rollout ship`)
        assert dep["spec"]["template"]["metadata"]["labels"]["commit"] == "none"  # ... and this label
        assert c["imagePullPolicy"] == "IfNotPresent"
        env = {e["name"]: e for e in c["env"]}
        assert env["MLFLOW_DISABLE_TELEMETRY"]["value"] == "true"
        assert env["DO_NOT_TRACK"]["value"] == "1"
        secrets = {
            "MLFLOW_TRACKING_URI": "mlflow-tracking-uri", "MODEL_API_KEY": "model-api-key",
            "LOG_HASH_KEY": "log-hash-key", "APP_API_KEYS": "api-keys",
        }  # fmt: skip
        for var, key in secrets.items():
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert (ref["name"], ref["key"]) == ("llm-app-secrets", key)
            assert "value" not in env[var]
        # Logged text is hashed with a key in every pod (LOG_CONTENT can be switched on at any time);
        # the callers' keys are optional, as the auth they serve is.
        assert not env["LOG_HASH_KEY"]["valueFrom"]["secretKeyRef"].get("optional", False)
        assert env["APP_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
        refs = [e["configMapRef"]["name"] for e in c["envFrom"]]
        assert refs == ["llm-app-config"] and "llm-app-config" in configmaps
    data = configmaps["llm-app-config"]["data"]
    assert data["LOG_CONTENT"] == "false"
    # The stable track mirrors to the canary's Service: the rollout's agreement check needs it on.
    assert float(data["SHADOW_FRACTION"]) > 0 and data["SHADOW_URL"] == f"http://{APP}-canary.{NAMESPACE}"
    assert _of_kind(objects, "Secret") == [], "secrets are created by hand, never committed"


def test_capture_is_off_by_default_and_writes_to_a_volume_of_its_own(deployments: list[dict], objects: list[dict]):
    """CAPTURE_FRACTION comes from the ConfigMap, "0" until users agreed; the files go to a bounded
    emptyDir (the root filesystem is read-only), where a shipping sidecar can pick them up."""
    assert _by_name(objects, "ConfigMap")["llm-app-config"]["data"]["CAPTURE_FRACTION"] == "0"
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volume = {v["name"]: v for v in pod["volumes"]}[mounts[env["CAPTURE_DIR"]["value"]]]
        assert volume["emptyDir"]["sizeLimit"], dep["metadata"]["name"]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_install_creates_every_secret_key_the_pods_read(deployments: list[dict], jobs: list[dict], project: Path):
    """k8s/README.md's `kubectl create secret` names every key the manifests read from the Secret."""
    used = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for dep in deployments + jobs
        for c in dep["spec"]["template"]["spec"]["containers"]
        for e in c["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    install = next(c for c in _shell_commands((project / "k8s" / "README.md").read_text()) if "create secret" in c)
    assert set(re.findall(r"--from-literal=([a-z-]+)=", install)) == used


def test_services_select_the_rollouts_pods(objects: list[dict], deployments: list[dict]):
    """One Service per track; the controller adds each ReplicaSet's pod-template hash to its selector."""
    services = _by_name(objects, "Service")
    assert set(services) == {f"{APP}-{t}" for t in TRACKS}
    (ro,) = deployments
    template = ro["spec"]["template"]
    (c,) = template["spec"]["containers"]
    names = {p["name"]: p["containerPort"] for p in c["ports"]}
    for svc in services.values():
        assert svc["spec"]["selector"] == {"app": APP}
        assert _selects(svc["spec"]["selector"], template["metadata"]["labels"])
        for port in svc["spec"]["ports"]:
            assert names.get(port["targetPort"], port["targetPort"]) == 8000


def test_httproute_weights_and_backends(objects: list[dict]):
    """All traffic to stable at rest; the Rollout's plugin moves the weights during a rollout."""
    (route,) = _of_kind(objects, "HTTPRoute")
    services = _by_name(objects, "Service")
    (parent,) = route["spec"]["parentRefs"]
    assert parent["name"] == "llm-gateway" and parent.get("kind", "Gateway") == "Gateway"
    for rule in route["spec"]["rules"]:
        refs = rule["backendRefs"]
        assert [(r["name"], r["weight"]) for r in refs] == [(f"{APP}-stable", 100), (f"{APP}-canary", 0)]
        for ref in refs:
            svc = services[ref["name"]]  # exists
            assert ref.get("namespace", NAMESPACE) == svc["metadata"]["namespace"]
            assert ref["port"] in {p["port"] for p in svc["spec"]["ports"]}


def test_pdb(objects: list[dict], deployments: list[dict], jobs: list[dict]):
    (pdb,) = _of_kind(objects, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    for dep in deployments:
        assert _selects(pdb["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
    # Not the rollout's Jobs: their pods carry a `role`, which the PDB excludes.
    assert pdb["spec"]["selector"]["matchExpressions"] == [{"key": "role", "operator": "DoesNotExist"}]
    assert all("role" in job["spec"]["template"]["metadata"]["labels"] for job in jobs)
    assert ("minAvailable" in pdb["spec"]) != ("maxUnavailable" in pdb["spec"])


def test_networkpolicy(objects: list[dict], deployments: list[dict], jobs: list[dict]):
    policies = _of_kind(objects, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1
    assert "Ingress" in deny[0]["spec"]["policyTypes"] and not deny[0]["spec"].get("ingress")
    app = [p for p in policies if p is not deny[0]]
    assert len(app) == 1
    spec = app[0]["spec"]
    for dep in deployments + jobs:  # the Jobs need DNS, MLflow (promotion) and the app's pods (load)
        assert _selects(spec["podSelector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"])
    ingress_ports = {p["port"] for rule in spec["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8000}
    assert all(rule.get("from") for rule in spec["ingress"]), "ingress from anywhere"
    sources = [peer for rule in spec["ingress"] for peer in rule["from"]]
    ns = {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for p in sources
        if "namespaceSelector" in p
    }
    assert {"gateway-system", "monitoring"} <= ns
    # Within the namespace only the app's own pods (the load Job, shadow calls stable -> canary).
    assert [p["podSelector"] for p in sources if "namespaceSelector" not in p] == [{"matchLabels": {"app": APP}}]
    egress = {(p.get("protocol", "TCP"), p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5000)} <= egress


# -------------------------------------------------------------------------------------------- runbooks


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE)


def _shell_commands(text: str) -> list[str]:
    """Logical command lines of the bash blocks: continuations joined, comments and `$ ` dropped."""
    commands = []
    for lang, body in _fenced_blocks(text):
        if lang not in ("bash", "sh", "shell", "console", ""):
            continue
        body = re.sub(r"\\\n\s*", " ", body)
        for line in body.splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


@pytest.fixture(scope="module")
def runbooks(project: Path) -> dict[str, str]:
    directory = project / "docs" / "runbooks"
    texts = {name: (directory / name).read_text() for name in RUNBOOKS}
    for name, text in texts.items():
        assert "{{" not in text and "{%" not in text, f"{name}: unrendered Jinja"
    return texts


def test_runbook_cli_commands_exist(runbooks: dict[str, str], project: Path):
    cli = project.name
    seen = set()
    for name, text in runbooks.items():
        for command in _shell_commands(text):
            words = command.split()
            if words[0] != cli:
                continue
            assert len(words) > 1 and words[1] in CLI_SUBCOMMANDS, f"{name}: {command}"
            if words[1] == "canary":
                assert len(words) > 2 and words[2] in CANARY_SUBCOMMANDS, f"{name}: {command}"
            seen.add(tuple(words[1:3]))
        # Inline `code` spans in prose too.
        for span in re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.DOTALL | re.MULTILINE)):
            words = span.split()
            if words and words[0] == cli:
                assert len(words) > 1 and words[1] in CLI_SUBCOMMANDS, f"{name}: {span}"
    assert ("canary", "analyze") in seen, seen


def test_runbook_make_targets_exist(runbooks: dict[str, str], project: Path):
    used = {
        c.split()[1]
        for text in runbooks.values()
        for c in _shell_commands(text)
        if c.startswith("make ") and len(c.split()) > 1
    }
    assert used and used <= MAKE_TARGETS_USED_BY_RUNBOOKS, used
    assert (project / "Makefile").is_file(), "the runbooks use make targets but the project has no Makefile"
    makefile = (project / "Makefile").read_text()
    for target in used:
        assert re.search(rf"^{target}\s*:", makefile, re.MULTILINE), f"Makefile has no target {target}"


def test_runbook_kubectl_commands_name_real_objects(runbooks: dict[str, str], objects: list[dict], project: Path):
    names = {(o["kind"].lower(), o["metadata"]["name"]) for o in objects}
    alias = {"svc": "service", "deploy": "deployment", "cm": "configmap", "pods": "pod"}
    texts = dict(runbooks)
    texts["k8s/README.md"] = (project / "k8s" / "README.md").read_text()
    count = 0
    for name, text in texts.items():
        for command in _shell_commands(text):
            if not command.startswith("kubectl "):
                continue
            count += 1
            if "apply" not in command.split()[1:2]:
                assert f"-n {NAMESPACE}" in command, f"{name}: {command}"
            for kind, obj in re.findall(r"\b(deployment|deploy|svc|service|rollout)/([a-z0-9-]+)", command):
                assert (alias.get(kind, kind), obj) in names, f"{name}: {command}"
            for kind, obj in re.findall(r"\b(httproute|configmap|pdb) ([a-z0-9-]+)", command):
                kind = {"pdb": "poddisruptionbudget"}.get(kind, kind)
                assert (kind, obj) in names, f"{name}: {command}"
    assert count > 10


def test_alert_rules(objects: list[dict], runbooks: dict[str, str]):
    (rule,) = _of_kind(objects, "PrometheusRule")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert len(alerts) >= 10
    used = set()
    for alert in alerts:
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, alert.get("alert")
        assert re.fullmatch(r"\d+[smh]", alert["for"])
        assert alert["labels"]["severity"] in {"page", "ticket"}
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}, alert["alert"]
        assert alert["annotations"]["runbook_url"] == f"docs/runbooks/alerting.md#{alert['alert'].lower()}"
        assert f"\n### {alert['alert']}\n" in runbooks["alerting.md"], alert["alert"]
        used |= set(re.findall(r"\bllm_[a-z_]+", alert["expr"]))
    assert used == ALERT_METRICS, used
    assert any("canary" in r["expr"] and "stable" in r["expr"] for r in alerts), "no canary-vs-stable rule"
    # The runbooks point at the rule file; they do not restate the PromQL (one copy of the rules).
    for name, text in runbooks.items():
        assert "expr:" not in text and "prometheusrule.yaml" in runbooks["alerting.md"], name


def test_alerts_pass_promtool(project: Path):
    """The baked project's own alert tests (promtool check + unit tests of each alert firing and not
    firing), with promtool required: CI set, so a missing promtool fails instead of skipping."""
    assert shutil.which("promtool"), "promtool not installed (make tools: Debian's prometheus package)"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_alerts.py"],
        cwd=project, env={**os.environ, "CI": "true"}, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"\b4 passed\b", out.stdout) and "skipped" not in out.stdout, out.stdout
