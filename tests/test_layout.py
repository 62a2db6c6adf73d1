"""The package's layout holds: imports run one way (commands, then step kinds,
then what the project knows of the proxy, then the database layer), no module
imports one that imports it back, and migrations take their step kinds from
one place. Read from the source, as import statements, without running it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from nexus_migrate import MIGRATIONS_DIR, PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "nexus_migrate"

# Lower layers never import higher ones; a layer may import its own.
LAYERS = {"errors": 0, "database": 1, "proxy": 2, "steps": 3, "commands": 4, "benchmark": 5}


def module_name(path: Path) -> str:
    parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The project's modules that path imports (a name imported from a package
    counts as its module when it is one, else as the package)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found |= {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found)) for name, path in found.items()}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # nexus_migrate itself: paths only


def test_the_import_graph_is_read():
    """The reader sees the imports it checks (else the tests below prove nothing)."""
    edges = graph()
    assert "nexus_migrate.steps.lock_retries" in edges["nexus_migrate.steps.batches"]
    assert "nexus_migrate.database.local" in edges["nexus_migrate.database.settings"]
    assert "nexus_migrate.errors" in edges["nexus_migrate.commands.localdb"]


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            pytest.fail("import circle: " + " -> ".join(cycle))
        if module in done:
            return
        for other in sorted(edges[module]):
            visit(other, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])


def test_imports_run_down_the_layers():
    wrong = [f"{module} imports {other}" for module, others in graph().items() for other in others
             if layer(module) is not None and layer(other) is not None and layer(other) > layer(module)]
    assert not wrong


def test_every_module_belongs_to_a_layer():
    stray = [m for m in modules() if m != "nexus_migrate" and layer(m) is None]
    assert not stray, "put it in a folder of LAYERS (and say so in docs/contributing.md)"


def test_migrations_take_their_step_kinds_from_the_face_of_steps():
    for path in sorted(MIGRATIONS_DIR.glob("*.py")):
        sources = {node.module for node in ast.walk(ast.parse(path.read_text()))
                   if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nexus_migrate.steps")}
        assert sources == {"nexus_migrate.steps"}, path.name
