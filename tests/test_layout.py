"""The package layout: no import cycles, and dependencies that point one way.

`glamor_model` may use `ncaer`; `ncaer`'s library never imports `glamor_model`; the
command line (`ncaer.cli`) joins them only inside the commands that need torch.
Imports are read with `ast`, so an import inside a function counts like any other.
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ncaer", "glamor_model")


def module_files() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, bool, int]]:
    """(imported module of ours, inside a function?, line) for every import statement in a file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def target(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node, lazy: bool):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            names = []
        for name in names:
            hit = target(name) if name.split(".")[0] in PACKAGES else None
            if hit and hit != module:
                found.append((hit, lazy, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(tree, False)
    return found


def import_graph() -> dict[str, list[tuple[str, bool, int]]]:
    files = module_files()
    return {m: imports_of(m, p, set(files)) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            connect(v)
    return out


def subpackage(module: str) -> str:
    """ncaer.build.engine -> ncaer.build; ncaer.atomic -> ncaer.atomic; glamor_model -> glamor_model."""
    return ".".join(module.split(".")[:2])


def test_the_graph_sees_relative_absolute_and_lazy_imports():
    graph = import_graph()
    engine = {t for t, _, _ in graph["ncaer.build.engine"]}
    assert {"ncaer.build.plan", "ncaer.build.pool", "ncaer.atomic", "ncaer"} <= engine
    lazy = {t for t, is_lazy, _ in graph["ncaer.cli.train"] if is_lazy}
    assert "glamor_model.engine.loop" in lazy
    models = {t for t, _, _ in graph["glamor_model.models"]}
    assert {"glamor_model.models.glamor", "glamor_model.models.registry"} <= models


def test_no_import_cycle_between_modules():
    graph = import_graph()
    found = cycles({m: {t for t, _, _ in deps} for m, deps in graph.items()})
    assert not found, f"import cycles: {found}"


def test_no_import_cycle_between_subpackages():
    edges: dict[str, set[str]] = {}
    for module, deps in import_graph().items():
        for t, _, _ in deps:
            a, b = subpackage(module), subpackage(t)
            # a package's own __init__ importing its modules, and the top-level version string, are no layering
            if a != b and b not in PACKAGES:
                edges.setdefault(a, set()).add(b)
    found = cycles(edges)
    assert not found, f"subpackages that import each other: {found}"


def test_ncaer_library_never_imports_glamor_model():
    wrong = [f"{m} (line {line}) imports {t}" for m, deps in import_graph().items() for t, _, line in deps
             if m.split(".")[0] == "ncaer" and not m.startswith("ncaer.cli") and t.startswith("glamor_model")]
    assert not wrong, wrong


def test_the_command_line_imports_glamor_model_only_inside_commands():
    eager = [f"{m} (line {line}) imports {t} at module level" for m, deps in import_graph().items()
             for t, lazy, line in deps if m.startswith("ncaer.cli") and t.startswith("glamor_model") and not lazy]
    assert not eager, eager


def test_build_help_starts_without_torch():
    code = ("import sys\n"
            "from ncaer.cli import main\n"
            "for args in (['--help'], ['build', '--help'], ['check-leakage', '--help'], ['train', '--help']):\n"
            "    try:\n"
            "        main(args)\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (args, e.code)\n"
            "loaded = [m for m in ('torch', 'glamor_model') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
