"""params.yaml -> frozen, typed settings, validated once at the entry point.

Every key is declared here. An unknown key, a duplicate key, a missing key, a value of the wrong
type or out of its range (the `Annotated` checks below), a URL that is not one, a metric name no
evaluation can produce: each is a `SettingsError` naming the file, the line and the dotted key,
`params.yaml:LINE: dotted.key: message`. A typo in params.yaml must never become a silent default
or a failure later, after model calls. Secrets are never read from params.yaml, only the *name* of
the env var.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

import yaml

from . import PROJECT
from .errors import UserError, clip, key_path, quote, read_text

PARAMS_FILE = Path("params.yaml")
EMBEDDED = "embedded"


class SettingsError(UserError):
    """A user mistake in params.yaml or the environment; the message is the whole story."""


# -- checks on values: `Annotated[int, AT_LEAST_1]`; a check returns what is wrong, or None ---------

Check = Callable[[Any], str | None]


def _check(ok: Callable[[Any], bool], says: str) -> Check:
    return lambda value: None if ok(value) else f"{says}, got {quote(value)}"


POSITIVE = _check(lambda v: v > 0, "must be greater than 0")
NOT_NEGATIVE = _check(lambda v: v >= 0, "must be 0 or more")
AT_LEAST_1 = _check(lambda v: v >= 1, "must be at least 1")
SHARE = _check(lambda v: 0 <= v <= 1, "must be between 0 and 1")
OPEN_SHARE = _check(lambda v: 0 < v < 1, "must be between 0 and 1, both excluded")
NOT_EMPTY = _check(lambda v: bool(v.strip()), "must not be empty")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _base_url(value: str) -> str | None:
    from urllib.parse import urlsplit

    if value == EMBEDDED:
        return None
    wanted = f"must be `{EMBEDDED}` or an http(s) URL with a host, e.g. http://127.0.0.1:8000/v1"
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 (raises ValueError on a port that is not a number)
    except ValueError:
        return f"{wanted}, got {quote(value)}"
    if url.username or url.password:
        # Never echo it: the user:password part is a credential.
        return "must not carry credentials (user:password@): name the key's env var in model.api_key_env"
    if url.scheme not in ("http", "https") or not url.hostname or any(c.isspace() for c in value):
        return f"{wanted}, got {quote(value)}"
    return None


def _env_name(value: str) -> str | None:
    if value == "" or _ENV_NAME.fullmatch(value):
        return None
    # Never echo the value: a key pasted here instead of the variable's name is a secret.
    return "must be the NAME of an environment variable (letters, digits, _), never the key itself"


def _metric(name: str) -> str | None:
    """A metric some evaluation can produce (eval/catalogue.json lists those of the last run)."""
    import difflib

    from .evaluation.catalogue import FIXED_NAMES, known_name, scorer_metrics
    from .evaluation.scorers import SCORERS

    if known_name(name, SCORERS):
        return None
    if name.startswith("judge_rate"):
        # An uncalibrated judge must never gate: its verdicts reach the bars through pass_rate, once calibrated.
        return "the LLM judge's verdicts gate through pass_rate once calibrated (`judge calibrate`), never alone"
    names = sorted(FIXED_NAMES | {m.name for s in SCORERS for m in scorer_metrics(s, "")})
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return (
        f"no such metric {quote(name)}: {hint}(the fixed metrics, <scorer>_rate for each scorer, "
        "tag_<tag>_pass_rate; see the README's metrics)"
    )


MetricName = Annotated[str, _metric]


@dataclass(frozen=True)
class ModelSettings:
    base_url: Annotated[str, _base_url]  # "embedded" starts the bundled llama.cpp server; else an OpenAI-compatible URL
    name: Annotated[str, NOT_EMPTY]
    api_key_env: Annotated[str, _env_name] = ""  # name of the env var that holds the key; "" = no key
    temperature: Annotated[float, NOT_NEGATIVE] = 0.0
    seed: int = 42
    max_tokens: Annotated[int, AT_LEAST_1] = 128
    connect_timeout_s: Annotated[float, POSITIVE] = 5.0
    read_timeout_s: Annotated[float, POSITIVE] = 60.0
    input_usd_per_1m_tokens: Annotated[float, NOT_NEGATIVE] = 0.0
    output_usd_per_1m_tokens: Annotated[float, NOT_NEGATIVE] = 0.0
    # `embedded` only: llama.cpp's parallel slots. 1 = deterministic; more batches concurrent
    # requests (faster) but answers may then differ from run to run (app/embedded.py).
    embedded_slots: Annotated[int, AT_LEAST_1] = 1
    # `embedded` only: llama.cpp's threads. Fixed, not the core count: 1 and 2 threads answer differently.
    embedded_threads: Annotated[int, AT_LEAST_1] = 2

    @property
    def embedded(self) -> bool:
        return self.base_url == EMBEDDED

    def api_key(self) -> str | None:
        """The key from the env var named in params; a clear error when it is named but unset."""
        return key_from_env("model", self.api_key_env)


def key_from_env(section: str, env: str) -> str | None:
    """The value of the env var `<section>.api_key_env` names (None when it names none); a clear
    error when it is named but unset: keys live in the environment, never in params.yaml."""
    if not env:
        return None
    key = os.environ.get(env, "")
    if not key:
        raise SettingsError(
            f"{section}.api_key_env: environment variable {env} is not set or empty "
            "(export it or put it in .env, see .env.example; in CI, a secret; never in params.yaml)"
        )
    return key


def _judge_url(value: str) -> str | None:
    if value == "":
        return None
    if value == EMBEDDED:
        return "must be the http(s) URL of an OpenAI-compatible judge endpoint, or empty (no judge)"
    return _base_url(value)


KAPPA = _check(lambda v: -1 <= v <= 1, "must be between -1 and 1 (Cohen's kappa)")


@dataclass(frozen=True)
class JudgeSettings:
    """The LLM judge (judge/): off while `base_url` is empty. Its verdicts count towards an answer's
    pass only for a rubric version whose calibration (`judge calibrate`) reached `min_kappa`."""

    base_url: Annotated[str, _judge_url] = ""  # an OpenAI-compatible URL; "" = no judge
    name: str = ""  # the judge model (part of every rubric version)
    api_key_env: Annotated[str, _env_name] = ""  # name of the env var that holds its key; "" = no key
    temperature: Annotated[float, NOT_NEGATIVE] = 0.0
    max_tokens: Annotated[int, AT_LEAST_1] = 256
    input_usd_per_1m_tokens: Annotated[float, NOT_NEGATIVE] = 0.0
    output_usd_per_1m_tokens: Annotated[float, NOT_NEGATIVE] = 0.0
    min_kappa: Annotated[float, KAPPA] = 0.6  # Cohen's kappa with the human labels a rubric needs to gate
    pairwise: bool = False  # the gate also judges base vs head answers side by side (judge/pairwise.py)
    labels: Annotated[str, NOT_EMPTY] = "eval/judge_labels.jsonl"  # human verdicts `judge calibrate` reads
    calibration: Annotated[str, NOT_EMPTY] = "eval/judge_calibration.json"  # what it writes (committed)

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    def problems(self) -> Iterator[tuple[tuple[str, ...], str]]:
        if self.base_url and not self.name.strip():
            yield ("name",), "must name the judge model when judge.base_url is set"

    def api_key(self) -> str | None:
        """The judge's key from the env var named in params; a clear error when it is named but unset."""
        return key_from_env("judge", self.api_key_env)

    def as_model(self) -> ModelSettings:
        """The judge as a model endpoint, for the one client and cache every call goes through."""
        return ModelSettings(
            base_url=self.base_url, name=self.name, api_key_env=self.api_key_env, temperature=self.temperature,
            max_tokens=self.max_tokens, input_usd_per_1m_tokens=self.input_usd_per_1m_tokens,
            output_usd_per_1m_tokens=self.output_usd_per_1m_tokens,
        )  # fmt: skip


