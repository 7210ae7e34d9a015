"""
The import contract: `workflows -> artifacts -> attachments`, nothing
pointing upward, and no import cycle inside an app. The project
(`macproject`) wires the apps together; no app imports it.
"""

from __future__ import annotations

import grimp
import pytest

APPS = ("workflows", "artifacts", "attachments")  # from the top layer down


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Imports under `if TYPE_CHECKING:` never run, so they make no cycle. No
    # cache: it would be written into the checkout.
    return grimp.build_graph(
        *APPS, "macproject", exclude_type_checking_imports=True, cache_dir=None
    )


def describe(dependency) -> str:
    routes = sorted(" -> ".join([*r.heads, *r.middle, *r.tails]) for r in dependency.routes)
    return f"{dependency.importer} imports {dependency.imported}: {routes[:3]}"


def test_layers_point_only_downward(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=APPS)
    assert not illegal, [describe(d) for d in illegal]


@pytest.mark.parametrize("app", APPS)
def test_no_app_imports_the_project(graph, app):
    chain = graph.find_shortest_chain(importer=app, imported="macproject", as_packages=True)
    assert chain is None, chain


def import_cycles(graph, app: str) -> list[list[str]]:
    """The strongly connected sets of the app's modules that have more than one member."""
    modules = sorted(m for m in graph.find_descendants(app) | {app})
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules)
        for m in modules
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in edges[module]:
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == module:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for module in modules:
        if module not in index:
            visit(module)
    return cycles


@pytest.mark.parametrize("app", APPS)
def test_no_import_cycle_inside_an_app(graph, app):
    assert import_cycles(graph, app) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("app", "app.a", "app.b", "app.c"):
        graph.add_module(module)
    graph.add_import(importer="app.a", imported="app.b")
    graph.add_import(importer="app.b", imported="app.a")
    graph.add_import(importer="app.c", imported="app.a")
    assert import_cycles(graph, "app") == [["app.a", "app.b"]]
