"""The package's import graph has no cycle (module-level and function-level imports alike)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "compresslib"


def _modules() -> dict[str, Path]:
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(PKG.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    return mods


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of compresslib it imports}`` from every import statement (AST, not executed)."""
    mods = _modules()
    graph = {}
    for m, p in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.Import):
                deps |= {a.name for a in n.names if a.name in mods}
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


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "compresslib.embedded" in graph["compresslib.data"]  # the graph is read, not empty
    assert "compresslib.cluttered" in graph["compresslib.data"]
    assert cycles(graph) == [], "import cycle(s) in compresslib"


def test_dataset_loading_lives_in_data():
    from compresslib import cluttered, data

    assert "cluttered_digits" in data.list_datasets()  # registered by data itself
    assert callable(data.load_images) and not hasattr(cluttered, "load_images")
