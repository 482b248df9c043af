"""sdod's import graph, read from its source with `ast`: no import circles among its
modules, and no module importing from a layer above its own.

Every import of an sdod module counts, wherever it stands: at module level, inside a
function (a lazy import is still a dependency; it runs when the function does) and under
`if TYPE_CHECKING:` (a type named from above is a dependency of the design, though it costs
nothing at run time). A failure names the importing line and which of the three it is.

What remains against the rules is listed below with its reason: the test fails when an
entry is no longer needed, so the lists only shrink.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sdod"

# sdod's layers, lowest first, by top-level module or package ("" is sdod/__init__.py): a
# module imports from its own layer or those below. The front door is the six stages
# (`stages`) and the tools beside them (`tools`).
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    ("errors and settings", frozenset({"", "errors", "settings", "faults"})),
    ("storage, archives, hyperparameters", frozenset({"storage", "archive", "transfer",
                                                      "hyperparameters", "safe_paths",
                                                      "tracking"})),
    ("the job spec and its layouts", frozenset({"config", "jobspec", "joblayout", "workspace",
                                                "container"})),
    ("formats and networks", frozenset({"data", "model", "artifact", "artifact_members",
                                        "demo"})),
    ("machinery", frozenset({"checks", "train", "evaluate", "serve", "tune", "registry"})),
    ("one room per stage", frozenset({"pipeline"})),
    ("the front door", frozenset({"stages", "tools"})),
    ("the edges: CLI and the image's entrypoint", frozenset({"cli", "entrypoint", "__main__"})),
)  # fmt: skip

ALLOWED_CIRCLES: dict[frozenset[str], str] = {
    # reading a model.tar.gz builds its network (artifact -> model.sagemaker.build_network,
    # converted_artifact) and the SageMaker importer writes a model.tar.gz (-> artifact's
    # writers); it goes when network building moves into model/ (issue 34)
    frozenset({"sdod.artifact", "sdod.model.sagemaker"}): "artifact builds networks",
}

ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    kind: str  # "module level", "in a function" or "type checking only"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} (line {self.line}, {self.kind})"


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The module a dotted name lives in (`sdod.x.f` -> `sdod.x`), None outside."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, known: dict[str, Path]) -> None:
        self.module, self.known, self.edges = module, known, []
        self.package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        self.functions, self.type_checking = 0, False

    def _add(self, name: str, node: ast.stmt) -> None:
        target = _owner(name, self.known)
        if target is None or target == self.module:
            return
        kind = "in a function" if self.functions else "module level"
        kind = "type checking only" if self.type_checking else kind
        self.edges.append(Edge(self.module, target, node.lineno, kind))

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions += 1
        self.generic_visit(node)
        self.functions -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        outer, self.type_checking = self.type_checking, True
        for statement in node.body:
            self.visit(statement)
        self.type_checking = outer
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:  # relative: from the package, up level - 1
            parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        for alias in node.names:  # `from pkg import module` imports the module
            full = f"{base}.{alias.name}"
            self._add(full if full in self.known else base, node)


def import_graph(package: Path) -> list[Edge]:
    """Every import of one of the package's modules by another, in source order."""
    known = modules(package)
    edges: list[Edge] = []
    for module, path in known.items():
        visitor = _Imports(module, path, known)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        edges += visitor.edges
    return edges


def circles(edges: list[Edge]) -> list[frozenset[str]]:
    """The strongly connected groups of more than one module (Tarjan, iteratively)."""
    graph: dict[str, set[str]] = {}
    for e in edges:
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = stack[stack.index(node) :]
                    del stack[stack.index(node) :]
                    if len(group) > 1:
                        found.append(frozenset(group))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in stack:
                low[node] = min(low[node], index[child])
    return found


def layer(module: str) -> int | None:
    """The index in LAYERS of a module's top-level name (None: not placed)."""
    top = module.split(".")[1] if "." in module else ""
    return next((i for i, (_, names) in enumerate(LAYERS) if top in names), None)


def upward(edges: list[Edge]) -> list[Edge]:
    """The imports from a lower layer of a higher one."""
    return [e for e in edges if (layer(e.target) or 0) > (layer(e.source) or 0)]


GRAPH = import_graph(PACKAGE)


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in modules(PACKAGE) if layer(m) is None)
    assert not missing, f"place these in LAYERS ({__file__}): {missing}"


def test_no_import_circles() -> None:
    found = circles(GRAPH)
    new = [sorted(c) for c in found if c not in ALLOWED_CIRCLES]
    paths = [str(e) for e in GRAPH if any({e.source, e.target} <= c for c in found)]
    assert not new, f"import circles {new}, through:\n" + "\n".join(paths)
    gone = [sorted(c) for c in ALLOWED_CIRCLES if c not in found]
    assert not gone, f"no longer circles: remove {gone} from ALLOWED_CIRCLES"


def test_no_import_from_a_higher_layer() -> None:
    found = upward(GRAPH)
    new = [e for e in found if (e.source, e.target) not in ALLOWED_UPWARD]
    assert not new, "imports from a higher layer:\n" + "\n".join(
        f"{e}: {LAYERS[layer(e.source) or 0][0]} imports {LAYERS[layer(e.target) or 0][0]}"
        for e in new
    )
    gone = sorted(set(ALLOWED_UPWARD) - {(e.source, e.target) for e in found})
    assert not gone, f"no longer imported upward: remove {gone} from ALLOWED_UPWARD"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_the_reader_sees_every_kind_of_import(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "def f():\n    from pkg.b import g\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n",
        "c.py": "import os\nfrom pkg import b\n",
        "sub/__init__.py": "from . import d\nfrom ..a import f\n",
        "sub/d.py": "",
    })  # fmt: skip
    edges = {(e.source, e.target, e.line, e.kind) for e in import_graph(package)}
    assert edges == {
        ("pkg.a", "pkg.b", 2, "in a function"),
        ("pkg.b", "pkg.c", 3, "type checking only"),
        ("pkg.c", "pkg.b", 2, "module level"),
        ("pkg.sub", "pkg.sub.d", 1, "module level"),
        ("pkg.sub", "pkg.a", 2, "module level"),
    }
    assert circles(import_graph(package)) == [frozenset({"pkg.b", "pkg.c"})]


@pytest.mark.parametrize(
    ("source", "target", "upwards"),
    [("sdod.stages", "sdod.train.job", False), ("sdod.train.job", "sdod.stages", True),
     ("sdod.train.job", "sdod.evaluate.run", False), ("sdod.storage", "sdod.jobspec", True),
     ("sdod.container", "sdod", False), ("sdod", "sdod.cli", True)],
)  # fmt: skip
def test_layers_compare_top_level_names(source: str, target: str, upwards: bool) -> None:
    assert bool(upward([Edge(source, target, 1, "module level")])) is upwards
