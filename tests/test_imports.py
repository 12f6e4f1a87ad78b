"""The package's import graph: no cycle, and the library never imports the runner or the report.

Module-level and function-level imports alike (AST, not executed), plus ``importlib.import_module("...")``
with a literal name; a subprocess also imports every library module and checks that none loads
``compresslib.workbook``.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "compresslib"
WORKBOOK = "compresslib.workbook"  # the runner, the report and their helpers (orchestration, no numbers)
RUNNER_MODULES = ("reproduce", "report", "results_doc", "provenance", "dryrun", "stage_params")


def _modules(pkg: Path = PKG) -> dict[str, Path]:
    mods = {}
    for p in pkg.rglob("*.py"):
        name = ".".join(p.relative_to(pkg.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def _import_module_name(n: ast.AST) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")``."""
    if not (isinstance(n, ast.Call) and n.args and isinstance(n.args[0], ast.Constant)):
        return None
    f = n.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return n.args[0].value if name in ("import_module", "__import__") and isinstance(n.args[0].value, str) else None


def import_graph(pkg: Path = PKG) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` from every import statement (AST, not executed)."""
    mods = _modules(pkg)
    graph = {}
    for m, p in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Import):
                deps |= {a.name for a in n.names if a.name in mods}
            elif _import_module_name(n) in mods:
                deps.add(_import_module_name(n))
            elif isinstance(n, ast.ImportFrom):
                base = m.split(".")
                if n.level:
                    base = base[: len(base) - n.level + (p.name == "__init__.py")]
                    mod = ".".join(base + ([n.module] if n.module else []))
                else:
                    mod = n.module or ""
                for a in n.names:
                    full = f"{mod}.{a.name}"
                    deps.add(full if full in mods else mod)
        graph[m] = {d for d in deps if d in mods and d != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def workbook_imports(graph: dict[str, set[str]], workbook: str = WORKBOOK) -> dict[str, list[str]]:
    """``{library module: the workbook modules it imports}``; a library module is one outside ``workbook``."""

    def inside(m):
        return m == workbook or m.startswith(workbook + ".")

    return {
        m: sorted(d for d in deps if inside(d)) for m, deps in graph.items() if not inside(m) and any(map(inside, deps))
    }


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "compresslib.embedded" in graph["compresslib.data"]  # the graph is read, not empty
    assert "compresslib.cluttered" in graph["compresslib.data"]
    assert {"compresslib.workbook.provenance", "compresslib.stages"} <= graph["compresslib.workbook.reproduce"]
    assert cycles(graph) == [], "import cycle(s) in compresslib"


def test_the_library_never_imports_the_runner_or_the_report():
    """Orchestration (compresslib/workbook/: reproduce, report and their helpers) sits on top of the library."""
    graph = import_graph()
    assert "compresslib.results" in graph["compresslib.workbook.report"]  # the workbook does import the library
    assert workbook_imports(graph) == {}, "library module(s) import compresslib.workbook"
    # the runner's modules live only in the subpackage (no compatibility module left at the old paths)
    assert sorted(m for m in graph if m.rsplit(".", 1)[-1] in RUNNER_MODULES) == [
        f"{WORKBOOK}.{m}" for m in sorted(RUNNER_MODULES)
    ]


def test_workbook_import_finder_sees_every_spelling(tmp_path):
    """A library module importing the workbook in any spelling is reported; the workbook importing the library is not."""
    pkg = tmp_path / "compresslib"
    (pkg / "workbook").mkdir(parents=True)
    spellings = {
        "rel_sub": "from .workbook import run\n",
        "rel_mod": "from .workbook.run import main\n",
        "rel_pkg": "from . import workbook\n",
        "abs_mod": "import compresslib.workbook.run\n",
        "abs_from": "from compresslib.workbook import run\n",
        "in_function": "def f():\n    from .workbook.run import main\n",
        "dynamic": "import importlib\nrun = importlib.import_module('compresslib.workbook.run')\n",
    }
    for name, src in {**spellings, "__init__": "", "clean": "from . import rel_sub\n"}.items():
        (pkg / f"{name}.py").write_text(src)
    (pkg / "workbook" / "__init__.py").write_text("")
    (pkg / "workbook" / "run.py").write_text("from .. import clean\nfrom ..clean import rel_sub\n")
    found = workbook_imports(import_graph(pkg))
    assert sorted(found) == sorted(f"compresslib.{n}" for n in spellings)
    assert found["compresslib.rel_pkg"] == ["compresslib.workbook"]
    assert found["compresslib.rel_mod"] == found["compresslib.dynamic"] == ["compresslib.workbook.run"]


def test_importing_every_library_module_loads_no_workbook_module():
    """Executed, not parsed: importing all of compresslib but the workbook leaves compresslib.workbook unloaded."""
    library = sorted(m for m in _modules() if not (m == WORKBOOK or m.startswith(WORKBOOK + ".")))
    code = (
        "import importlib, sys\n"
        f"for m in {library!r}:\n"
        "    importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({WORKBOOK!r})))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PKG.parent), COMPRESSLIB_THREADS="1", MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(library) > 40 and r.stdout.strip() == "[]", r.stdout


def test_dataset_loading_lives_in_data():
    from compresslib import cluttered, data

    assert "cluttered_digits" in data.list_datasets()  # registered by data itself
    assert callable(data.load_images) and not hasattr(cluttered, "load_images")


def test_library_digest_leaves_out_the_workbook(tmp_path):
    """Fit fingerprints and cache keys hash the library source but not compresslib/workbook/: editing the
    runner or the report re-trains nothing, editing any other module (even one named like it) does."""
    import hashlib

    from compresslib import results

    pkg = tmp_path / "compresslib"
    (pkg / "workbook").mkdir(parents=True)
    (pkg / "a.py").write_text("x = 1\n")
    (pkg / "workbook" / "run.py").write_text("y = 1\n")
    d0 = results.source_digest(pkg)
    assert d0 == hashlib.sha256(b"a.py\0x = 1\n\0").hexdigest()
    (pkg / "workbook" / "run.py").write_text("y = 2\n")
    (pkg / "workbook" / "new.py").write_text("z = 3\n")
    assert results.source_digest(pkg) == d0
    (pkg / "a.py").write_text("x = 2\n")
    d1 = results.source_digest(pkg)
    assert d1 == hashlib.sha256(b"a.py\0x = 2\n\0").hexdigest()
    (pkg / "methods" / "workbook").mkdir(parents=True)  # only the top-level subpackage is left out
    (pkg / "methods" / "workbook" / "m.py").write_text("")
    (pkg / "workbook.py").write_text("")
    assert (
        results.source_digest(pkg)
        == hashlib.sha256(b"a.py\0x = 2\n\0" + b"methods/workbook/m.py\0\0" + b"workbook.py\0\0").hexdigest()
    )
    assert results.library_digest() == results.source_digest(PKG)
