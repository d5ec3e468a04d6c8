"""No import cycle between engine modules (imports that run; `if TYPE_CHECKING:` ones are
for the type checker only). import-linter's contracts keep the layers' direction; this
keeps every module's imports a tree, so any module can be imported first."""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_engine_modules_import_no_cycle() -> None:
    graph = grimp.build_graph("engine", exclude_type_checking_imports=True)
    assert len(graph.modules) > 100  # the whole package was read
    assert _cycles(graph) == []


def _graph(*imports: tuple[str, str]) -> grimp.ImportGraph:
    graph = grimp.ImportGraph()
    for importer, imported in imports:
        graph.add_import(importer=importer, imported=imported)
    return graph


def test_the_cycle_finder_finds_cycles_and_only_cycles() -> None:
    """The finder itself, on small graphs: so an empty answer above is a real one."""
    tree = _graph(("a", "b"), ("a", "c"), ("b", "c"), ("c", "d"))
    assert _cycles(tree) == []
    looped = _graph(("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"))
    assert sorted(_cycles(looped)) == [["a", "b", "c"], ["d", "e"]]
