"""The gate's inputs, loaded once into one `GateInputs`: the base revision, files at the base
(through git), the head's files, and what DVC says (`dvc metrics diff --json`, `dvc status`). Every
failure is a `GateInputError` naming what is unusable and what to do: the gate exits 2 with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QUOTE_CHARS, UserError, clip, decode, quote
from ..evaluation import catalogue as catalogue_mod
from ..evaluation.metrics import is_number
from ..evaluation.results import Result, ResultsError
from ..evaluation.results import parse as parse_results
from ..judge import calibration
from ..settings import Policy, SettingsError, parse_policy

QUIET = {"DVC_NO_ANALYTICS": "1"}


class GateInputError(UserError):
    """The gate cannot judge (no metrics, null metrics, stale metrics, unknown base): exit 2."""


def git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=False)


def check_base(base: str) -> None:
    if git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").returncode != 0:
        raise GateInputError(
            f"unknown base revision {quote(base)}: fetch it first (in CI: `make fetch-base BASE=<branch>`)"
        )


def at_base(base: str, path: str) -> str | None:
    """The file's text at `base` (through git: metrics and results are committed), None if absent."""
    proc = subprocess.run(["git", "show", f"{base}:./{path}"], capture_output=True, check=False)
    return decode(proc.stdout, f"{path} at {base}", GateInputError) if proc.returncode == 0 else None


def load_json(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise GateInputError(f"{source} is not valid JSON ({exc}); re-run `dvc repro`") from None
    if not isinstance(data, dict):
        raise GateInputError(f"{source} must hold a JSON object of metrics, not {type(data).__name__}")
    return data


def read_head(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        raise GateInputError(f"{path} is missing on the head side: run `dvc repro` first") from None
    return decode(data, str(path), GateInputError)


def dvc_json(*args: str) -> Any:
    """Run `dvc <args>` (this interpreter's DVC, analytics off) and parse what it prints as JSON."""
    what = f"`dvc {' '.join(a for a in args if a != '--json')}`"
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **QUIET}, check=False)
    if proc.returncode != 0:
        raise GateInputError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    try:
        return json.loads(proc.stdout or "{}")
    except ValueError:
        raise GateInputError(f"{what} printed no JSON: {proc.stdout[:200]!r}") from None


def producing_stage(metrics_file: str, dvc_yaml: Path = Path("dvc.yaml")) -> str | None:
    """The dvc.yaml stage that declares `metrics_file` among its metrics or outputs."""
    import yaml

    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        return None
    for name, stage in stages.items():
        for key in ("metrics", "outs"):
            for out in stage.get(key) or []:
                path = next(iter(out)) if isinstance(out, dict) else out
                if Path(str(path)) == Path(metrics_file):
                    return str(name)
    return None


def check_fresh(metrics_file: str) -> None:
    """Fail when the stage producing the metrics, or any stage upstream of it (preprocess: the golden
    set), changed since it ran (`dvc status --with-deps`): the numbers would describe another head."""
    stage = producing_stage(metrics_file)
    changed = dvc_json("status", "--json", *(["--with-deps", stage] if stage else [metrics_file]))
    if changed:
        what = "; ".join(f"{stage}: {json.dumps(items)[:300]}" for stage, items in changed.items())
        stages = ", ".join(changed)
        raise GateInputError(f"{metrics_file} is stale: stage {stages} changed since it ran ({what}): run `dvc repro`")


def read_diff(base: str, metrics_file: str) -> dict[str, dict[str, Any]]:
    """`dvc metrics diff <base> --json --all` for our metrics file: {metric: {old, new, diff}}."""
    data = dvc_json("metrics", "diff", base, "--all", "--json", "--targets", metrics_file)
    # Keys are paths as DVC prints them; match ours regardless of ./ or platform separators.
    for path, metrics in data.items():
        if Path(path) == Path(metrics_file):
            return metrics
    return {}


def read_golden(path: Path) -> dict[str, dict[str, Any]]:
    """id -> example, for the report: an unreadable golden set costs the report its inputs (and a
    changed one makes the metrics stale, which `check_fresh` refuses)."""
    try:
        return _golden(path.read_bytes().decode("utf-8", errors="replace"))
    except OSError:
        return {}


def _golden(text: str) -> dict[str, dict[str, Any]]:
    examples = {}
    for line in text.split("\n"):
        try:
            example = json.loads(line)
        except ValueError:
            continue
        if isinstance(example, dict) and "id" in example:
            examples[str(example["id"])] = example
    return examples


@dataclass(frozen=True)
class GatePaths:
    metrics: Path = Path("eval/metrics.json")
    catalogue: Path = Path("eval/catalogue.json")
    results: Path = Path("eval/results.jsonl")
    golden: Path = Path("eval/golden.jsonl")
    params: Path = Path("params.yaml")


