"""The alerts in k8s/prometheusrule.yaml: valid rules, each tested firing and not firing, each linking a
runbook section that exists.

promtool (Prometheus's rule checker, from the `prometheus` package) runs on the rule groups taken from
the PrometheusRule's `spec`, so the manifest stays the one copy of the rules. Without promtool the
promtool test is skipped, except on CI (`CI` set), where a skip would hide a broken rule.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "k8s" / "prometheusrule.yaml"
UNIT_TESTS = sorted((ROOT / "tests" / "alerts").glob("*_test.yaml"))
SEVERITIES = {"page", "ticket"}


def alert_rules() -> list[dict]:
    spec = yaml.safe_load(MANIFEST.read_text())["spec"]
    return [rule for group in spec["groups"] for rule in group["rules"] if "alert" in rule]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed: CI must run the alert tests (apt-get install prometheus)")
        pytest.skip("promtool is not installed (the `prometheus` package has it)")
    return path


def test_promtool_checks_the_rules_and_runs_their_unit_tests(tmp_path: Path):
    spec = yaml.safe_load(MANIFEST.read_text())["spec"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for test in UNIT_TESTS:
        shutil.copy(test, tmp_path / test.name)
    exe = promtool()
    for command in (["check", "rules", "rules.yaml"], ["test", "rules", *(t.name for t in UNIT_TESTS)]):
        out = subprocess.run([exe, *command], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    cases = [
        case
        for path in UNIT_TESTS
        for group in yaml.safe_load(path.read_text())["tests"]
        for case in group["alert_rule_test"]
    ]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "an alert name is used twice"
    assert fires == set(names) and quiet == set(names), (set(names) - fires, set(names) - quiet)


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_a_severity_a_summary_and_its_runbook_section():
    for rule in alert_rules():
        name, annotations = rule["alert"], rule["annotations"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path.startswith("docs/runbooks/") and (ROOT / path).is_file(), name
        assert anchor == name.lower() and anchor in _anchors((ROOT / path).read_text()), name


def test_every_threshold_is_marked_for_tuning():
    """Each alert that compares with a number has a `# tune:` comment in the lines just above it."""
    lines = MANIFEST.read_text().splitlines()
    comments: dict[str, str] = {}
    for i, line in enumerate(lines):
        if line.strip().startswith("- alert:"):
            above = []
            for previous in reversed(lines[:i]):
                if not previous.strip().startswith("#"):
                    break
                above.append(previous)
            comments[line.split(":", 1)[1].strip()] = "\n".join(above)
    for rule in alert_rules():
        if re.search(r"[<>] *[\d.]+ *$", rule["expr"], re.MULTILINE):
            assert "# tune:" in comments[rule["alert"]], rule["alert"]
