"""What the server serves: one *app version* = prompts + model settings + policies, with an id.

`load(alias, source)` is the only way the server gets a version. Today it reads a local directory
(the project checkout, or the copy baked into the container image) holding `params.yaml`, `prompts/`
and `data/policies.yaml`; every alias resolves to that directory and the version id is a content hash.

A `source` of `registry` (`APP_VERSION_SOURCE=registry`) asks `registry.fetch_app_version` for the
version under `alias` (MLflow `models:/<name>@<alias>`): it writes that version's `params.yaml`,
`prompts/` and `data/policies.yaml` under a temp dir and returns its registered id. Everything after
that is the same code path as a local directory, so what the registry serves is what tests load.
MLflow is imported only on that path (it is not in the `serve` extra the image installs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import settings as settings_mod
from .errors import UserError
from .prompts import Prompt, load_all

ALIASES = ("champion", "candidate")
REGISTRY_SOURCE = "registry"
POLICIES_FILE = Path("data") / "policies.yaml"
REQUIRED_PROMPTS = ("classify_intent", "extract_order", "answer_policy")


@dataclass(frozen=True)
class AppVersion:
    alias: str
    id: str  # content hash (local) or the registered version (registry)
    source: str  # the directory it was read from, or registry:<alias>
    settings: settings_mod.Settings
    prompts: Mapping[str, Prompt]
    policies: Mapping[str, str]

    @property
    def model(self) -> settings_mod.ModelSettings:
        return self.settings.model

    @property
    def prompt_versions(self) -> dict[str, str]:
        return {name: prompt.version for name, prompt in sorted(self.prompts.items())}

    @property
    def prompt_version(self) -> str:
        """One id for the whole prompt set (12 hex): what metrics and headers carry."""
        return _digest(self.prompt_versions)


def load(alias: str, source: str | Path = ".") -> AppVersion:
    """The app version under `alias` from `source` (a directory, or `registry`)."""
    if alias not in ALIASES:
        raise UserError(f"alias: {alias!r} is not one of {', '.join(ALIASES)} (set APP_MODEL_ALIAS)")
    if str(source) == REGISTRY_SOURCE:
        return _from_registry(alias)
    return from_directory(alias, Path(source))


def from_directory(alias: str, root: Path, version_id: str | None = None) -> AppVersion:
    """Read and validate a version directory; any problem is a UserError naming the file."""
    if not root.is_dir():
        raise UserError(f"{root}: app version directory not found")
    config = settings_mod.load(root / "params.yaml")
    prompts, policies = servable(root / "prompts", root / POLICIES_FILE)
    content = {
        "model": _model_identity(config.model),
        "prompts": {n: p.version for n, p in sorted(prompts.items())},
        "policies": policies,
    }
    return AppVersion(alias, version_id or _digest(content), str(root), config, prompts, policies)


def servable(prompts_dir: Path, policies_path: Path) -> tuple[dict[str, Prompt], dict[str, str]]:
    """A version's prompts and policies, checked as the service needs them (else a UserError)."""
    prompts = load_all(prompts_dir)
    missing = [name for name in REQUIRED_PROMPTS if name not in prompts]
    if missing:
        raise UserError(f"{prompts_dir}: the service needs prompt(s) {', '.join(missing)}")
    return prompts, load_policies(policies_path)


def load_policies(path: Path) -> dict[str, str]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict) or not data:
        raise UserError(f"{path}: expected a mapping of intent -> policy text")
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            raise UserError(f"{path}: {key}: expected non-empty text")
    if "other" not in data:
        raise UserError(f"{path}: needs an 'other' policy (used for intents without their own)")
    return {str(k): v.strip() for k, v in data.items()}


def _model_identity(model: settings_mod.ModelSettings) -> dict[str, object]:
    # What changes answers; timeouts and prices do not make a new version.
    return {
        "base_url": model.base_url,
        "name": model.name,
        "temperature": model.temperature,
        "seed": model.seed,
        "max_tokens": model.max_tokens,
    }


def _digest(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _from_registry(alias: str) -> AppVersion:
    from .registry import fetch_app_version  # mlflow only on this path

    # Written under /tmp (the container's root filesystem is read-only) and read into memory; the
    # copy is removed then, or kept when it is bad, so the files an error names can be looked at.
    dest = Path(tempfile.mkdtemp(prefix=f"app-{alias}-", dir=os.environ.get("TMPDIR")))
    try:
        version_id = fetch_app_version(alias, dest)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)  # nothing (or half a download) to look at
        raise
    version = from_directory(alias, dest, version_id=str(version_id))
    shutil.rmtree(dest, ignore_errors=True)
    return dataclasses.replace(version, source=f"{REGISTRY_SOURCE}:{alias}")