@dataclass(frozen=True)
class AppSettings:
    """Which app the project runs (see app/contract.py)."""

    entry: str = ""  # `module:attribute` naming an App; "" = the prompts alone, each on its own


@dataclass(frozen=True)
class EvalSettings:
    concurrency: Annotated[int, AT_LEAST_1] = 4
    repeats: Annotated[int, AT_LEAST_1] = 1
    max_error_rate: Annotated[float, SHARE] = 0.2  # abort the run above this share of errored calls
    max_attempts: Annotated[int, AT_LEAST_1] = 4  # per call, retries included
    max_retry_s: Annotated[float, NOT_NEGATIVE] = 60.0  # total time one call may spend retrying
    cache_dir: Annotated[str, NOT_EMPTY] = ".cache/eval"
    shards: Annotated[int, AT_LEAST_1] = 1  # CI matrix jobs / Indexed Job completions; 1 = one job
    cache_url: str = ""  # fsspec URL of the response cache shared by shards and runs; "" = local only


@dataclass(frozen=True)
class Thresholds:
    """Absolute bars a version must clear to be registered as `candidate`."""

    min: dict[MetricName, float] = field(default_factory=dict)
    max: dict[MetricName, float] = field(default_factory=dict)

    def problems(self) -> Iterator[tuple[tuple[str, ...], str]]:
        for bound, bars in (("min", self.min), ("max", self.max)):
            for name, bar in bars.items():
                if _is_rate(name) and not 0 <= bar <= 1:
                    yield (bound, name), f"{name} is a rate: the bar must be between 0 and 1, got {quote(bar)}"
        for name in self.min.keys() & self.max.keys():
            if self.min[name] > self.max[name]:
                yield ("max", name), f"below thresholds.min.{name} ({self.min[name]}): no version could pass"


