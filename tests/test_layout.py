"""The package's shape, as docs/architecture.md draws it: imports run one way down the floors, no module imports
one that imports it back, and no module grows past what one can read in a sitting."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tuner"
# Floors, top first: a module may import from its own floor or below, never above.
FLOORS = [
    ("tuner", "tuner.__main__", "tuner.testing"),  # the API facade, the entry point, the test doubles
    ("tuner.cli",),
    ("tuner.look",),
    ("tuner.search",),
    ("tuner.ship",),
    ("tuner.train",),
    ("tuner.datasets", "tuner.models", "tuner.augment", "tuner.storage", "tuner.record"),
    ("tuner.spec",),
    ("tuner.fileio",),
    ("tuner.errors",),
]
MAX_LINES = 360


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The tuner modules `path` imports, at its top or inside functions (a circle through a function is one too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: tune imports absolutely (from tuner.x import y)"
            base = node.module or ""
            # `from package import module` depends on the module; `from module import name` on the module
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    found.discard(module_name(path))
    return found


def floor(module: str) -> int:
    for index, members in enumerate(FLOORS):
        if any(module == m or (module.startswith(m + ".") and m != "tuner") for m in members):
            return index
    raise AssertionError(f"{module} is on no floor: add it to FLOORS and to docs/architecture.md")


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def test_every_import_points_down_or_sideways():
    upward = [f"{a} -> {b}" for a, targets in graph().items() for b in sorted(targets)
              if floor(b) < floor(a)]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    edges = graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        seen[module] = 1
        for target in sorted(edges[module]):
            if seen.get(target) == 1:
                circles.append(path[path.index(target):] + [target])
            elif target not in seen:
                visit(target, path + [target])
        seen[module] = 2

    for module in sorted(edges):
        if module not in seen:
            visit(module, [module])
    assert circles == []


def test_no_module_is_longer_than_one_can_read_in_a_sitting():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
