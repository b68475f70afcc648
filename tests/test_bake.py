"""Bake every option combination; check exactly what comes out; run each project's own checks."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.bakery import ROOT, link_venv, shared_python
from tests.conftest import (
    COOKIECUTTER,
    DEFAULTS,
    OPTIONS,
    SUPPORTED,
    TREES,
    all_combinations,
    code_tree,
    combo_id,
    run,
    tiered,
    unsupported,
)
from tests.test_gate_e2e import ANSWERS as GATE_DEMO
from tests.test_new_feature import ANSWERS as NEW_FEATURE

PACKAGE = "support_bot"
# Every file a default bake produces (outside .git). Adding a file to the template means adding it
# here: the list is the contract of what a user gets.
DEFAULT_FILES = {
    ".cruft.json", ".dvc/.gitignore", ".dvc/config", ".dvcignore", ".env.example", ".gitattributes", ".pre-commit-config.yaml",
    ".github/CODEOWNERS", ".github/pull_request_template.md",
    ".github/dependabot.yml", ".github/workflows/ci.yml", ".github/workflows/retrain.yml", ".gitignore",
    ".python-version", "Makefile", "README.md", "dvc.yaml", "params.yaml", "pyproject.toml",
    ".dockerignore", "Dockerfile",
    "data/raw/README.md", "data/processed/.gitignore", "models/README.md", "eval/golden.jsonl",
    "eval/judge_calibration.json",
    "docs/runbooks/alerting.md", "docs/runbooks/production-loop.md", "docs/runbooks/incident.md", "docs/runbooks/rollback.md",
    "k8s/README.md", "k8s/analysis.yaml", "k8s/configmap.yaml", "k8s/eval-job.yaml", "k8s/rollout.yaml",
    "k8s/httproute.yaml", "k8s/kustomization.yaml", "k8s/namespace.yaml", "k8s/networkpolicy.yaml",
    "k8s/pdb.yaml", "k8s/prometheusrule.yaml", "k8s/service-canary.yaml", "k8s/service-stable.yaml",
    "k8s/serviceaccount.yaml", "prompts/schema.json",
    *(f"src/{PACKAGE}/{name}" for name in (
        "__init__.py", "__main__.py", "cli.py", "envfile.py", "errors.py", "objectstore.py", "settings.py",
        "strict_json.py",
        "app/__init__.py", "app/async_client.py", "app/client.py", "app/contract.py", "app/embedded.py",
        "app/loader.py", "app/prompts.py", "app/retry.py", "app/runtime.py", "app/scaffold.py",
        "evaluation/__init__.py", "evaluation/cache.py", "evaluation/catalogue.py", "evaluation/golden.py",
        "evaluation/metrics.py", "evaluation/report.py", "evaluation/results.py", "evaluation/runner.py",
        "evaluation/scorers.py", "evaluation/shards.py", "evaluation/stats.py",
        "gate/__init__.py", "gate/command.py", "gate/inputs.py", "gate/paired.py", "gate/policy.py",
        "gate/plan.py", "gate/power.py", "gate/report.py", "gate/verdict.py",
        "judge/__init__.py", "judge/calibration.py", "judge/command.py", "judge/kappa.py", "judge/pairwise.py",
        "judge/rubric.py", "judge/summary.py",
        "registry/__init__.py", "registry/faults.py", "registry/lifecycle.py", "registry/pyfunc.py",
        "registry/release.py", "registry/store.py", "registry/versions.py",
        "serving/__init__.py", "serving/admission.py", "serving/analysis.py", "serving/asgi.py", "serving/canary.py",
        "serving/eval_job.py", "serving/loadgen.py", "serving/manifests.py", "serving/observability.py", "serving/rollout.py", "serving/server.py", "serving/shadow.py",
        "serving/validation.py",
        "production/__init__.py", "production/records.py", "production/shipping.py",
        "production/harvest.py", "production/capture.py",
        "production/drift/__init__.py", "production/drift/command.py", "production/drift/divergence.py",
        "production/drift/probe.py", "production/drift/report.py", "production/drift/samples.py",
        "production/drift/verdict.py",
        "stages/__init__.py", "stages/evaluate.py", "stages/merge.py", "stages/plots.py",
        "stages/preprocess.py", "stages/register.py",
        "viewer/__init__.py", "viewer/assets.py", "viewer/charts.py", "viewer/eval_page.py", "viewer/gate_page.py",
        "viewer/page.py",
        "testing/__init__.py", "testing/fake_judge.py", "testing/fake_model.py", "testing/prompt_checks.py", "testing/toy.py",
    )),
    "tests/alerts/daily_test.yaml", "tests/alerts/prometheusrule_test.yaml", "tests/test_alerts.py",
    "tests/conftest.py", "tests/live_server.py", "tests/pipeline_outputs.py", "tests/test_architecture.py",
    "tests/test_bad_input.py", "tests/test_canary.py",
    "tests/test_cli.py", "tests/test_client.py", "tests/test_container.py", "tests/test_embedded.py",
    "tests/test_envfile.py", "tests/test_evaluate.py", "tests/test_gate.py", "tests/test_golden.py", "tests/test_observability.py",
    "tests/test_prompts.py", "tests/test_properties_cli.py", "tests/test_registry.py", "tests/test_rollout.py", "tests/test_runner.py", "tests/test_scorers.py",
    "tests/test_properties_server.py", "tests/test_server.py", "tests/test_server_limits.py", "tests/test_settings.py", "tests/test_shipping.py",
    "tests/test_harvest.py", "tests/test_capture.py", "tests/test_drift.py", "tests/test_shards.py", "tests/test_judge.py", "tests/test_power.py",
    "tests/test_viewer.py",
}  # fmt: skip
# The example app (example_app=support-bot): its code, prompts, data and tests, pruned with it.
SUPPORT_BOT_FILES = {
    "data/policies.yaml", "eval/judge_labels.jsonl", "prompts/answer_policy.yaml", "prompts/classify_intent.yaml", "prompts/extract_order.yaml",
    f"src/{PACKAGE}/support/__init__.py", f"src/{PACKAGE}/support/flow.py", f"src/{PACKAGE}/support/policies.py",
    "tests/support/support_fakes.py", "tests/support/test_support_app.py", "tests/support/test_support_embedded.py",
}  # fmt: skip
# example_app=none: one generic prompt and the test `new prompt` writes for it.
STARTER_FILES = {"prompts/sentiment.yaml", "tests/prompts/test_sentiment.py"}
EMBEDDED_ONLY = {f"src/{PACKAGE}/app/embedded.py", "tests/test_embedded.py", "tests/support/test_support_embedded.py"}


def expected_files(answers: dict[str, str]) -> set[str]:
    files = set(DEFAULT_FILES)
    files |= SUPPORT_BOT_FILES if answers["example_app"] == "support-bot" else STARTER_FILES
    if answers["model_backend"] != "embedded":
        files -= EMBEDDED_ONLY
    return files


def project_files(project: Path) -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def copied_raw(rel: str) -> bool:
    return any(fnmatch(rel, pattern) for pattern in COOKIECUTTER["_copy_without_render"])


@pytest.mark.parametrize("answers", tiered(SUPPORTED), ids=combo_id)
def test_bake_gives_exactly_the_expected_files(bake, answers):
    project = bake(**answers)
    assert project.name == "support-bot"
    assert project_files(project) == expected_files(answers)
    # The hook committed everything: a clean tree on `main` with one baseline commit.
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True, check=False)
    assert status.stdout == ""
    branch = subprocess.run(
        ["git", "branch", "--show-current"], cwd=project, capture_output=True, text=True, check=False
    )
    assert branch.stdout.strip() == "main"


@pytest.mark.parametrize("answers", tiered(SUPPORTED), ids=combo_id)
def test_no_template_syntax_is_left_over(bake, answers):
    project = bake(**answers)
    for rel in project_files(project):
        text = (project / rel).read_text()
        if copied_raw(rel):
            # Copied verbatim (they have their own braces): they must not need cookiecutter at all.
            assert not re.search(r"cookiecutter\.\w", text), f"{rel} is copied without rendering but uses cookiecutter"
        else:
            # Literal double braces are legitimate test data in a few files; Jinja is not.
            leftover = re.findall(r"\{\{-?\s*cookiecutter|\{%|%\}|\{#", text)
            assert not leftover, f"{rel} has unrendered template syntax: {leftover}"


@pytest.mark.parametrize("answers", tiered(SUPPORTED), ids=combo_id)
def test_each_option_changes_the_project(bake, answers):
    project = bake(**answers)
    params = (project / "params.yaml").read_text()
    dvc_config = (project / ".dvc" / "config").read_text()
    ci = (project / ".github" / "workflows" / "ci.yml").read_text()
    pyproject = (project / "pyproject.toml").read_text()
    if answers["model_backend"] == "embedded":
        assert "base_url: embedded" in params and "xllamacpp==" in pyproject
    else:
        assert "api_key_env: MODEL_API_KEY" in params and "xllamacpp==" not in pyproject
        assert "MODEL_API_KEY=" in (project / ".env.example").read_text()
    if answers["dvc_remote"] == "local":
        assert "url = ../../support-bot-dvc-storage" in dvc_config
    else:
        assert "url = s3://support-bot-dvc/cache" in dvc_config
    assert "analytics = false" in dvc_config
    if answers["mlflow_tracking"] == "sqlite":
        assert "tracking_uri: sqlite:///mlflow.db" in params
    else:
        assert "tracking_uri: http://127.0.0.1:5000" in params
    runner = "ubuntu-latest" if answers["eval_runner"] == "ubuntu-latest" else "[self-hosted, gpu]"
    assert f"runs-on: {runner}  # eval_runner" in ci
    dvc_yaml = (project / "dvc.yaml").read_text()
    if answers["example_app"] == "support-bot":
        assert f"entry: {PACKAGE}.support:APP" in params and "data/policies.yaml" in dvc_yaml
        assert "prompt_routes: false" in params and "tag_intent_pass_rate" in params
    else:
        assert 'entry: ""' in params and "policies" not in dvc_yaml + params
        assert "prompt_routes: true" in params and "intent" not in params


def code_files(project: Path) -> dict[str, str]:
    """What the generated suite runs: the package and its tests (path -> text)."""
    return {rel: (project / rel).read_text() for rel in project_files(project) if rel.startswith(("src/", "tests/"))}


@pytest.mark.parametrize("answers", tiered([c for c in SUPPORTED if c not in TREES]), ids=combo_id)
def test_bakes_that_differ_only_in_text_share_a_tested_code_tree(bake, answers):
    """The suite runs once per code tree (below); every other bake has exactly that tree's code."""
    (tested,) = [t for t in TREES if code_tree(t) == code_tree(answers)]
    assert code_files(bake(**answers)) == code_files(bake(**tested))


