"""Print the package's layout: files and lines per part of the package, and which part imports which.

A part is a top-level subpackage (`runtime`, `export`...) or a top-level module (`metadata`, `errors`...).
Every import counts, also the ones inside functions (mtlkd imports engines lazily, so those are most of
them) and relative ones. `python scripts/layers.py [mtlkd] [--modules]`; --modules also lists every module
with its lines. tests/test_layers.py checks the layer rules of DESIGN.md on `import_graph`.
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter, defaultdict
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "mtlkd"


def module_name(path: Path, root: Path) -> str:
    """mtlkd/runtime/backends/__init__.py -> mtlkd.runtime.backends."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> set[str]:
    """Every mtlkd module `path` imports, at any depth of the file; `from a import b` counts as a.b when
    a.b is a module, else as a (so a submodule taking a sibling from its package is no import of the package)."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            modules = {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}", root)}
            found.update(modules)
            if len(modules) < len(node.names):  # names defined in `target` itself, not only its submodules
                found.add(target)
    return {m for m in found if m == root.name or m.startswith(root.name + ".")}


def _is_module(name: str, root: Path) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def part(module: str) -> str:
    """mtlkd.runtime.backends.tensorrt_backend -> runtime; mtlkd.metadata -> metadata."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """{module: mtlkd modules it imports} for every .py file under `root`."""
    return {module_name(f, root): imported_modules(f, root) for f in sorted(root.rglob("*.py"))}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or through others (strongly connected
    components of more than one module, Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph.get(module, ()):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=PACKAGE_ROOT)
    parser.add_argument("--modules", action="store_true", help="Also list every module with its lines.")
    args = parser.parse_args()
    root = args.root.resolve()
    lines: Counter[str] = Counter()
    files: Counter[str] = Counter()
    edges: defaultdict[str, set[str]] = defaultdict(set)
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        count = len(path.read_text().splitlines())
        lines[part(name)] += count
        files[part(name)] += 1
        if args.modules:
            print(f"{count:6}  {name}")
        edges[part(name)].update(part(m) for m in imported_modules(path, root) if part(m) != part(name))
    print(f"\n{'part':12} {'files':>5} {'lines':>6}  imports")
    for name in sorted(lines):
        print(f"{name:12} {files[name]:5} {lines[name]:6}  {', '.join(sorted(edges[name] - {'(package)'}))}")
    print(f"{'total':12} {sum(files.values()):5} {sum(lines.values()):6}")


if __name__ == "__main__":
    main()
