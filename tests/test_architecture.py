"""The architecture, checked: no import cycles, the import-linter contracts of pyproject.toml,
and every device module importable without the host-side libraries."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import edgerob
from conftest import BLOCKED, GUARD

PACKAGE = Path(edgerob.__file__).resolve().parent
ROOT = PACKAGE.parent


def module_names(folder: Path = PACKAGE) -> dict[str, Path]:
    """edgerob's modules by dotted name (a package by its name, for its __init__.py)."""
    out = {}
    for path in folder.rglob("*.py"):
        parts = list(path.relative_to(folder.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the edgerob modules it imports anywhere in its file (module level and inside
    functions). `from edgerob.x import y` counts as importing edgerob.x.y when that is a
    module, else edgerob.x."""
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                candidates = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            else:
                continue
            for c in candidates:
                while c and c not in modules:
                    c = c.rpartition(".")[0]
                if c and c != name:
                    found.add(c)
                    break
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_among_edgerobs_modules():
    graph = import_graph(module_names())
    assert {"edgerob.device.sweep", "edgerob.host.workload", "edgerob.fleet.bundle"} <= set(graph)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles(tmp_path):
    """The check above could fail: a circle of imports through a function-level import, as
    bundle -> sweep -> targets -> remote -> bundle was, is found."""
    pkg = tmp_path / "edgerob"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from edgerob.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from edgerob import c\n")
    (pkg / "c.py").write_text("import edgerob.a\n")
    graph = import_graph(module_names(pkg))
    assert graph["edgerob.b"] == {"edgerob.c"}
    assert find_cycle(graph) == ["edgerob.a", "edgerob.b", "edgerob.c", "edgerob.a"]


def test_import_linter_contracts_are_kept():
    """`lint-imports` (import-linter, configured in pyproject.toml): layers, the device's
    imports, nothing imports the CLI, no cycles between siblings."""
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is in the dev extra")
    assert cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                            no_logo=True) == 0


def device_modules() -> list[str]:
    return sorted(n for n in module_names() if n == "edgerob.device"
                  or n.startswith("edgerob.device."))


def test_every_device_module_imports_without_host_libraries():
    """On a device, torch, onnx, scipy, pandas, ... are not installed: every module of
    edgerob.device imports all the same (the torch runtime imports torch only when used)."""
    names = device_modules()
    assert "edgerob.device.runtimes.torch_eager" in names and "edgerob.device.sweep" in names
    code = GUARD + "import importlib\n" + "".join(
        f"importlib.import_module({n!r})\n" for n in names) + (
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})\n"
        "assert not bad, bad\nprint('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_the_guard_would_catch_a_host_import():
    """The test above could fail: a device module that imported a host module (which imports
    torch) would not import under the guard."""
    r = subprocess.run([sys.executable, "-c", GUARD + "import edgerob.host.models"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0 and "device-side guard: torch" in r.stderr


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["profile", "--help"]])
def test_the_cli_starts_without_host_libraries(args):
    """`edgerob --version`, `--help` (which imports every command module) and a device-side
    command's help run where torch, pandas, lifelines, optuna, ... are not installed: the CLI
    imports those only inside the commands that need them."""
    code = GUARD + ("import runpy\nsys.argv = ['edgerob', *sys.argv[1:]]\n"
                    "try:\n    runpy.run_module('edgerob.cli', run_name='__main__')\n"
                    "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
                    f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {BLOCKED!r})\n"
                    "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert ("edgerob 0." in r.stdout) if args == ["--version"] else ("Usage" in r.stdout)
