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

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "{{ cookiecutter.package }}"
# Imported only on optional paths that need their own extra: the embedded model (`embedded`) and
# versions from the MLflow registry (APP_VERSION_SOURCE=registry).
OPTIONAL = {"local_model", "registry"}


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
    (cmd,) = [arg for op, arg in final if op == "CMD"]
    # Inside the container the service must listen beyond loopback (the pod IP).
    assert ast.literal_eval(cmd)[:6] == ["python", "-m", PACKAGE, "serve", "--host", "0.0.0.0"]  # noqa: S104
    # The embedded model is opt-in.
    assert ("ARG", "EMBEDDED_MODEL=false") in steps


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


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(third-party top-level modules, sibling modules) imported anywhere in `path`."""
    external, local = set(), set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            external.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                local.add((node.module or "").split(".")[0] or "__init__")
                if not node.module:
                    local.update(alias.name for alias in node.names)
            elif node.module:
                external.add(node.module.split(".")[0])
    return external - set(sys.stdlib_module_names) - {"__future__"}, local


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
    todo, seen, needed = ["server"], set(), set()
    while todo:
        module = todo.pop()
        path = package_dir / f"{module}.py"
        if module in seen or module in OPTIONAL or not path.exists():
            continue
        seen.add(module)
        external, local = _imports(path)
        needed |= external
        todo += local
    assert {"server", "observability", "versions", "app", "client", "prompts"} <= seen
    for module in sorted(needed - {PACKAGE}):
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert dists & installed, f"`import {module}` is not provided by the serve extra ({serve})"
