"""The package's import graph, read from the source with ``ast``: no import circles, no
upward arrows between layers, the library never imports the command layer, no file under
``src/`` above 400 lines.

Every ``import`` counts, at module level or inside a function (a lazy import is still a
dependency); only imports under ``if TYPE_CHECKING:`` are left out, since they never run.
Each failure names the module, the import and its line.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PACKAGE = "critic_free_rl"
MAX_LINES = 400


_MATHS_FORBIDDEN = ("vllm", "deepspeed", "hydra", "critic_free_rl.rollout", "critic_free_rl.backends",
                    "critic_free_rl.trainer", "critic_free_rl.checkpointing", "critic_free_rl.evaluation")
#: (modules, imports they must never make, why); a name covers its submodules
LAYERS: list[tuple[str, tuple[str, ...], str]] = [
    ("critic_free_rl.config.schema", ("critic_free_rl",), "the schema is the bottom layer: plain dataclasses"),
    ("critic_free_rl.algorithms", (*_MATHS_FORBIDDEN, "critic_free_rl.rewards", "critic_free_rl.data", "critic_free_rl.models"),
     "the estimators are maths on plain tensors"),
    ("critic_free_rl.rewards.shaping", (*_MATHS_FORBIDDEN, "critic_free_rl.algorithms"), "reward shapes are maths on plain tensors"),
    ("critic_free_rl.data", ("critic_free_rl.rewards", "critic_free_rl.models", "critic_free_rl.algorithms", "critic_free_rl.rollout",
                             "critic_free_rl.backends", "critic_free_rl.trainer", "critic_free_rl.evaluation", "critic_free_rl.checkpointing",
                             "vllm", "deepspeed"), "data sits below the models, rewards and the loop"),
    ("critic_free_rl.config", ("critic_free_rl.rollout", "critic_free_rl.backends", "critic_free_rl.models", "critic_free_rl.trainer",
                               "critic_free_rl.evaluation", "critic_free_rl.checkpointing", "vllm", "deepspeed"),
     "configs are read and validated before anything loads"),
    ("critic_free_rl.rollout", ("critic_free_rl.rewards", "critic_free_rl.algorithms", "critic_free_rl.backends", "critic_free_rl.trainer",
                                "critic_free_rl.checkpointing", "deepspeed"), "the engines only sample"),
    ("critic_free_rl.rewards", ("critic_free_rl.rollout", "critic_free_rl.backends", "critic_free_rl.algorithms", "critic_free_rl.trainer",
                                "critic_free_rl.checkpointing", "vllm", "deepspeed"), "rewards score text, whoever sampled it"),
    ("critic_free_rl.backends", ("critic_free_rl.rewards", "critic_free_rl.trainer", "critic_free_rl.checkpointing"), "the learner knows no loop"),
    ("critic_free_rl.logging", ("critic_free_rl.rollout", "critic_free_rl.backends", "critic_free_rl.rewards", "critic_free_rl.trainer"),
     "logging is a leaf every layer uses"),
    ("critic_free_rl.report", ("critic_free_rl.trainer", "critic_free_rl.rollout", "critic_free_rl.backends", "critic_free_rl.rewards",
                               "vllm", "deepspeed"), "reports read run directories, never train"),
    ("critic_free_rl.checkpointing", ("critic_free_rl.trainer",), "the trainer imports checkpointing"),
    ("critic_free_rl.evaluation", ("critic_free_rl.trainer",), "the trainer imports evaluation"),
]


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str  # a module of the package, or any other dotted name as written
    line: int

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported} (line {self.line})"


def module_files(src: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` of ``package`` under ``src``."""
    out = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """Every import ``module`` makes that can run; ``from X import Y`` is an edge to ``X.Y`` when
    that is a module of the package, else to ``X``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    edges: list[Edge] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_one(stmt)
            else:
                visit_one(child)

    def visit_one(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            edges.extend(Edge(module, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                edges.append(Edge(module, full if full in modules else base, node.lineno))
        visit(node)

    visit(ast.parse(path.read_text(), str(path)))
    return list(dict.fromkeys(edges))  # one edge per line, however many names it imports


def import_graph(src: Path = SRC, package: str = PACKAGE) -> dict[str, list[Edge]]:
    modules = module_files(src, package)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, list[Edge]]) -> list[tuple[set[str], list[Edge]]]:
    """Each import circle: a strongly connected component of the package's modules (Tarjan)
    with the imports among its modules (removing any one of them may not be enough)."""
    internal = {m: [e for e in es if e.imported in graph] for m, es in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[tuple[set[str], list[Edge]]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for e in internal[v]:
            w = e.imported
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            edges = [e for m in sorted(comp) for e in internal[m] if e.imported in comp]
            if edges:
                found.append((comp, edges))

    for v in sorted(internal):
        if v not in index:
            connect(v)
    return found


def _covers(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def upward_arrows(graph: dict[str, list[Edge]]) -> list[str]:
    """Imports that break :data:`LAYERS` or reach the command layer from the library."""
    bad = []
    for module, edges in graph.items():
        for e in edges:
            if not _covers(module, f"{PACKAGE}.cli") and _covers(e.imported, f"{PACKAGE}.cli"):
                bad.append(f"{e}: the library never imports the command layer (critic_free_rl.cli)")
            for layer, forbidden, why in LAYERS:
                if _covers(module, layer):
                    bad.extend(f"{e}: {layer} never imports {f} ({why})" for f in forbidden if _covers(e.imported, f))
    return bad


# ---------------------------------------------------------------------------- the checks themselves
def test_the_checker_sees_lazy_relative_and_typing_only_imports(tmp_path: Path) -> None:
    """Catches a checker that misses imports inside functions or relative ones (and so passes
    on anything), or that counts ``if TYPE_CHECKING:`` imports, which never run."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .b import f\n")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub import b\n"
                              "def g():\n    import pkg.cli\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import g\n    from pkg.sub.c import h\n")
    (pkg / "sub" / "c.py").write_text("import vllm\nfrom pkg.sub import b\n")
    graph = import_graph(tmp_path, "pkg")
    assert {e.imported for e in graph["pkg.a"]} == {"typing", "pkg.cli"}
    assert {e.imported for e in graph["pkg.sub.b"]} == {"pkg.a", "pkg.sub.c"}
    assert {e.imported for e in graph["pkg.sub"]} == {"pkg.sub.b"}
    assert [(sorted(mods), [str(e) for e in edges]) for mods, edges in cycles(graph)] == [
        (["pkg.sub.b", "pkg.sub.c"], ["pkg.sub.b -> pkg.sub.c (line 3)", "pkg.sub.c -> pkg.sub.b (line 2)"])]


