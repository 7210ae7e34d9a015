"""
The import contract: `workflows -> artifacts -> attachments`, nothing
pointing upward, and no import cycle inside an app. The project
(`macproject`) wires the apps together; no app imports it. The documents
that describe the layout (docs/ARCHITECTURE.md, the README's Layout) name
only modules that exist, and the README lists them all.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("workflows", "artifacts", "attachments")  # from the top layer down
PACKAGES = (*APPS, "macproject")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    # Imports under `if TYPE_CHECKING:` never run, so they make no cycle. No
    # cache: it would be written into the checkout.
    return grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True, cache_dir=None)


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


def top_level_names(module: str) -> set[str]:
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def unresolved(graph, dotted: str) -> str | None:
    """None if `dotted` is a module, or a module and one of its top-level names."""
    if dotted in graph.modules:
        return None
    module, _, name = dotted.rpartition(".")
    if module in graph.modules and name in top_level_names(module):
        return None
    return dotted


def test_the_architecture_document_names_what_exists(graph):
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    packages = "|".join(PACKAGES)
    named = set(re.findall(rf"\b((?:{packages})(?:\.\w+)+)", text))
    # In the diagram, a module's box may name one of its functions or classes.
    named |= {
        f"{module}.{name}"
        for module, name in re.findall(rf"\b((?:{packages})(?:\.\w+)+)<br/>(\w+)", text)
    }
    assert len(named) > 20
    assert [n for n in sorted(named) if unresolved(graph, n)] == []


DJANGO_PACKAGES = {"migrations", "management", "templatetags"}


def readme_layout() -> dict[str, set[str]]:
    """The modules the README's Layout lists, by package."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed: dict[str, set[str]] = {}
    package = None
    for line in section.split("```")[1].splitlines():
        header = re.match(r"^(\w+)/\s", line)
        if header:
            package = header.group(1)
            continue
        # A module (`name.py`) or a package (`name/`).
        entry = re.match(r"^  ([\w.]+(?:\.py|/)(?:, [\w.]+(?:\.py|/))*)\s", line)
        if entry and package is not None:
            names = {
                name.removesuffix(".py").removesuffix("/") for name in entry.group(1).split(", ")
            }
            listed.setdefault(package, set()).update(names)
    return listed


def test_the_readme_layout_lists_every_module_and_no_other():
    listed = readme_layout()
    for package in PACKAGES:
        modules = {p.stem for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
        # Packages too, but not the ones every Django app has by convention.
        modules |= {
            p.parent.name
            for p in (ROOT / package).glob("*/__init__.py")
            if p.parent.name not in DJANGO_PACKAGES
        }
        assert listed.get(package) == modules, package
