"""MLflow: register an evaluated app version, move the `candidate`/`champion` aliases, record lineage.

`import mlflow` costs ~3 s, so it happens inside the functions that talk to MLflow and nowhere
else: the CLI, the gate and the eval never pay for it. A fresh sqlite store is created under a
file lock (alembic migrations race and fail when several processes create one at once); an
existing store takes concurrent writers.

Lineage of a registered version, as tags on its run and on the model version: the git commit, a
hash per dvc.lock stage entry, the eval set's sha256 (data/processed/manifest.json) and every
prompt's content hash. The previous champion is a tag on the version that replaced it, so rollback
is a walk back along that chain.

A model version is written last, in one write with its tags, after its run has finished: a
register killed at any point leaves no version, or a complete one, never one that looks servable
without its lineage. A run it left RUNNING is marked FAILED by the next register.

Every failure of the store is one RegistryError naming it (faults.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .. import PACKAGE
from ..app.prompts import Prompt
from ..evaluation.metrics import is_number
from ..settings import ModelSettings
from . import faults
from .faults import RegistryError as RegistryError  # store.RegistryError: what callers catch

if TYPE_CHECKING:
    from mlflow import MlflowClient

CANDIDATE = "candidate"
CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous_champion"  # tag on a champion version: the version it replaced
MODEL_ARTIFACT = "app"
APP_ARTIFACT = "app_version"  # run artifacts: params.yaml, prompts/ and the app's files (what is served)
# Telemetry off; no progress bars in DVC's and CI's logs; MLflow's own log lines only from
# warnings up (its INFO lines narrate table creation and experiment creation). Set any of these
# in the environment to have it your way.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}
# Tags on a register's run: which process runs it, so the next register can tell a run whose
# process was killed (left RUNNING for ever) from one still going.
RUN_HOST, RUN_PID = "register.host", "register.pid"
ORPHAN_AFTER_S = 3600  # a RUNNING register run from another host this old was interrupted
# The packages the logged app needs at load time, given explicitly: MLflow's inference of them
# runs a subprocess that costs ~3 s per registration.
REQUIREMENTS = ("mlflow", "requests", "pyyaml", "jsonschema")
MODEL_CODE = (
    f"import mlflow.models\n\nfrom {PACKAGE}.registry.pyfunc import AppModel\n\nmlflow.models.set_model(AppModel())\n"
)


@dataclass(frozen=True)
class Registered:
    model_name: str
    version: str
    run_id: str
    prompt_versions: dict[str, str]  # prompt id -> MLflow prompt registry version
    failed_runs: tuple[str, ...] = ()  # runs of interrupted registers, marked FAILED on the way


# --- pure helpers -----------------------------------------------------------------------------


def requirements(packages: Iterable[str]) -> list[str]:
    """`name==installed version` for each package (the pip requirements logged with the model)."""
    from importlib import metadata

    pinned = []
    for name in packages:
        try:
            pinned.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (relative to the cwd, as MLflow reads it), else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix) :]) if uri.startswith(prefix) else None


def redact(uri: str) -> str:
    """The URI without a user or password (safe for version.json, logs and reports)."""
    parts = urlsplit(uri)
    if not parts.username and not parts.password:
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def prompt_name(model_name: str, prompt_id: str) -> str:
    """The prompt's name in MLflow's prompt registry: scoped by the project's model name."""
    return f"{model_name}.{prompt_id}"


def mlflow_template(prompt: Prompt) -> list[dict[str, str]]:
    """Our `{name}` placeholders as MLflow's `{{name}}`; escaped `{{`/`}}` become literal braces."""
    import string

    messages = []
    for message in prompt.messages:
        text = ""
        for literal, field, _, _ in string.Formatter().parse(message["content"]):
            text += literal + (f"{{{{{field}}}}}" if field is not None else "")
        messages.append({"role": message["role"], "content": text})
    return messages