# Each code tree's suite runs once a tier. Two trees' suites run in the full tier inside an end-to-end
# test, as a user runs them: the default tree's through the CI workflow's own `checks` job in a fresh
# clone; `example_app=none` with `openai-compatible` (a team's own app on its own endpoint) as its
# `make test` once a team's feature is in it. Here: the default tree in the fast tier, the others
# in the full tier.
SUITE_RUN_END_TO_END = {
    code_tree({**DEFAULTS, **GATE_DEMO}): ("tests.test_gate_e2e", "test_ci_run_steps_work_in_a_fresh_clone"),
    code_tree({**DEFAULTS, **NEW_FEATURE}): ("tests.test_new_feature", "test_a_new_feature_needs_no_framework_file"),
}
SUITES = [pytest.param(TREES[0], marks=pytest.mark.fast_only)]
SUITES += [
    pytest.param(t, marks=[pytest.mark.full, pytest.mark.long])
    for t in TREES[1:]
    if code_tree(t) not in SUITE_RUN_END_TO_END
]


def test_the_suites_run_end_to_end_are_there():
    """The trees left out above are run by the tests named there: those tests exist, as named."""
    assert code_tree(TREES[0]) in SUITE_RUN_END_TO_END
    for module, name in SUITE_RUN_END_TO_END.values():
        assert callable(getattr(importlib.import_module(module), name, None)), f"{module}::{name}"