@dataclass(frozen=True)
class GateSettings:
    """The PR gate: how far a metric may move against the base before the PR fails."""

    alpha: Annotated[float, OPEN_SHARE] = 0.05  # a paired (McNemar) test at this level decides whether a drop is real
    required: tuple[MetricName, ...] = ("pass_rate",)
    tolerance: dict[MetricName, Annotated[float, NOT_NEGATIVE]] = field(default_factory=dict)
    max_drop: Annotated[float, SHARE] = (
        0.10  # net share of examples flipping to failing that fails even when not significant
    )
    detect: Annotated[float, OPEN_SHARE] = 0.10  # the pass-rate drop the golden set should detect (gate/power.py)


@dataclass(frozen=True)
class RegistrySettings:
    tracking_uri: Annotated[str, NOT_EMPTY] = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI in the env wins
    model_name: Annotated[str, NOT_EMPTY] = PROJECT

    def resolved_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


@dataclass(frozen=True)
class ServeSettings:
    """The HTTP service: a user waits on every call, so retries are short and bounded (serving/server.py)."""

    max_attempts: Annotated[int, AT_LEAST_1] = 2  # per model call, retries included
    max_retry_s: Annotated[float, NOT_NEGATIVE] = 10.0  # total time one model call may spend retrying
    max_input_chars: Annotated[int, AT_LEAST_1] = 4000  # a request with a longer text value is rejected with 422
    prompt_routes: bool = True  # POST /v1/run/<prompt> for every prompt, besides the app's flows
    shadow_max_inflight: Annotated[int, NOT_NEGATIVE] = 4  # shadow calls beyond this are dropped, never queued
    request_timeout_s: Annotated[float, POSITIVE] = 30.0  # one request, body to reply; past it a 504
    max_body_bytes: Annotated[int, AT_LEAST_1] = 65536  # a longer request body is a 413 (chunked ones too)
    max_inflight: Annotated[int, AT_LEAST_1] = 1000  # requests answered at once; one more is a 429 (Retry-After)
    api_keys_env: Annotated[str, _env_name] = ""  # env var with the comma-separated API keys; "" = no keys
    client_max_inflight: Annotated[int, NOT_NEGATIVE] = 0  # per caller at once (0 = no limit); then 429
    client_rate_per_s: Annotated[float, NOT_NEGATIVE] = 0.0  # per caller a second (0 = no limit); then 429


@dataclass(frozen=True)
class CanarySettings:
    """The canary analysis (serving/analysis.py): when the canary is worse than stable. Rollback if any
    check fails; no verdict on too little traffic."""

    min_requests: Annotated[int, AT_LEAST_1] = 50  # per track; fewer -> "inconclusive" (exit 3), no decision
    error_rate_ratio: Annotated[float, POSITIVE] = 2.0  # canary error rate may be at most ratio * stable's + margin
    error_rate_margin: Annotated[float, NOT_NEGATIVE] = 0.01
    latency_p95_ratio: Annotated[float, POSITIVE] = 1.5  # canary p95 may be at most ratio * stable's + margin
    latency_p95_margin_s: Annotated[float, NOT_NEGATIVE] = 0.05
    cost_ratio: Annotated[float, POSITIVE] = 1.5  # canary USD per answer may be at most ratio * stable's + margin
    cost_margin_usd: Annotated[float, NOT_NEGATIVE] = 0.0
    min_schema_valid_rate: Annotated[float, SHARE] = 0.95  # canary answers of prompts with an output schema
    min_agreement: Annotated[float, SHARE] = 0.8  # shadow/online agreement (each flow's decision), when measured
    min_shadow_samples: Annotated[int, AT_LEAST_1] = 20  # fewer shadow comparisons -> the agreement signal is skipped