def stage_hashes(lock_text: str, skip: tuple[str, ...] = ("register",)) -> dict[str, str]:
    """A short hash of each dvc.lock stage entry (its cmd, deps, params and outs with their md5s).

    The register stage's own entry is skipped: while it runs, that entry is the previous run's."""
    data = yaml.safe_load(lock_text) or {}
    hashes = {}
    for stage, entry in sorted((data.get("stages") or {}).items()):
        if stage in skip:
            continue
        canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str)
        hashes[stage] = hashlib.sha256(canonical.encode()).hexdigest()[:12]
    return hashes


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics MLflow can log: finite numbers (booleans and nulls are left out)."""
    import math

    return {k: float(v) for k, v in metrics.items() if is_number(v) and math.isfinite(v)}


def run_params(model: ModelSettings, prompt_versions: Mapping[str, str]) -> dict[str, str]:
    """What defines the app version: the model, its sampling and each prompt's content hash."""
    params = {
        "model.name": model.name,
        "model.endpoint": "embedded" if model.embedded else redact(model.base_url),
        "model.temperature": str(model.temperature),
        "model.seed": str(model.seed),
        "model.max_tokens": str(model.max_tokens),
    }
    params.update({f"prompt.{pid}": version for pid, version in sorted(prompt_versions.items())})
    return params


def git_sha(cwd: Path | str = ".") -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else "unknown"


def lineage_tags(
    *, git_commit: str, stages: Mapping[str, str], data_sha256: str, prompt_versions: Mapping[str, str]
) -> dict[str, str]:
    tags = {"git_sha": git_commit, "data_sha256": data_sha256}
    tags.update({f"dvc.stage.{name}": digest for name, digest in stages.items()})
    tags.update({f"prompt.{pid}": version for pid, version in sorted(prompt_versions.items())})
    return tags


def orphaned(tags: Mapping[str, str], start_ms: int, *, host: str, now_ms: int, alive: Callable[[int], bool]) -> bool:
    """Whether a RUNNING run was left by a register that is gone: on this host, its process no
    longer exists; on another, it started more than ORPHAN_AFTER_S ago (no register takes that
    long). Runs without our tags are not ours to end."""
    try:
        pid = int(tags[RUN_PID])
    except (KeyError, ValueError):
        return False
    if tags.get(RUN_HOST) == host:
        return not alive(pid)
    return now_ms - start_ms > ORPHAN_AFTER_S * 1000


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