def test_no_import_circles() -> None:
    """Catches any module that, directly or through others, imports itself again."""
    found = cycles(import_graph())
    assert not found, "import circles:\n" + "\n".join(f"  among {', '.join(sorted(mods))}: " + "; ".join(map(str, edges))
                                                    for mods, edges in found)


def test_the_graph_holds_the_command_layers_lazy_imports() -> None:
    """Catches a graph built from module-level imports only (the command layer imports the
    trainer inside a function) or from the wrong source tree."""
    graph = import_graph()
    assert any(e.imported == f"{PACKAGE}.trainer" for e in graph[f"{PACKAGE}.cli.train"])
    assert f"{PACKAGE}.trainer" in graph and f"{PACKAGE}.config.schema" in graph


def test_no_upward_arrows_and_the_library_never_imports_the_command_layer() -> None:
    """Catches e.g. the maths importing vLLM, data importing rewards, a library module
    importing ``critic_free_rl.cli``, or the schema importing the package."""
    bad = upward_arrows(import_graph())
    assert not bad, "imports against the layering:\n" + "\n".join("  " + b for b in bad)


def test_no_file_under_src_above_400_lines() -> None:
    """Catches a module growing past one reader's sitting."""
    sizes = {p.relative_to(SRC).as_posix(): len(p.read_text().splitlines()) for p in sorted(SRC.rglob("*.py"))}
    big = [f"{f}: {n} lines" for f, n in sizes.items() if n > MAX_LINES]
    assert not big, f"files above {MAX_LINES} lines (split them by concept):\n" + "\n".join("  " + b for b in big)
