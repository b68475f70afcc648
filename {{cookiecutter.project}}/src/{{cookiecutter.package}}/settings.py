"""params.yaml -> frozen, typed settings, validated once at the entry point.

Every key is declared here. An unknown key, a missing key or a value of the wrong type is a
`SettingsError` that names the file, the line and the dotted key: a typo in params.yaml must never
become a silent default. Secrets are never read from params.yaml, only the *name* of the env var.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from . import PROJECT
from .errors import UserError

PARAMS_FILE = Path("params.yaml")
EMBEDDED = "embedded"


class SettingsError(UserError):
    """A user mistake in params.yaml or the environment; the message is the whole story."""


@dataclass(frozen=True)
class ModelSettings:
    base_url: str  # "embedded" starts the bundled llama.cpp server; else an OpenAI-compatible URL
    name: str
    api_key_env: str = ""  # name of the env var that holds the key; "" = no key
    temperature: float = 0.0
    seed: int = 42
    max_tokens: int = 128
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    input_usd_per_1m_tokens: float = 0.0
    output_usd_per_1m_tokens: float = 0.0
    # `embedded` only: llama.cpp's parallel slots. 1 = deterministic; more batches concurrent
    # requests (faster) but answers may then differ from run to run (app/embedded.py).
    embedded_slots: int = 1
    # `embedded` only: llama.cpp's threads. Fixed, not the core count: 1 and 2 threads answer differently.
    embedded_threads: int = 2

    @property
    def embedded(self) -> bool:
        return self.base_url == EMBEDDED

    def api_key(self) -> str | None:
        """The key from the env var named in params; a clear error when it is named but unset."""
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise SettingsError(
                f"model.api_key_env: environment variable {self.api_key_env} is not set "
                "(put it in .env or your CI secrets; never in params.yaml)"
            )
        return key


@dataclass(frozen=True)
class AppSettings:
    """Which app the project runs (see app/contract.py)."""

    entry: str = ""  # `module:attribute` naming an App; "" = the prompts alone, each on its own


@dataclass(frozen=True)
class EvalSettings:
    concurrency: int = 4
    repeats: int = 1
    max_error_rate: float = 0.2  # abort the run above this share of errored calls
    max_attempts: int = 4  # per call, retries included
    max_retry_s: float = 60.0  # total time one call may spend retrying
    cache_dir: str = ".cache/eval"


@dataclass(frozen=True)
class Thresholds:
    """Absolute bars a version must clear to be registered as `candidate`."""

    min: dict[str, float] = field(default_factory=dict)
    max: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class GateSettings:
    """The PR gate: how far a metric may move against the base before the PR fails."""

    alpha: float = 0.05  # a paired (McNemar) test at this level decides whether a drop is real
    required: tuple[str, ...] = ("pass_rate",)
    tolerance: dict[str, float] = field(default_factory=dict)
    max_drop: float = 0.10  # net share of examples flipping to failing that fails even when not significant


@dataclass(frozen=True)
class RegistrySettings:
    tracking_uri: str = "sqlite:///mlflow.db"  # MLFLOW_TRACKING_URI in the env wins
    model_name: str = PROJECT

    def resolved_tracking_uri(self) -> str:
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri


@dataclass(frozen=True)
class ServeSettings:
    """The HTTP service: a user waits on every call, so retries are short and bounded."""

    max_attempts: int = 2  # per model call, retries included
    max_retry_s: float = 10.0  # total time one model call may spend retrying
    pool_size: int = 16  # keep-alive connections to the model endpoint
    max_input_chars: int = 4000  # a request with a longer text value is rejected with 422
    prompt_routes: bool = True  # POST /v1/run/<prompt> for every prompt, besides the app's flows
    shadow_max_inflight: int = 4  # shadow calls beyond this are dropped, never queued


@dataclass(frozen=True)
class CanarySettings:
    """`canary analyze`: when the canary is worse than stable. Rollback if any signal fails."""

    min_requests: int = 50  # per track; fewer -> "inconclusive" (exit 3), no decision
    error_rate_ratio: float = 2.0  # canary error rate may be at most ratio * stable's + margin
    error_rate_margin: float = 0.01
    latency_p95_ratio: float = 1.5  # canary p95 may be at most ratio * stable's + margin
    latency_p95_margin_s: float = 0.05
    min_agreement: float = 0.8  # shadow/online agreement (each flow's decision), when measured
    min_shadow_samples: int = 20  # fewer shadow comparisons -> the agreement signal is skipped


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


def load(path: Path | str = PARAMS_FILE) -> Settings:
    """Read and validate params.yaml; raise SettingsError naming file, line and key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read ({exc.strerror})") from None
    return parse(text, str(path))


def parse(text: str, source: str = "params.yaml") -> Settings:
    data, ctx = _read(text, source)
    return _build(Settings, data, (), ctx)


@dataclass(frozen=True)
class Policy:
    """The bars that judge a change: `thresholds` and `gate`. The gate reads them from the base
    revision, so a pull request cannot loosen the bars it is judged by."""

    thresholds: Thresholds
    gate: GateSettings


def parse_policy(text: str, source: str) -> Policy:
    """The `thresholds` and `gate` sections of a params.yaml; the other sections are not read (the
    base may be older than this code), these two are validated as strictly as everywhere."""
    data, ctx = _read(text, source)
    if not isinstance(data, dict):
        raise ctx.error((), f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(Settings)
    sections = {}
    for name in ("thresholds", "gate"):
        sections[name] = _coerce(hints[name], data.get(name, {}), (name,), ctx)
    return Policy(**sections)


def _read(text: str, source: str) -> tuple[Any, _Context]:
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise SettingsError(f"{source}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return (data if data is not None else {}), _Context(source, _key_lines(node))


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
        dotted = ".".join(keys) or "(top level)"
        return SettingsError(f"{where}: {dotted}: {message}")


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            keys = (*prefix, str(key_node.value))
            lines[keys] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, keys))
    return lines


def _build(cls: type, data: Any, keys: tuple[str, ...], ctx: _Context) -> Any:
    if not isinstance(data, dict):
        raise ctx.error(keys, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
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
    return cls(**values)


def _coerce(hint: Any, value: Any, keys: tuple[str, ...], ctx: _Context) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, keys, ctx)
    origin = get_origin(hint)
    if origin is dict:
        _, value_type = get_args(hint)
        if not isinstance(value, dict):
            raise ctx.error(keys, f"expected a mapping, got {_describe(value)}")
        return {str(k): _coerce(value_type, v, (*keys, str(k)), ctx) for k, v in value.items()}
    if origin is tuple:
        (item_type, _) = get_args(hint)
        if not isinstance(value, list):
            raise ctx.error(keys, f"expected a list, got {_describe(value)}")
        return tuple(_coerce(item_type, v, (*keys, str(i)), ctx) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported settings type {hint}")  # keep settings simple and explicit
    # bool is an int in Python; `concurrency: true` must still be an error.
    ok = isinstance(value, hint) and not (hint is not bool and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ctx.error(keys, f"expected {hint.__name__}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def main(argv: list[str] | None = None, prog: str = "params") -> int:
    """Validate params.yaml and print the resolved settings as JSON (exit 2 on any mistake)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="path to params.yaml")
    args = parser.parse_args(argv)
    print(json.dumps(dataclasses.asdict(load(args.params)), indent=2))
    return 0