def _regex(value: str) -> str | None:
    try:
        re.compile(value)
    except re.error as exc:
        return f"not a valid regular expression ({exc}), got {quote(value)}"
    return None


@dataclass(frozen=True)
class CaptureSettings:
    """Production capture (production/capture.py): a sample of answered requests, redacted, written as
    JSON Lines with the feedback users send. Off by default: turn it on where users agreed to it."""

    fraction: Annotated[float, SHARE] = 0.0  # share of answers recorded (CAPTURE_FRACTION wins); 0 = off
    dir: Annotated[str, NOT_EMPTY] = "captures"  # where the files go (CAPTURE_DIR wins; k8s: a mounted volume)
    max_queue: Annotated[int, AT_LEAST_1] = 10000  # records waiting for the disk; more are dropped, never waited on
    rotate_s: Annotated[float, POSITIVE] = 3600.0  # a new file at least this often (closed files are safe to ship)
    rotate_bytes: Annotated[int, AT_LEAST_1] = 64 * 1024 * 1024  # ...or once a file holds this much


@dataclass(frozen=True)
class DriftSettings:
    """`drift` (production/drift.py): are production's inputs, outputs or provider still those the golden
    set describes? Each distribution test must be significant AND move by at least its effect size."""

    alpha: Annotated[float, OPEN_SHARE] = 0.01  # false-alarm level of the whole report (Bonferroni over tests)
    min_records: Annotated[int, AT_LEAST_1] = 100  # fewer captured answers: no verdict on distributions
    permutations: Annotated[int, AT_LEAST_1] = 2000  # p-values by permutation: exact at any sample size
    min_psi: Annotated[float, NOT_NEGATIVE] = 0.1  # category mix: population stability index at least this
    min_ks: Annotated[float, SHARE] = 0.1  # lengths: Kolmogorov-Smirnov distance at least this
    max_share_increase: Annotated[float, SHARE] = 0.1  # fallback-category and refusal shares: rise at most this
    refusal_pattern: Annotated[str, _regex] = (
        r"(?i)\b(i don't know|i do not know|i'm not sure|i am not sure|i can't help|i cannot help)\b"
    )
    max_negative_feedback_rate: Annotated[float, SHARE] = 0.2  # thumbs-down share of rated answers
    min_feedback: Annotated[int, AT_LEAST_1] = 20  # fewer ratings: the feedback signal is not judged
    probe_examples: Annotated[int, NOT_NEGATIVE] = 8  # eval examples re-run uncached, paired with main's answers
    max_probe_changed: Annotated[float, SHARE] = 0.25  # share of probe answers that may differ from main's


@dataclass(frozen=True)
class HarvestSettings:
    """`harvest` (production/harvest.py): captured records -> candidates for the golden set."""

    max_candidates: Annotated[int, AT_LEAST_1] = 50  # per run: what one reviewer can label in one sitting


_DURATION = re.compile(r"([1-9][0-9]*)([smh])")


def _duration(value: str) -> str | None:
    # One unit, as both Prometheus ranges and Argo Rollouts durations read it.
    return None if _DURATION.fullmatch(value) else f"must be a whole number of s, m or h, e.g. 5m, got {quote(value)}"