# A generated suite runs on two workers of its own, beside the tier's: a third of its time is spent
# waiting (servers starting, timeouts and retries played out, subprocesses), so the cores have room
# (measured: make test at 9 min 26 s with the suites serial and the CPUs 68 % busy).
SUITE_WORKERS = ("-n", "2")


@pytest.mark.parametrize("answers", SUITES, ids=combo_id)
def test_baked_project_passes_its_own_lint_and_tests(ready, answers):
    project = ready(**answers)
    run(project, "python", "-m", "ruff", "check", "src", "tests")
    run(project, "python", "-m", "ruff", "format", "--check", "src", "tests")
    run(project, "python", "-m", PACKAGE, "prompts", "check")
    run(project, "python", "-m", PACKAGE, "params")
    tests = run(project, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE_WORKERS)
    assert re.search(r"\d+ passed", tests.stdout) and "failed" not in tests.stdout


def test_baked_console_scripts_and_help(ready):
    project = ready()
    for script in ("support-bot", "support_bot"):
        out = run(project, script, "--help").stdout
        assert "usage: support-bot <command>" in out and "gate" in out


def test_broken_params_is_one_clear_line_exit_2(ready):
    project = ready()
    params = project / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("  repeats: 1", "  repeats: 1\n  repeets: 2"))
        proc = run(project, "support-bot", "params", check=False)
        assert proc.returncode == 2
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert re.search(r"params\.yaml:\d+: eval\.repeets: unknown key", proc.stderr)
        params.write_text(re.sub(r"concurrency: \d+", "concurrency: two", original, count=1))
        proc = run(project, "support-bot", "params", check=False)
        assert proc.returncode == 2 and "eval.concurrency: expected int, got str 'two'" in proc.stderr
    finally:
        params.write_text(original)


