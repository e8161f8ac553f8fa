"""The layout rules (STYLE.md 12-16), read from the source with ast, lazy imports inside functions included:
no import cycle among latune's modules, a pure core, nothing but the ``python -m`` shims imports the command
line, no module over 400 lines and no function over 80; and --help, --list and --dry-run load no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "latune"
HEAVY = ("ray", "mlflow", "optuna", "pandas")  # never in latune.core
NOT_IN_CORE = ("latune.cli", "latune.sweep", "latune.tracking", "latune.analysis")
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES: dict[str, ast.Module] = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imported(name: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """Absolute names an import statement in module ``name`` refers to: ``from a.b import c`` is a.b.c when
    that is a latune module, else a.b."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package (a package's __init__ is its own package)
        package = name.split(".") if MODULES[name].name == "__init__.py" else name.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]


def _imports(name: str) -> set[str]:
    """Every name module ``name`` imports, anywhere in it (module level, functions, __main__ blocks)."""
    return {target for node in ast.walk(TREES[name]) if isinstance(node, (ast.Import, ast.ImportFrom))
            for target in _imported(name, node)}


def _internal(target: str) -> str | None:
    """The latune module ``target`` is, or lies in; None outside latune and for the top package itself
    (``import latune`` reads __version__: an edge to it would put every module in one cycle)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target if target in MODULES and target != "latune" else None


GRAPH: dict[str, set[str]] = {name: {t for t in map(_internal, _imports(name)) if t and t != name} for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


CYCLES = _cycles(GRAPH)


def _is_shim(name: str) -> bool:
    """A ``python -m`` entry point: latune/__main__.py, latune/*/__main__.py, or a top-level latune/X.py whose
    body is only a docstring and an ``if __name__ == "__main__":`` block."""
    if name.endswith(".__main__") and name.count(".") <= 2:
        return True
    body = TREES[name].body
    if name.count(".") != 1 or MODULES[name].name == "__init__.py":
        return False
    body = body[1:] if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else body
    return len(body) == 1 and isinstance(body[0], ast.If) and ast.unparse(body[0].test) in (
        "__name__ == '__main__'", '__name__ == "__main__"')


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    assert _is_shim("latune.train") and _is_shim("latune.sweep.__main__") and not _is_shim("latune.config")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_cycle(module):
    cycle = next((c for c in CYCLES if module in c), None)
    assert cycle is None, f"{module} is in an import cycle with {', '.join(sorted(cycle - {module}))}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("latune.core")))
def test_the_core_imports_no_heavy_library_and_no_upper_layer(module):
    bad = sorted(t for t in _imports(module) if t.split(".")[0] in HEAVY
                 or any(t == layer or t.startswith(layer + ".") for layer in NOT_IN_CORE))
    assert not bad, f"{module} imports {', '.join(bad)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.startswith("latune.cli")))
def test_only_the_python_m_shims_import_the_command_line(module):
    cli = sorted(t for t in _imports(module) if t == "latune.cli" or t.startswith("latune.cli."))
    assert not cli or _is_shim(module), f"{module} imports {', '.join(cli)} (only python -m shims may)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_size(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines (at most {MAX_MODULE_LINES}; split it)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_function_size(module):
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
            for node in ast.walk(TREES[module]) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


# --------------------------------------------------------------------------- cheap entry points load no torch
# runs the module as python -m does, then says whether torch got imported (argparse's --help exits)
_WRAPPER = """import runpy, sys
module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as done:
    if done.code not in (0, None):
        raise
print("torch loaded:", "torch" in sys.modules)
"""


@pytest.mark.parametrize("command", [
    ["latune", "--help"], ["latune.sweep", "--help"], ["latune.train", "--help"],
    ["latune.audit", "--help"], ["latune.report", "--help"],
    ["latune.sync", "--help"], ["latune.pareto", "--help"], ["latune.sweep", "--list"],
    ["latune.sweep", "delta_eps_grid", "--dry-run"],
], ids=" ".join)
def test_help_list_and_dry_run_load_no_torch(command, tmp_path):
    done = subprocess.run([sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines()[-1] == "torch loaded: False", (
        f"python -m {' '.join(command)} imported torch (python -X importtime shows the chain)")
