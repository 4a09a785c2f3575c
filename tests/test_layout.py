"""The package layout: every import resolves, no import cycles, and dependencies that point one way.

`glamor_model` may use `ncaer`; `ncaer`'s library never imports `glamor_model`; the
command line (`ncaer.cli`) joins them only inside the commands that need torch.
Imports are read with `ast`, so an import inside a function counts like any other;
imports under `if TYPE_CHECKING:` never run and are left out of the graph.
"""

import ast
import functools
import importlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ncaer", "glamor_model")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`: a block that never runs."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@functools.cache
def top_level_names(path: Path) -> set[str]:
    """Names a module binds at run time at its top level (definitions, assignments, imports, under if/try too)."""
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split(".")[0] for a in node.names)
            elif isinstance(node, ast.If):
                visit(node.orelse if is_type_checking(node.test) else node.body + node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body + node.orelse + node.finalbody + [n for h in node.handlers for n in h.body])

    visit(ast.parse(path.read_text()).body)
    return names


@dataclass(frozen=True)
class Import:
    module: str  # the module named, made absolute
    target: str | None  # the module of ours it loads; None when it names nothing that exists
    statement: str  # as written, for messages
    line: int
    lazy: bool  # inside a function
    runs: bool  # False under `if TYPE_CHECKING:`


def imports_of(module: str, path: Path, files: dict[str, Path]) -> list[Import]:
    """Every import of our packages in one file."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def resolve(base: str, name: str | None) -> str | None:
        """The module `from base import name` (or `import base`) loads, if base and name exist."""
        if name is not None and f"{base}.{name}" in files:
            return f"{base}.{name}"
        if base not in files:
            return None
        names = top_level_names(files[base])
        if name in (None, "*") or name in names:
            return base
        # a module-level __getattr__ hands out names on demand: ask the module itself
        return base if "__getattr__" in names and hasattr(importlib.import_module(base), name) else None

    def visit(node, lazy: bool, runs: bool):
        pairs = []
        if isinstance(node, ast.Import):
            pairs = [(a.name, None, f"import {a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            pairs = [(base, a.name, f"from {'.' * node.level}{node.module or ''} import {a.name}")
                     for a in node.names]
        for base, name, text in pairs:
            if base.split(".")[0] in PACKAGES:
                target = resolve(base, name)
                if target != module:
                    found.append(Import(base, target, text, node.lineno, lazy, runs))
        for child in ast.iter_child_nodes(node):
            guarded = isinstance(node, ast.If) and is_type_checking(node.test) and child in node.body
            visit(child, lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)), runs and not guarded)

    visit(tree, False, True)
    return found


def import_graph(root: Path = ROOT) -> dict[str, list[Import]]:
    files = module_files(root)
    return {m: imports_of(m, p, files) for m, p in files.items()}


def edges(graph: dict[str, list[Import]]) -> dict[str, set[str]]:
    return {m: {i.target for i in deps if i.target and i.runs} for m, deps in graph.items()}


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


def test_the_graph_sees_relative_absolute_lazy_and_guarded_imports(tmp_path):
    graph = import_graph()
    engine = {i.target for i in graph["ncaer.build.engine"]}
    assert {"ncaer.build.plan", "ncaer.build.pool", "ncaer.atomic", "ncaer"} <= engine
    assert "glamor_model.engine.loop" in {i.target for i in graph["ncaer.cli.train"] if i.lazy}
    models = {i.target for i in graph["glamor_model.models"]}
    assert {"glamor_model.models.glamor", "glamor_model.models.registry"} <= models
    # a made-up package: a name that does not exist resolves to nothing; a guarded import is not run
    (tmp_path / "ncaer" / "sub").mkdir(parents=True)
    (tmp_path / "glamor_model").mkdir()
    (tmp_path / "ncaer" / "__init__.py").write_text("")
    (tmp_path / "ncaer" / "sub" / "__init__.py").write_text("")
    (tmp_path / "ncaer" / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nfrom .b import real, missing, typed\n"
        "import ncaer.sub.gone\n"
        "if TYPE_CHECKING:\n    from ncaer.sub.b import real as again\n"
        "if not TYPE_CHECKING:\n    from ncaer.sub.b import real as at_run_time\n")
    (tmp_path / "ncaer" / "sub" / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif True:\n    real = 1\nif TYPE_CHECKING:\n    typed = 2\n")
    made_up = [(i.statement, i.target, i.runs) for i in import_graph(tmp_path)["ncaer.sub.a"]]
    assert sorted(made_up, key=str) == sorted([
        ("from . import b", "ncaer.sub.b", True), ("from .b import real", "ncaer.sub.b", True),
        ("from .b import missing", None, True), ("from .b import typed", None, True),  # typed: not at run time
        ("import ncaer.sub.gone", None, True), ("from ncaer.sub.b import real", "ncaer.sub.b", False),
        ("from ncaer.sub.b import real", "ncaer.sub.b", True)], key=str)


def test_no_module_of_ours_is_ignored_by_git():
    """A module git ignores is missing from every clean clone (a `build/` pattern once hid ncaer/build/)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    # tracked files an ignore pattern matches (new ones beside them would be left out), and untracked ignored ones
    command = ["git", "ls-files", "--cached", "--others", "--ignored", "--exclude-standard", "--", *PACKAGES, "tests"]
    listed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True).stdout.split()
    assert not [f for f in listed if f.endswith(".py")]


def test_every_import_of_ours_resolves():
    broken = [f"{m} (line {i.line}): {i.statement}" for m, deps in import_graph().items() for i in deps
              if i.target is None]
    assert not broken, f"imports of modules or names that do not exist: {broken}"


def test_no_import_cycle_between_modules():
    found = cycles(edges(import_graph()))
    assert not found, f"import cycles: {found}"


def test_no_import_cycle_between_subpackages():
    between: dict[str, set[str]] = {}
    for module, targets in edges(import_graph()).items():
        for t in targets:
            a, b = subpackage(module), subpackage(t)
            # a package's own __init__ importing its modules, and the top-level version string, are no layering
            if a != b and b not in PACKAGES:
                between.setdefault(a, set()).add(b)
    found = cycles(between)
    assert not found, f"subpackages that import each other: {found}"


def test_ncaer_library_never_imports_glamor_model():
    wrong = [f"{m} (line {i.line}): {i.statement}" for m, deps in import_graph().items() for i in deps
             if m.split(".")[0] == "ncaer" and not m.startswith("ncaer.cli") and i.module.startswith("glamor_model")]
    assert not wrong, wrong


def test_the_command_line_imports_glamor_model_only_inside_commands():
    eager = [f"{m} (line {i.line}): {i.statement}" for m, deps in import_graph().items() for i in deps
             if m.startswith("ncaer.cli") and i.module.startswith("glamor_model") and not i.lazy and i.runs]
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