def test_secrets_and_local_reports_are_never_committed(bake):
    """git ignores .env, the gate's report and local state; .env stays out of DVC and the image. The
    pipeline's outputs, reviewed in PRs, are committed."""
    project = bake()

    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=project, check=False).returncode == 0

    local = (".env", "data/raw/.env", "eval/gate.md", "eval/gate.html", ".cache/gate.log", ".cache/eval/x.jsonl", "mlflow.db",
             ".hypothesis/examples")  # fmt: skip
    assert [p for p in local if not ignored(p)] == []
    reviewed = ["eval/report.md", "eval/report.html", "eval/metrics.json", "eval/results.jsonl", "eval/catalogue.json"]
    reviewed.append(".env.example")
    assert [p for p in (*reviewed, "eval/plots/tags.json", "models/version.json") if ignored(p)] == []
    attributes = ["git", "check-attr", "diff", "linguist-generated", "--", "eval/report.html"]
    page = subprocess.run(attributes, cwd=project, capture_output=True, text=True, check=True).stdout
    assert page.splitlines() == ["eval/report.html: diff: unset", "eval/report.html: linguist-generated: true"]
    assert ".env" in (project / ".dvcignore").read_text().splitlines()
    assert "**/.env" in (project / ".dockerignore").read_text().splitlines()