@dataclass(frozen=True)
class GateInputs:
    """Everything the verdict needs, read once: nothing after this touches git, DVC or a file."""

    base: str
    policy: Policy  # the bars that judge: the base's (see policy.py)
    diff: Mapping[str, Mapping[str, Any]]  # `dvc metrics diff`: metric -> {old, new, diff}
    head_metrics: Mapping[str, Any]
    catalogue: Mapping[str, catalogue_mod.Metric]  # the head's, completed by the base's
    head_results: Sequence[Result]
    base_results: Sequence[Result] | None  # None: no usable results at the base (no paired test)
    golden: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # id -> example, for the report
    notes: Sequence[str] = ()
    head_policy: Policy | None = None  # the head's own bars (None: the same as `policy`)
    base_golden: Mapping[str, Mapping[str, Any]] | None = None  # at the policy revision; None: unknown


def check_head(metrics: Mapping[str, Any], required: Sequence[str], source: str) -> None:
    for name in required:
        if name not in metrics:
            raise GateInputError(f"required metric {name!r} is missing from {source} (gate.required)")
        if not is_number(metrics[name]):
            shown = clip(json.dumps(metrics[name]), QUOTE_CHARS)
            raise GateInputError(f"required metric {name!r} is {shown} in {source}, not a number")


def read_policy(text: str, source: str) -> Policy:
    try:
        return parse_policy(text, source)
    except SettingsError as exc:
        raise GateInputError(str(exc)) from None


def with_calibration(policy: Policy, text: str | None, source: str) -> Policy:
    """`policy` with the rubric versions its calibration file (`text`, None: absent) lets count."""
    if text is None or not policy.judge.enabled:
        return policy
    try:
        found = calibration.calibrated_in(text, policy.judge.min_kappa, source)
    except calibration.CalibrationError as exc:
        raise GateInputError(str(exc)) from None
    return dataclasses.replace(policy, calibrated=found)


def load(base: str, paths: GatePaths, policy_ref: str | None = None) -> GateInputs:
    """Read and check every input of the gate (GateInputError on the first unusable one). The bars
    come from `policy_ref` (default: the base), the head's own bars only describe its changes."""
    check_base(base)
    policy_ref = policy_ref or base
    if policy_ref != base:
        check_base(policy_ref)
    notes = []
    head_policy = read_policy(read_head(paths.params), f"{paths.params} (head)")
    head_calibration = Path(head_policy.judge.calibration)
    if head_policy.judge.enabled and head_calibration.is_file():
        head_policy = with_calibration(head_policy, read_head(head_calibration), f"{head_calibration} (head)")
    policy_text = at_base(policy_ref, str(paths.params))
    if policy_text is None:
        policy = head_policy
        notes.append(f"No {paths.params} at `{policy_ref}`: the head's own bars apply.")
    else:
        policy = read_policy(policy_text, f"{paths.params} at {policy_ref}")
        where = policy.judge.calibration
        policy = with_calibration(policy, at_base(policy_ref, where), f"{where} at {policy_ref}")
    base_golden_text = at_base(policy_ref, str(paths.golden))
    base_golden = _golden(base_golden_text) if base_golden_text is not None else None
    metrics_file, results_file = str(paths.metrics), str(paths.results)
    head_metrics = load_json(read_head(paths.metrics), f"{metrics_file} (head)")
    check_head(head_metrics, policy.gate.required, f"{metrics_file} (head)")
    try:
        head_results = parse_results(read_head(paths.results), f"{results_file} (head)")
    except ResultsError as exc:
        raise GateInputError(str(exc)) from None
    base_text = at_base(base, metrics_file)
    if base_text is not None:
        load_json(base_text, f"{metrics_file} at {base}")  # a corrupt base would make every metric "new"
    check_fresh(metrics_file)
    diff = read_diff(base, metrics_file)
    catalogue = _catalogue(read_head(paths.catalogue), f"{paths.catalogue} (head)")
    base_catalogue = at_base(base, str(paths.catalogue))
    if base_catalogue is not None:
        # Metrics only the base has keep their meaning; an unreadable base catalogue only costs that.
        with contextlib.suppress(ValueError):
            catalogue = {**catalogue_mod.parse(base_catalogue, "base"), **catalogue}
    base_results: list[Result] | None = None
    text = at_base(base, results_file)
    if base_text is None:
        notes.append(f"No {metrics_file} at `{base}` (first run?): nothing to compare, the gate passes.")
    if text is None:
        notes.append(f"No {results_file} at `{base}`: paired statistics skipped.")
    else:
        try:
            base_results = parse_results(text, f"{results_file} at {base}")
        except ResultsError as exc:
            notes.append(f"Paired statistics skipped: {exc}")
    return GateInputs(
        base, policy, diff, head_metrics, catalogue, head_results, base_results, read_golden(paths.golden),
        tuple(notes), head_policy, base_golden,
    )  # fmt: skip


def _catalogue(text: str, source: str) -> dict[str, catalogue_mod.Metric]:
    try:
        return catalogue_mod.parse(text, source)
    except ValueError as exc:
        raise GateInputError(f"{exc}; re-run `dvc repro`") from None
