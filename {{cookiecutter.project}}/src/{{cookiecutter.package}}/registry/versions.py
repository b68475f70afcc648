"""What the service serves: one *app version* = params.yaml + prompts/ + the app's own files, with an id.

`load(alias, source)` is the only way the service gets a version. A directory source (the project
checkout, or the copy baked into the container image) serves the same files under every alias,
with a content hash as its id. `registry` (`APP_VERSION_SOURCE=registry`) asks
`store.fetch_app_version` for the version under `alias` (MLflow `models:/<name>@<alias>`): it writes
that version's files under a temp dir and returns its registered number; from there on it is the
same code path as a local directory, so what the registry serves is what tests load. MLflow is
imported only on that path (it is not in the `serve` extra the image installs).
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
from typing import Any

from .. import settings as settings_mod
from ..app.contract import App
from ..app.loader import load_app
from ..app.prompts import Prompt, load_all
from ..errors import UserError

ALIASES = ("champion", "candidate")
REGISTRY_SOURCE = "registry"
PARAMS_FILE = "params.yaml"
PROMPTS_DIR = "prompts"


@dataclass(frozen=True)
class AppVersion:
    alias: str
    id: str  # content hash (a directory) or the registered version number (the registry)
    source: str  # the directory it was read from, or registry:<alias>
    settings: settings_mod.Settings
    prompts: Mapping[str, Prompt]
    app: App
    data: Any  # what App.load read from the version's files

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
    config = settings_mod.load(root / PARAMS_FILE)
    app = load_app(config.app.entry)
    prompts, data = servable(app, root)
    content = {
        "model": _model_identity(config.model),
        "app": config.app.entry,
        "prompts": {n: p.version for n, p in sorted(prompts.items())},
        "files": {rel: _file_digest(root / rel) for rel in app.files},
    }
    return AppVersion(alias, version_id or _digest(content), str(root), config, prompts, app, data)


def servable(app: App, root: Path) -> tuple[dict[str, Prompt], Any]:
    """A version's prompts and app data, checked as the service needs them (else a UserError)."""
    prompts_dir = root / PROMPTS_DIR
    prompts = load_all(prompts_dir)
    missing = [name for name in app.prompts if name not in prompts]
    if missing:
        raise UserError(f"{prompts_dir}: the {app.name} app needs prompt(s) {', '.join(missing)}")
    return prompts, app.load(root)


def version_files(app: App) -> dict[str, str]:
    """Relative path -> kind of every file a version is made of (what register logs)."""
    return {PARAMS_FILE: "file", PROMPTS_DIR: "dir", **{rel: "file" for rel in app.files}}


def export(root: Path, dest: Path) -> list[str]:
    """Copy the version in `root` (checked as the service needs it) into `dest`: what `register`
    logs and the container image serves. Returns the relative paths written."""
    config = settings_mod.load(root / PARAMS_FILE)
    app = load_app(config.app.entry)
    servable(app, root)
    files = version_files(app)
    for rel, kind in files.items():
        source, target = root / rel, dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        else:
            shutil.copy2(source, target)
    return sorted(files)


def main(argv: list[str] | None = None, prog: str = "export") -> int:
    """`export DIR`: write this checkout's app version into DIR (the container image does this)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=main.__doc__)
    parser.add_argument("dest", type=Path, help="directory to write params.yaml, prompts/ and the app's files into")
    parser.add_argument("--root", type=Path, default=Path("."), help="the project checkout (default: .)")
    args = parser.parse_args(argv)
    for rel in export(args.root, args.dest):
        print(f"{args.dest / rel}")
    return 0


def _model_identity(model: settings_mod.ModelSettings) -> dict[str, object]:
    # What changes answers; timeouts and prices do not make a new version.
    return {
        "base_url": model.base_url,
        "name": model.name,
        "temperature": model.temperature,
        "seed": model.seed,
        "max_tokens": model.max_tokens,
    }


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None


def _digest(value: object) -> str:
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _from_registry(alias: str) -> AppVersion:
    from .store import fetch_app_version  # mlflow only on this path

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