# --- MLflow -------------------------------------------------------------------------------------


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive use of a sqlite store between processes (a no-op for a tracking server)."""
    database = sqlite_path(uri)
    if database is None:
        yield
        return
    # A separate lock file: sqlite's own POSIX locks on the database are dropped when any other
    # descriptor of the same file is closed in the process, so the database itself is never locked here.
    lock = database.with_name(database.name + ".lock")
    with contextlib.ExitStack() as stack:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(lock, "a"))
        except OSError as exc:
            raise RegistryError(
                f"MLflow store {uri}: cannot create {lock.name} beside it ({exc.strerror}): "
                "the store's folder must be writable"
            ) from None
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(uri: str) -> MlflowClient:
    """A client on `uri` (also set as the process's tracking and registry URI), store initialised.

    For a sqlite store, creating the tables (alembic migrations, 3-6 s) happens once, under a
    lock beside the database; processes that wait then find the store ready. The look-ups here
    are the first requests to a tracking server: not retried (faults.FIRST_CONTACT)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import mlflow
    except ImportError:  # the container image installs only the `serve` extra
        raise RegistryError(
            "the MLflow registry needs the mlflow package, which this environment lacks "
            "(the image serves the version it was built with: unset APP_VERSION_SOURCE=registry)"
        ) from None
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    faults.quiet_database_errors()
    database = sqlite_path(uri)
    first = faults.first_contact_env(os.environ) if database is None else {}
    with store_lock(uri), faults.environ(first), faults.reported(redact(uri)):
        if database is not None:  # before MLflow opens it: it would start over in an empty one
            faults.check_store_file(uri, database)
        # Building the client builds the stores, which create (or check) the schema; the look-ups
        # make sure of it and fail early, with the URI named, when the store cannot be reached.
        client = MlflowClient(uri, registry_uri=uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    return client


def register_prompts(
    client: MlflowClient, model_name: str, prompts: Mapping[str, Prompt], model: ModelSettings
) -> dict[str, str]:
    """Each prompt in MLflow's prompt registry; a new prompt version only for content not seen before.

    Returns prompt id -> registry version. The content hash is a tag on each prompt version, so an
    unchanged (or reverted) prompt reuses its version instead of being registered again."""
    versions = {}
    for pid, prompt in sorted(prompts.items()):
        name = prompt_name(model_name, pid)
        known = _prompt_versions_by_hash(client, name)
        if prompt.version in known:
            versions[pid] = known[prompt.version]
            continue
        # The client's method, not mlflow.genai's: importing mlflow.genai costs ~1 s more.
        created = client.register_prompt(
            name=name,
            template=mlflow_template(prompt),
            commit_message=f"content hash {prompt.version}",
            tags={"content_hash": prompt.version, "source": prompt.source},
            response_format=dict(prompt.output_schema) if prompt.output_schema else None,
            model_config={"model_name": model.name, "temperature": model.temperature, "max_tokens": model.max_tokens},
        )
        versions[pid] = str(created.version)
    return versions


def _prompt_versions_by_hash(client: MlflowClient, name: str) -> dict[str, str]:
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_prompt_versions(name, max_results=1000)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        return {}  # no such prompt yet
    return {v.tags["content_hash"]: str(v.version) for v in found if "content_hash" in (v.tags or {})}


def register(
    *,
    uri: str,
    model_name: str,
    model: ModelSettings,
    prompts: Mapping[str, Prompt],
    version_dir: Path,
    metrics: Mapping[str, Any],
    artifacts: list[Path],
    tags: Mapping[str, str],
) -> Registered:
    """One MLflow run for the app version, its prompts, and a model version aliased `candidate`.

    `version_dir` holds what is served (params.yaml, prompts/, the app's files), as a local
    version directory does. The caller has already checked the absolute thresholds: this only records."""
    with faults.reported(redact(uri)):
        client = connect(uri)
        import mlflow

        # Look-ups-then-creates: two registers at once must not both add the same prompt or experiment.
        with store_lock(uri):
            prompt_versions = register_prompts(client, model_name, prompts, model)
            experiment = mlflow.set_experiment(model_name)
        failed = fail_orphaned_runs(client, experiment.experiment_id)
        content_hashes = {pid: p.version for pid, p in prompts.items()}
        process = {RUN_HOST: socket.gethostname(), RUN_PID: str(os.getpid())}
        with mlflow.start_run(run_name=f"register {tags.get('git_sha', '')[:12]}", tags=process) as run:
            mlflow.log_params(run_params(model, content_hashes))
            mlflow.log_metrics(numeric_metrics(metrics))
            mlflow.set_tags(dict(tags))
            for path in artifacts:
                if path.is_file():
                    mlflow.log_artifact(str(path), artifact_path="eval")
            # The served app version (versions.py reads it back through fetch_app_version).
            mlflow.log_artifacts(str(version_dir), artifact_path=APP_ARTIFACT)
            with tempfile.TemporaryDirectory() as tmp:
                # "Models from code": the model is this two-line file, not a pickle of our objects.
                code = Path(tmp) / "app_model.py"
                code.write_text(MODEL_CODE)
                info = mlflow.pyfunc.log_model(
                    name=MODEL_ARTIFACT,
                    python_model=str(code),
                    artifacts={APP_ARTIFACT: str(version_dir)},
                    model_config=asdict(model),
                    pip_requirements=requirements(REQUIREMENTS),
                )
        # The run is FINISHED and holds everything: only now the version, with its lineage.
        lineage = {**tags, "run_id": run.info.run_id}
        lineage |= {f"prompt_registry.{pid}": v for pid, v in prompt_versions.items()}
        version = new_version(client, model_name, info, run.info.run_id, lineage)
        client.set_registered_model_alias(model_name, CANDIDATE, version)
    return Registered(model_name, version, run.info.run_id, prompt_versions, failed)


def new_version(client: MlflowClient, model_name: str, info: Any, run_id: str, tags: Mapping[str, str]) -> str:
    """A model version of the logged model `info`, created with its tags in one write; returns its
    number. (`log_model(registered_model_name=...)` would create it inside the run, before the run
    has finished, and print two lines of its own.)"""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    created = client.create_model_version(
        model_name, source=info.model_uri, run_id=run_id, tags=dict(tags), model_id=info.model_id
    )
    version = str(created.version)
    # The logged model's link back to its registered versions (shown in MLflow's UI).
    client.set_logged_model_tags(
        info.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": model_name, "version": created.version}])}
    )
    return version


def fail_orphaned_runs(client: MlflowClient, experiment_id: str) -> tuple[str, ...]:
    """Mark FAILED the runs of registers that were killed (left RUNNING); returns their ids."""
    now = int(time.time() * 1000)
    host = socket.gethostname()
    running = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000)
    failed = []
    for run in running:
        if orphaned(run.data.tags, run.info.start_time, host=host, now_ms=now, alive=_alive):
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return tuple(failed)


def _not_found(exc: Any) -> bool:
    """Whether MLflow's refusal means "no such thing" (else it is the store's failure: re-raised)."""
    return getattr(exc, "error_code", None) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


def _by_alias(client: MlflowClient, model_name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        return None  # no such alias (or no such registered model)


def versions_tagged(client: MlflowClient, model_name: str, tag: str, value: str) -> list[Any]:
    """The versions of `model_name` whose tag `tag` is `value` (e.g. git_sha = a commit)."""
    from mlflow.exceptions import MlflowException

    if "'" in value or "'" in tag:
        raise RegistryError(f"{tag}: {value!r} cannot be searched for")
    try:
        return list(client.search_model_versions(f"name='{model_name}' and tags.{tag}='{value}'"))
    except MlflowException as exc:
        if not _not_found(exc):
            raise
        return []  # no such registered model yet


def promote(client: MlflowClient, model_name: str, version: str | None = None) -> tuple[str, str | None]:
    """Move `champion` to `version` (default: the `candidate` version); returns (new champion,
    previous champion). The replaced champion is recorded on the new one, for `rollback`."""
    if version is None:
        candidate = _by_alias(client, model_name, CANDIDATE)
        if candidate is None:
            raise RegistryError(
                f"nothing to promote: {model_name} has no version aliased {CANDIDATE!r} (run `dvc repro`)"
            )
        version = str(candidate.version)
    champion = _by_alias(client, model_name, CHAMPION)
    if champion is not None and str(champion.version) == str(version):
        raise RegistryError(f"nothing to promote: version {version} of {model_name} is already {CHAMPION}")
    new = str(version)  # an int from a sqlite store, a str from a server
    previous = str(champion.version) if champion is not None else None
    if previous is not None:
        client.set_model_version_tag(model_name, new, PREVIOUS_CHAMPION, previous)
    client.set_registered_model_alias(model_name, CHAMPION, new)
    return new, previous


def rollback(client: MlflowClient, model_name: str) -> tuple[str, str]:
    """Move `champion` back to the version it replaced; returns (new champion, version left)."""
    champion = _by_alias(client, model_name, CHAMPION)
    if champion is None:
        raise RegistryError(f"nothing to roll back: {model_name} has no {CHAMPION!r} version")
    previous = champion.tags.get(PREVIOUS_CHAMPION)
    if not previous:
        raise RegistryError(
            f"nothing to roll back to: {CHAMPION} version {champion.version} of {model_name} replaced no earlier champion"
        )
    client.set_registered_model_alias(model_name, CHAMPION, str(previous))
    return str(previous), str(champion.version)


def fetch_app_version(alias: str, dest: Path) -> str:
    """Write the app version under `alias` (params.yaml, prompts/, the app's files) into `dest`
    and return its registered version: the registry side of versions.load(alias, "registry").

    The tracking URI comes from MLFLOW_TRACKING_URI (as in the k8s Secret); the registered model
    name from APP_MODEL_NAME, else this project's name."""
    import shutil

    from .. import PROJECT

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RegistryError("APP_VERSION_SOURCE=registry needs MLFLOW_TRACKING_URI")
    model_name = os.environ.get("APP_MODEL_NAME", PROJECT)
    with faults.reported(redact(uri)):
        client = connect(uri)
        version = _by_alias(client, model_name, alias)
    if version is None:
        raise RegistryError(
            f"MLflow registry: {model_name} has no version aliased {alias!r} (run `dvc repro`, then `promote`)"
        )
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=APP_ARTIFACT, dst_path=tmp)
        except (MlflowException, OSError) as exc:
            raise RegistryError(
                f"MLflow registry at {redact(uri)}: cannot download {APP_ARTIFACT}/ of {model_name} version "
                f"{version.version} (registered before app versions were logged?): {str(exc)[:200]}"
            ) from None
        shutil.copytree(local, dest, dirs_exist_ok=True)
    return str(version.version)