def seconds(duration: str) -> int:
    """`5m` -> 300; ValueError when it is not one (see `_duration`)."""
    match = _DURATION.fullmatch(duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


@dataclass(frozen=True)
class RolloutSettings:
    """The in-cluster rollout (Argo Rollouts): what `rollout render` writes into k8s/. Each step sends
    the canary a share of traffic, drives golden-set load at both tracks for `window` and judges it."""

    steps: tuple[int, ...] = (10, 25, 50, 100)  # canary's % of traffic at each step; the last is 100
    window: Annotated[str, _duration] = "5m"  # each step: load for this long, then judge over it
    load_rate_per_s: Annotated[float, POSITIVE] = 1.0  # golden-set requests a second to EACH track
    prometheus_url: Annotated[str, NOT_EMPTY] = "http://prometheus-operated.monitoring:9090"

    def problems(self) -> Iterator[tuple[tuple[str, ...], str]]:
        if not self.steps:
            yield ("steps",), "must name at least one step, e.g. [10, 25, 50, 100]"
        for i, (before, weight) in enumerate(zip((0, *self.steps), self.steps, strict=False)):
            if not before < weight <= 100:
                yield ("steps", f"[{i}]"), f"must be more than the step before ({before}) and at most 100, got {weight}"
        if self.steps and self.steps[-1] != 100:
            last = len(self.steps) - 1
            yield ("steps", f"[{last}]"), f"the last step must be 100 (full traffic), got {self.steps[-1]}"


@dataclass(frozen=True)
class Settings:
    model: ModelSettings
    app: AppSettings = field(default_factory=AppSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    gate: GateSettings = field(default_factory=GateSettings)
    registry: RegistrySettings = field(default_factory=RegistrySettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    canary: CanarySettings = field(default_factory=CanarySettings)
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    harvest: HarvestSettings = field(default_factory=HarvestSettings)
    judge: JudgeSettings = field(default_factory=JudgeSettings)

    def problems(self) -> Iterator[tuple[tuple[str, ...], str]]:
        # The rollout's load Job must give each track the analysis' minimum sample at every step.
        r = self.rollout
        sample = r.load_rate_per_s * seconds(r.window)
        if sample < self.canary.min_requests:
            yield (
                ("rollout", "load_rate_per_s"),
                (
                    f"{r.load_rate_per_s:g} a second for rollout.window {r.window} gives {sample:g} requests per "
                    f"track, fewer than canary.min_requests ({self.canary.min_requests}): no step could be judged"
                ),
            )


def load(path: Path | str = PARAMS_FILE) -> Settings:
    """Read and validate params.yaml; raise SettingsError naming file, line and key."""
    return parse(read_text(path, SettingsError), str(path))


def parse(text: str, source: str = "params.yaml") -> Settings:
    data, ctx = _read(text, source)
    return _build(Settings, data, (), ctx)


@dataclass(frozen=True)
class Policy:
    """The bars that judge a change: `thresholds`, `gate`, and which judge rubrics count. The gate
    reads them from the base revision, so a pull request cannot loosen the bars it is judged by."""

    thresholds: Thresholds
    gate: GateSettings
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    # The rubric versions whose calibration file entry (at the same revision) reaches judge.min_kappa.
    calibrated: frozenset[str] = frozenset()

    @property
    def judge_gating(self) -> frozenset[str]:
        """The rubric versions whose verdicts count towards pass_rate: none while the judge is off."""
        return self.calibrated if self.judge.enabled else frozenset()


POLICY_SECTIONS = ("thresholds", "gate", "judge")


def parse_policy(text: str, source: str) -> Policy:
    """The `thresholds`, `gate` and `judge` sections of a params.yaml; the other sections are not
    read (the base may be older than this code: keys since added or dropped there do not matter),
    these are validated as strictly as everywhere. `calibrated` is left empty: it is another file's."""
    data, ctx = _read(text, source, POLICY_SECTIONS)
    if not isinstance(data, dict):
        raise ctx.error((), f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(Settings, include_extras=True)
    sections = {}
    for name in POLICY_SECTIONS:
        sections[name] = _coerce(hints[name], data.get(name, {}), (name,), ctx)
    return Policy(**sections)


def metric_names(config: Settings) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every metric params.yaml names (thresholds, gate.required, gate.tolerance), with its keys."""
    for bound, bars in (("min", config.thresholds.min), ("max", config.thresholds.max)):
        yield from ((("thresholds", bound, name), name) for name in bars)
    yield from ((("gate", "required", f"[{i}]"), name) for i, name in enumerate(config.gate.required))
    yield from ((("gate", "tolerance", name), name) for name in config.gate.tolerance)


def locate(keys: tuple[str, ...], path: Path | str = PARAMS_FILE) -> str:
    """`params.yaml:LINE: dotted.key`, for a problem found after loading (one that needs more than
    params.yaml to see, e.g. a tag no golden example has)."""
    try:
        _, ctx = _read(read_text(path, SettingsError), str(path))
    except SettingsError:
        return f"{path}: {'.'.join(keys)}"
    return str(ctx.error(keys, "")).removesuffix(": ")


def _read(text: str, source: str, sections: tuple[str, ...] | None = None) -> tuple[Any, _Context]:
    """The YAML's data and where each key is; a duplicate key is an error (YAML lets the last one
    win silently). `sections`: only these top-level sections are checked (the rest is not read)."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SettingsError(f"{source}{where}: invalid YAML ({clip(str(getattr(exc, 'problem', exc)))})") from None
    lines: dict[tuple[str, ...], int] = {}
    for keys, line, first in _walk(node, (), lines):
        if sections is None or keys[0] in sections:
            raise SettingsError(f"{source}:{line}: {key_path(keys)}: duplicate key (first on line {first})")
    return (data if data is not None else {}), _Context(source, lines)


@dataclass(frozen=True)
class _Context:
    source: str
    lines: dict[tuple[str, ...], int]

    def error(self, keys: tuple[str, ...], message: str) -> SettingsError:
        # Point at the key itself, or at the nearest enclosing key that exists in the file.
        for depth in range(len(keys), -1, -1):
            line = self.lines.get(keys[:depth])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line else self.source
        dotted = key_path(keys).replace(".[", "[") or "(top level)"
        return SettingsError(f"{where}: {dotted}: {message}")


def _walk(
    node: yaml.Node | None, prefix: tuple[str, ...], lines: dict[tuple[str, ...], int]
) -> Iterator[tuple[tuple[str, ...], int, int]]:
    """Fill `lines` (dotted key or list index -> line) and yield each duplicate key: (keys, line,
    line of the first)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            keys = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if keys in lines and key_node.value != "<<":
                yield keys, line, lines[keys]
            lines.setdefault(keys, line)
            yield from _walk(value_node, keys, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            keys = (*prefix, f"[{index}]")
            lines.setdefault(keys, item.start_mark.line + 1)
            yield from _walk(item, keys, lines)


def _build(cls: type, data: Any, keys: tuple[str, ...], ctx: _Context) -> Any:
    if not isinstance(data, dict):
        raise ctx.error(keys, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            raise ctx.error((*keys, str(name)), f"unknown key (expected one of: {', '.join(fields)})")
    values = {}
    for name, spec in fields.items():
        if name not in data:
            if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING:
                raise ctx.error((*keys, name), "required key is missing")
            continue
        values[name] = _coerce(hints[name], data[name], (*keys, name), ctx)
    built = cls(**values)
    # Checks across keys (a section's own `problems`): the first one found is the error.
    for where, message in getattr(built, "problems", lambda: ())():
        raise ctx.error((*keys, *where), message)
    return built


def _coerce(hint: Any, value: Any, keys: tuple[str, ...], ctx: _Context) -> Any:
    if get_origin(hint) is Annotated:
        base, *checks = get_args(hint)
        value = _coerce(base, value, keys, ctx)
        for check in checks:
            problem = check(value)
            if problem:
                raise ctx.error(keys, problem)
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, keys, ctx)
    origin = get_origin(hint)
    if origin is dict:
        key_type, value_type = get_args(hint)
        if not isinstance(value, dict):
            raise ctx.error(keys, f"expected a mapping, got {_describe(value)}")
        return {
            _coerce(key_type, k, (*keys, str(k)), ctx): _coerce(value_type, v, (*keys, str(k)), ctx)
            for k, v in value.items()
        }
    if origin is tuple:
        (item_type, _) = get_args(hint)
        if not isinstance(value, list):
            raise ctx.error(keys, f"expected a list, got {_describe(value)}")
        return tuple(_coerce(item_type, v, (*keys, f"[{i}]"), ctx) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported settings type {hint}")  # keep settings simple and explicit
    # bool is an int in Python; `concurrency: true` must still be an error.
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and ok and not math.isfinite(value):
        raise ctx.error(keys, f"expected a finite number, got {value}")  # NaN passes every range check
    if not ok:
        raise ctx.error(keys, f"expected {hint.__name__}, got {_describe(value)}")
    return value


def _is_rate(name: str) -> bool:
    return name.endswith(("_rate", "_rate_ci_low", "_rate_ci_high"))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {quote(value)}"


def main(argv: list[str] | None = None, prog: str = "params") -> int:
    """Validate params.yaml and print the resolved settings as JSON (exit 2 on any mistake)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="path to params.yaml")
    args = parser.parse_args(argv)
    print(json.dumps(dataclasses.asdict(load(args.params)), indent=2))
    return 0
