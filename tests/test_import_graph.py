"""The dependency rule of ARCHITECTURE.md, checked on the source: planner/ is pure and
imports nothing above it; sim/ does not import live/; neither imports the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Modules of planlab that sim/ and live/ may read (typed inputs and the shared file formats).
PLANLAB_SHARED = {"planlab.scenario", "planlab.results", "planlab.profiles"}

# Names whose use means I/O, a clock or sleeping.
IMPURE_MODULES = {
    "socket",
    "asyncio",
    "subprocess",
    "urllib",
    "http",
    "httpx",
    "aiohttp",
    "requests",
    "threading",
    "multiprocessing",
    "logging.handlers",
    "pathlib",
    "shutil",
    "tempfile",
    "io",
}
IMPURE_CALLS = {
    "open",
    "time.time",
    "time.sleep",
    "time.monotonic",
    "time.perf_counter",
    "datetime.now",
    "datetime.datetime.now",
    "np.load",
    "numpy.load",
    "np.save",
    "np.savez",
    "os.open",
    "os.environ",
    "input",
    "print",
}


def _modules(pkg: str) -> list[Path]:
    return sorted((ROOT / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _calls(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            if name:
                found.add(name)
        elif isinstance(node, ast.Attribute):
            name = _dotted(node)
            if name in IMPURE_CALLS:
                found.add(name)
    return found


@pytest.mark.parametrize("path", _modules("planner"), ids=lambda p: str(p.relative_to(ROOT)))
def test_planner_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    imports = _imports(tree)
    upward = {m for m in imports if m.split(".")[0] in {"sim", "live", "planlab"}}
    assert not upward, f"{path} imports {sorted(upward)}"
    impure = {m for m in imports if m.split(".")[0] in IMPURE_MODULES or m in IMPURE_MODULES}
    assert not impure, f"{path} imports I/O modules {sorted(impure)}"
    calls = _calls(tree) & IMPURE_CALLS
    assert not calls, f"{path} calls {sorted(calls)}"


@pytest.mark.parametrize("path", _modules("sim"), ids=lambda p: str(p.relative_to(ROOT)))
def test_sim_does_not_import_live_or_cli(path: Path) -> None:
    imports = _imports(ast.parse(path.read_text()))
    bad = {m for m in imports if m.split(".")[0] == "live"}
    bad |= {
        m for m in imports if m.startswith("planlab") and _planlab_module(m) not in PLANLAB_SHARED
    }
    assert not bad, f"{path} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _modules("live"), ids=lambda p: str(p.relative_to(ROOT)))
def test_live_imports_only_shared_parts(path: Path) -> None:
    imports = _imports(ast.parse(path.read_text()))
    bad = {
        m for m in imports if m.startswith("planlab") and _planlab_module(m) not in PLANLAB_SHARED
    }
    # live may reuse the simulator's workload generator and engine timing model only.
    bad |= {
        m
        for m in imports
        if m.split(".")[0] == "sim"
        and ".".join(m.split(".")[:2]) not in {"sim.workload", "sim.timing"}
        and m != "sim"
    }
    assert not bad, f"{path} imports {sorted(bad)}"


def _planlab_module(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) >= 2 else name


def test_the_checker_catches_a_violation(tmp_path: Path) -> None:
    """The rule above would flag an impure module (guards against a checker that sees nothing)."""
    src = "import time\nfrom sim.engine import X\n\ndef f():\n    time.sleep(1)\n    open('x')\n"
    tree = ast.parse(src)
    assert "sim.engine" in _imports(tree)
    assert {"time.sleep", "open"} <= _calls(tree)
