"""The container image, checked without Docker: the Dockerfile, its build context, and that the
`serve` extra (all the image installs) provides every module the server imports."""

import ast
import contextlib
import importlib.metadata as md
import re
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
# Imported only on optional paths that need their own extra: the embedded model (`embedded`) and
# versions from the MLflow registry (APP_VERSION_SOURCE=registry). The scorers are imported for their
# names (settings checks the metric names in params.yaml); what they score with (sacrebleu,
# rouge-score) is imported only when they score, which the service never does.
OPTIONAL = {"app.embedded", "registry.store", "evaluation.scorers"}


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_image_is_slim_non_root_and_healthchecked():
    steps = instructions()
    assert all(re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim( AS \w+)?", arg) for op, arg in steps if op == "FROM")
    final = final_stage()
    users = [arg for op, arg in final if op == "USER"]
    # Numeric, so Kubernetes can verify runAsNonRoot; the same UID as k8s/ runAsUser.
    assert users == ["10001:10001"]
    assert ("EXPOSE", "8000") in final
    (health,) = [arg for op, arg in final if op == "HEALTHCHECK"]
    assert "/healthz" in health
    (entry,) = [arg for op, arg in final if op == "ENTRYPOINT"]
    (cmd,) = [arg for op, arg in final if op == "CMD"]
    # The CLI is the entrypoint (k8s/analysis.yaml's Jobs pass only its arguments); inside the
    # container the service must listen beyond loopback (the pod IP).
    assert ast.literal_eval(entry) == ["python", "-m", PACKAGE]
    assert ast.literal_eval(cmd)[:3] == ["serve", "--host", "0.0.0.0"]  # noqa: S104
    # The embedded model is opt-in where the project has it, and not mentioned where it does not.
    if (ROOT / "src" / PACKAGE / "app" / "embedded.py").exists():
        assert ("ARG", "EMBEDDED_MODEL=false") in steps
    else:
        assert "EMBEDDED_MODEL" not in (ROOT / "Dockerfile").read_text()
        assert "embedded" not in (ROOT / "Makefile").read_text().split("image:")[1].split("\n")[0]


def test_no_secrets_in_the_image():
    for op, arg in instructions():
        if op in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", arg):
                assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD", name, re.IGNORECASE), f"{op} {name}"
        if op == "COPY":
            assert ".env" not in arg.split()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[[line.startswith("#") for line in ignore].index(False)] == "*", "an allow-list context"
    assert "**/.env" in ignore


def test_every_copied_path_exists_and_is_in_the_build_context():
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for op, arg in instructions():
        if op != "COPY" or arg.startswith("--from"):
            continue
        *sources, _ = arg.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert any(source == a or fnmatch(source, a) for a in allowed), f"{source} is not in the build context"


def _imports(path: Path, module: str) -> tuple[set[str], set[str]]:
    """(third-party top-level modules, package modules as dotted names) imported anywhere in `path`,
    the package module `module` ("" for the package itself)."""
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".") if module else []
    external, local = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            external.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    local.add(".".join([*base, node.module]))
                else:  # `from . import x`: x is a module of that package, or a name of its __init__
                    local.update(".".join([*base, alias.name]) for alias in node.names)
                    local.add(".".join(base))
            elif node.module:
                external.add(node.module.split(".")[0])
    return external - set(sys.stdlib_module_names) - {"__future__"}, local


def _source(package_dir: Path, module: str) -> Path | None:
    base = package_dir.joinpath(*module.split(".")) if module else package_dir
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.exists()), None)


def _closure(requirements: list[str]) -> set[str]:
    """Distribution names of `requirements` and everything they pull in (extras ignored)."""
    name = lambda req: re.match(r"[A-Za-z0-9._-]+", req).group().lower().replace("_", "-")  # noqa: E731
    seen, todo = set(), [name(r) for r in requirements]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        with contextlib.suppress(md.PackageNotFoundError):
            todo += [name(r) for r in md.requires(dist) or [] if "extra ==" not in r]
    return seen


def test_the_serve_extra_provides_every_module_the_server_imports():
    package_dir = ROOT / "src" / PACKAGE
    serve = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    installed = _closure(serve)
    providers = md.packages_distributions()
    # The server, and the app the project names (params.yaml app.entry), which the server imports by name.
    entry = yaml.safe_load((ROOT / "params.yaml").read_text())["app"]["entry"]
    app_module = entry.partition(":")[0].removeprefix(f"{PACKAGE}.") if entry else None
    todo, seen, needed = ["serving.server", *([app_module] if app_module else [])], set(), set()
    while todo:
        module = todo.pop()
        path = _source(package_dir, module)
        if module in seen or module in OPTIONAL or path is None:
            continue
        seen.add(module)
        external, local = _imports(path, module)
        needed |= external
        todo += local
    assert {"serving.server", "serving.observability", "registry.versions", "app.runtime", "app.client"} <= seen
    assert "app.loader" in seen and "app.prompts" in seen
    for module in sorted(needed - {PACKAGE}):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists & installed, f"`import {module}` is not provided by the serve extra ({serve})"
