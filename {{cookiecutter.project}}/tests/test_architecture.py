"""The package's shape: folders that depend one way, no import cycles, nothing imports the CLI."""

import ast
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "src" / "{{ cookiecutter.package }}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Package modules `path` imports, at module level or inside functions (resolved, dotted)."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            targets = (
                [".".join([*base, node.module])] if node.module else [".".join([*base, a.name]) for a in node.names]
            )
            found.update(t for t in targets if t and resolve(t))
    return {resolve(t) for t in found} - {name}


def resolve(name: str) -> str | None:
    """The module a dotted name refers to: itself, or the package whose attribute it is."""
    while name:
        base = PACKAGE_DIR.joinpath(*name.split("."))
        if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
            return name
        name = name.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in PACKAGE_DIR.rglob("*.py")}


def test_no_import_cycles():
    edges, state, cycles = graph(), {}, []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, f"import cycles: {cycles}"


def test_nothing_imports_the_cli():
    importers = sorted(m for m, deps in graph().items() if "cli" in deps and m != "__main__")
    assert not importers, f"{importers} import the CLI: call the module the command runs instead"


def test_the_framework_does_not_import_an_app():
    """Only params.yaml names the app (`app.entry`, imported by name at run time)."""
    framework = ("app", "evaluation", "gate", "registry", "serving", "production", "stages", "cli", "settings",
                 "errors", "envfile", "objectstore", "strict_json", "viewer", "judge")  # fmt: skip
    edges = graph()
    for module, deps in edges.items():
        if module.split(".")[0] in framework:
            outside = {d for d in deps if d and d.split(".")[0] not in (*framework, "testing", "")}
            assert not outside, f"{module} imports {outside}, which is not the framework"