@pytest.mark.parametrize(
    ("answers", "field"),
    [
        ({"project": "Support Bot"}, "project"),
        ({"project": "1bot"}, "project"),
        ({"project": "bot--x"}, "project"),
        ({"package": "class"}, "package"),
        ({"package": "my-package"}, "package"),
        *(
            (combo, unsupported(combo))
            for combo in all_combinations()
            if unsupported(combo) and all(combo[k] == DEFAULTS[k] for k in combo if k not in ("eval_runner",))
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()),
)
def test_invalid_answers_are_rejected_by_the_pre_gen_hook(tmp_path, answers, field):
    cmd = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path), str(ROOT)]
    cmd += [f"{k}={v}" for k, v in answers.items()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    messages = [line for line in proc.stderr.splitlines() if line.startswith("cookiecutter-llmops:")]
    assert len(messages) == 1 and messages[0].startswith(f"cookiecutter-llmops: {field}:"), proc.stderr
    assert not any(tmp_path.iterdir()), "a rejected bake must leave nothing behind"


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_a_value_outside_a_choice_list_is_refused_and_bakes_nothing(tmp_path, option):
    """Choice options are checked by cookiecutter itself (before any hook runs)."""
    cmd = [sys.executable, "-m", "cookiecutter", "--no-input", "-o", str(tmp_path), str(ROOT), f"{option}=2.7"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert f"2.7 provided for choice variable {option}, but the choices are {OPTIONS[option]}" in proc.stderr
    assert not any(tmp_path.iterdir()), "a rejected bake must leave nothing behind"


def test_answers_are_kept_for_cruft(bake):
    project = bake()
    cruft = json.loads((project / ".cruft.json").read_text())
    context = cruft["context"]["cookiecutter"]
    assert {k: context[k] for k in DEFAULTS} == DEFAULTS
    assert {".git", ".dvc"} <= set(cruft["skip"])
    assert Path(cruft["template"]) == ROOT


def test_project_dependencies_match_the_shared_test_environment(bake):
    """The suite installs the baked projects' dependencies once (pyproject group `project`):
    it must list exactly what a baked project declares, or the bakes are tested on other versions."""
    import tomllib

    root = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["dependency-groups"]["project"])
    embedded = set()
    for answers in ({}, {"model_backend": "openai-compatible"}):
        baked = tomllib.loads((bake(**answers) / "pyproject.toml").read_text())["project"]
        extras = baked["optional-dependencies"]
        embedded |= set(extras.get("embedded", []))
        declared = set(baked["dependencies"]) | set(extras["dev"]) | set(extras["serve"])
        declared |= set(extras.get("embedded", []))
        expected = root if answers.get("model_backend") != "openai-compatible" else root - embedded
        assert declared == expected, declared ^ expected
    assert embedded and embedded <= root, "the embedded model's runtime is in the shared environment"


# Every python_version choice but the default, on the default code tree, run by that Python.
OTHER_PYTHONS = [
    {**DEFAULTS, "python_version": v} for v in OPTIONS["python_version"] if v != DEFAULTS["python_version"]
]
# What the full tier runs on each other Python (the nightly tier runs the whole suite): every module
# imported, then the generated tests of the parts that lean on compiled wheels and on the newest
# language and library changes - the eval CLI (cache, keys, signals), the service, the paired
# statistics (scipy), the settings (pydantic), the embedded model (xllamacpp), the registry (mlflow).
# Measured: 19 CPU-seconds a Python, against 85 for the whole suite.
SMOKE = (
    "tests/test_evaluate.py", "tests/test_server.py", "tests/test_gate.py", "tests/test_settings.py",
    "tests/test_embedded.py::test_server_answers_on_loopback_and_is_gone_afterwards",
    "tests/test_registry.py::test_register_promote_rollback_and_the_champion_answers",
)  # fmt: skip
IMPORT_ALL = (
    "import importlib, pkgutil, {0}; "
    "print(sum(1 for m in pkgutil.walk_packages({0}.__path__, '{0}.') if importlib.import_module(m.name)))"
)


def on_its_python(bake, answers: dict[str, str]) -> Path:
    """The project baked for `answers`, its venv on the Python it names (checked)."""
    project = bake(**answers)
    link_venv(project, shared_python(answers["python_version"]))
    version = run(project, "python", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    assert version == answers["python_version"] == (project / ".python-version").read_text().strip()
    return project


@pytest.mark.full
@pytest.mark.parametrize("answers", OTHER_PYTHONS, ids=combo_id)
def test_baked_project_imports_and_passes_its_smoke_tests_on_its_python(bake, answers):
    project = on_its_python(bake, answers)
    modules = run(project, "python", "-c", IMPORT_ALL.format(PACKAGE)).stdout
    assert int(modules) > 50, modules
    tests = run(project, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", *SMOKE)
    assert re.search(r"\d+ passed", tests.stdout) and not re.search(r"failed| skipped|deselected", tests.stdout)


@pytest.mark.nightly
@pytest.mark.long
@pytest.mark.parametrize("answers", OTHER_PYTHONS, ids=combo_id)
def test_baked_project_passes_its_own_tests_on_its_python(bake, answers):
    project = on_its_python(bake, answers)
    tests = run(project, "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITE_WORKERS)
    assert re.search(r"\d+ passed", tests.stdout) and "failed" not in tests.stdout


@pytest.mark.parametrize("answers", TREES, ids=combo_id)
def test_readme_layout_table_matches_the_tree(bake, answers):
    """Every path the generated README's layout table names exists, and every folder of the package
    and of the project is in the table."""
    project = bake(**answers)
    readme = (project / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in table.strip().splitlines()[2:]:
        first, *rest = re.findall(r"`([^`]+)`", row.split("|")[1])
        # `src/pkg/cli.py`, `settings.py`: a bare name sits beside the first path of its row.
        named |= {first.rstrip("/"), *(p if "/" in p else str(Path(first).parent / p) for p in rest)}
    import yaml

    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values()
    outputs = {
        next(iter(o)) if isinstance(o, dict) else o for st in stages for k in ("outs", "metrics") for o in st.get(k, [])
    }
    for path in named - outputs:  # what the pipeline writes exists only after `dvc repro`
        assert (project / path).exists(), f"README layout names {path}, which the bake does not have"
    files = project_files(project)
    folders = {rel.split("/")[0] for rel in files if "/" in rel and not rel.startswith(".")}
    folders |= {
        "/".join(rel.split("/")[:3]) for rel in files if rel.startswith(f"src/{PACKAGE}/") and rel.count("/") > 2
    }
    covered = {f for f in folders if any(f == n or f.startswith(n + "/") or n.startswith(f + "/") for n in named)}
    assert folders == covered, f"folders missing from the README layout table: {sorted(folders - covered)}"


def test_the_framework_never_names_the_example(bake):
    """No framework module names the example's prompts, data, fields or routes: the example can go."""
    project = bake()
    example = ("classify_intent", "extract_order", "answer_policy", "policies", "/v1/answer", "order_id", "intent")
    framework = [p for p in (project / "src" / PACKAGE).rglob("*.py") if "support" not in p.parts]
    for path in framework:
        text = path.read_text()
        assert not [name for name in example if name in text], path.relative_to(project)
    for path in (project / "tests").glob("*.py"):  # the framework's tests: the example's live in tests/support/
        assert not [name for name in ("classify_intent", "policies", "/v1/answer") if name in path.read_text()], path
