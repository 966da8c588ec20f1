"""The package's layering, checked on its import graph (grimp, the engine of import-linter).

* No import cycle between ``pipnet_lit`` modules, function-level (lazy) imports included: a cycle that only
  works because of import order, or because one side imports lazily, still ties the modules together.
* The framework-free layers (PIP maths, metrics, models, inference, export, runtimes, detectors) import
  neither Lightning nor Hydra, directly or through other ``pipnet_lit`` modules, so that inference and
  export installs never need the training stack.
* ``pipnet_lit.ssl.layout`` imports only the standard library (a Hydra plugin imports it at every start-up).

What the graph holds: every ``import`` and ``from ... import`` statement of the package's files, at module
level or inside functions, except those under ``if TYPE_CHECKING:`` (they never run). External packages are
squashed to their top-level name (``lightning.pytorch`` -> ``lightning``). Imports built from strings
(``importlib.import_module``, the dataset readers' registry) are not seen.

Two graphs: :func:`build_import_graph` has the import statements only, and serves the cycle check (a
package ``__init__`` that re-exports its submodules is an edge ``pkg -> pkg.sub``, not a cycle).
:func:`build_runtime_graph` adds what Python does on every import: importing ``a.b.c`` first runs
``a/__init__.py`` and ``a/b/__init__.py``, so each module also "imports" its parent packages; the
framework checks use it, because a framework-free module that imports ``pkg.helper`` pulls in whatever
``pkg/__init__.py`` imports.

The last tests build a small package on disk with known faults and check that both checks report exactly
those, so a green run here means something.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import grimp
import pytest

PACKAGE = "pipnet_lit"

#: Top-level names of the training frameworks (grimp squashes external packages to these).
FRAMEWORKS = ("lightning", "pytorch_lightning", "lightning_fabric", "hydra", "omegaconf")

#: Layers that must work without Lightning and Hydra: a package stands for itself and all its submodules,
#: except the command-line modules in `COMMAND_MODULES`.
FRAMEWORK_FREE = (
    "pipnet_lit.pip",
    "pipnet_lit.metrics",
    "pipnet_lit.models",
    "pipnet_lit.landmark_graph",
    "pipnet_lit.random_state",
    "pipnet_lit.checkpoints",
    "pipnet_lit.evaluation",
    "pipnet_lit.inference",
    "pipnet_lit.predict",
    "pipnet_lit.export",
    "pipnet_lit.runtime",
    "pipnet_lit.convert",
    "pipnet_lit.detect",
    "pipnet_lit.smoothing",
    "pipnet_lit.cli",
    "pipnet_lit.presentation",
    "pipnet_lit.ssl.layout",
    "pipnet_lit.ssl.diagnostics",
)

#: The export library is framework-free, its command line is not: ``calibrate=<data config>`` composes that
#: config with Hydra and prepares its training crops with the data module, exactly as training does. Only
#: these modules may do so, and nothing in a framework-free layer imports them.
COMMAND_MODULES = ("pipnet_lit.export.command", "pipnet_lit.export.__main__")

#: Standard library only (besides its own parent packages, whose ``__init__`` runs when it is imported).
STDLIB_ONLY = "pipnet_lit.ssl.layout"

# ---------------------------------------------------------------------------------------------------------
# Building the graphs
# ---------------------------------------------------------------------------------------------------------


def _package_dirs(package: str) -> list[Path]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"{package!r} is not an importable package")
    return [Path(p) for p in spec.submodule_search_locations]


def _walk_sources(package: str) -> Iterable[tuple[Path, Path]]:
    """(package folder, folder) for every folder under ``package`` that is not a cache or hidden folder."""
    for root in _package_dirs(package):
        for folder, subdirs, _files in os.walk(root):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__" and not d.startswith("."))
            yield root, Path(folder)


def _dotted(package: str, root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts if path.suffix else path.relative_to(root).parts
    if parts and parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((package, *parts))


def namespace_subpackages(package: str) -> list[str]:
    """Folders under ``package`` that hold modules but no ``__init__.py`` (implicit namespace packages).

    grimp does not descend into them from the parent package (``pipnet_lit/ssl/`` is one), so they are
    passed to it as packages of their own; without this their modules and every import of them would be
    missing from the graph.
    """
    found = []
    for root, folder in _walk_sources(package):
        if folder == root or (folder / "__init__.py").exists():
            continue
        if any(folder.glob("*.py")):
            found.append(_dotted(package, root, folder))
    return sorted(found)


def source_modules(package: str) -> set[str]:
    """Every module that a ``.py`` file under ``package`` defines (what a complete graph must hold)."""
    modules = set()
    for root, folder in _walk_sources(package):
        for file in folder.glob("*.py"):
            modules.add(_dotted(package, root, file))
    return modules


def build_import_graph(package: str) -> grimp.ImportGraph:
    """The import statements of ``package`` (lazy ones included, ``TYPE_CHECKING`` ones excluded).

    ``cache_dir=None``: grimp's default cache is a ``.grimp_cache`` folder in the working directory, which
    would land in the repository and could serve a stale graph of a package that changed on disk.
    """
    importlib.invalidate_caches()
    return grimp.build_graph(
        package,
        *namespace_subpackages(package),
        include_external_packages=True,
        exclude_type_checking_imports=True,
        cache_dir=None,
    )


def _parent_packages(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def build_runtime_graph(package: str) -> grimp.ImportGraph:
    """:func:`build_import_graph` plus an edge from each module to each of its parent packages."""
    graph = build_import_graph(package)
    for module in sorted(graph.modules):
        if module == package or module.startswith(package + "."):
            for parent in _parent_packages(module):
                if parent in graph.modules:
                    graph.add_import(importer=module, imported=parent)
    return graph


def internal_modules(graph: grimp.ImportGraph, package: str) -> list[str]:
    return sorted(m for m in graph.modules if m == package or m.startswith(package + "."))


# ---------------------------------------------------------------------------------------------------------
# Checks, shared by the real package and the fake one
# ---------------------------------------------------------------------------------------------------------


def strongly_connected_components(nodes: Iterable[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit); components of one node are left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
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
                    components.append(sorted(component))
    return sorted(components)


def elementary_cycles(component: list[str], edges: dict[str, set[str]], limit: int) -> list[list[str]]:
    """The simple cycles inside one strongly connected component, each as ``[a, b, ..., a]`` starting at
    its smallest module (so each cycle appears once), at most ``limit`` of them."""
    members = set(component)
    cycles: list[list[str]] = []
    for start in component:
        # only nodes after ``start`` may appear besides it: a cycle is found from its smallest node only
        allowed = {m for m in members if m > start}
        path = [start]
        on_path = {start}
        work = [iter(sorted(edges.get(start, set()) & (allowed | {start})))]
        while work:
            succ = next(work[-1], None)
            if succ is None:
                work.pop()
                on_path.discard(path.pop())
                continue
            if succ == start:
                cycles.append([*path, start])
                if len(cycles) >= limit:
                    return cycles
            elif succ not in on_path:
                path.append(succ)
                on_path.add(succ)
                work.append(iter(sorted(edges.get(succ, set()) & (allowed | {start}))))
    return cycles


def find_import_cycles(graph: grimp.ImportGraph, package: str, limit: int = 200) -> list[list[str]]:
    """Every import cycle between distinct modules of ``package`` (a module importing itself is no cycle),
    as chains ``[a, b, ..., a]``; at most ``limit`` per strongly connected component."""
    modules = internal_modules(graph, package)
    inside = set(modules)
    edges = {m: (graph.find_modules_directly_imported_by(m) & inside) - {m} for m in modules}
    cycles = []
    for component in strongly_connected_components(modules, edges):
        cycles.extend(elementary_cycles(component, edges, limit))
    return sorted(cycles, key=lambda c: (len(c), c))


def find_forbidden_imports(
    graph: grimp.ImportGraph, layer: str, forbidden: Iterable[str], exempt: Iterable[str] = ()
) -> list[tuple[str, ...]]:
    """For each module of ``layer`` (the module and all its submodules but ``exempt``) and each forbidden
    top-level name that it reaches through the graph, the shortest import chain, e.g.
    ``(layer.x, pkg.y, "omegaconf")``."""
    layer_modules = sorted({layer, *graph.find_descendants(layer)} - set(exempt))
    targets = sorted(
        m for m in graph.modules if any(m == name or m.startswith(name + ".") for name in forbidden)
    )
    chains = []
    for module in layer_modules:
        for target in targets:
            if graph.chain_exists(importer=module, imported=target):
                chain = graph.find_shortest_chain(importer=module, imported=target)
                assert chain is not None
                chains.append(tuple(chain))
    return chains


def _edge_note(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    if details:
        return "; ".join(f"line {d['line_number']}: {d['line_contents']}" for d in details)
    if imported in _parent_packages(importer):
        return f"(importing {importer} runs {imported}/__init__.py)"
    return "(no details)"


def describe_chain(graph: grimp.ImportGraph, chain: Iterable[str]) -> str:
    """``a -> b -> c`` and, under it, the import line(s) behind each step."""
    chain = list(chain)
    lines = [" -> ".join(chain)]
    for importer, imported in zip(chain, chain[1:], strict=False):
        lines.append(f"      {importer} -> {imported}: {_edge_note(graph, importer, imported)}")
    return "\n".join(lines)


def stdlib_violations(graph: grimp.ImportGraph, module: str) -> list[tuple[str, ...]]:
    """Chains from ``module`` to each module it reaches that is neither the standard library nor one of its
    own parent packages (those run anyway when it is imported, and are checked through this same graph)."""
    allowed_internal = set(_parent_packages(module))
    bad = []
    for reached in sorted(graph.find_upstream_modules(module)):
        # other modules of the package are allowed: what they import is in this module's reach too
        if reached in allowed_internal or reached.split(".")[0] in (sys.stdlib_module_names | {PACKAGE}):
            continue
        chain = graph.find_shortest_chain(importer=module, imported=reached)
        assert chain is not None
        bad.append(tuple(chain))
    return bad


# ---------------------------------------------------------------------------------------------------------
# The real package
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def import_graph() -> grimp.ImportGraph:
    return build_import_graph(PACKAGE)


@pytest.fixture(scope="module")
def runtime_graph() -> grimp.ImportGraph:
    return build_runtime_graph(PACKAGE)


def test_graph_covers_every_module(import_graph):
    """Every ``.py`` file of the package is in the graph (a folder without ``__init__.py`` would otherwise
    drop out silently, and with it the imports that close a cycle)."""
    missing = sorted(source_modules(PACKAGE) - set(import_graph.modules))
    assert not missing, f"modules missing from the import graph: {missing}"


def test_no_import_cycles(import_graph):
    cycles = find_import_cycles(import_graph, PACKAGE)
    report = "\n".join(f"  {describe_chain(import_graph, cycle)}" for cycle in cycles)
    assert not cycles, (
        f"{len(cycles)} import cycle(s) between {PACKAGE} modules (lazy imports count); break one import of "
        f"each cycle, e.g. by moving what both sides need into a lower module:\n{report}"
    )


@pytest.mark.parametrize("layer", FRAMEWORK_FREE)
def test_layer_is_framework_free(runtime_graph, layer):
    assert layer in runtime_graph.modules, (
        f"{layer} is not in the import graph (renamed? update FRAMEWORK_FREE)"
    )
    chains = find_forbidden_imports(runtime_graph, layer, FRAMEWORKS, exempt=COMMAND_MODULES)
    report = "\n".join(f"  {describe_chain(runtime_graph, chain)}" for chain in chains)
    assert not chains, f"{layer} must not import {', '.join(FRAMEWORKS)}; it does:\n{report}"


def test_ssl_layout_imports_only_the_standard_library(runtime_graph):
    chains = stdlib_violations(runtime_graph, STDLIB_ONLY)
    report = "\n".join(f"  {describe_chain(runtime_graph, chain)}" for chain in chains)
    assert not chains, f"{STDLIB_ONLY} must import only the standard library; it imports:\n{report}"


# ---------------------------------------------------------------------------------------------------------
# The checks can fail: a package with known faults
# ---------------------------------------------------------------------------------------------------------

_FAKE_FILES = {
    "__init__.py": "",
    # a cycle closed by a lazy (function-level) import
    "a.py": "from {pkg} import b\n",
    "b.py": "def late():\n    from {pkg} import a\n\n    return a\n",
    # a cycle through a namespace folder (no __init__.py): found only if that folder is scanned
    "c.py": "def late():\n    from {pkg}.ns import tool\n\n    return tool\n",
    "ns/tool.py": "import {pkg}.c\n",
    # a package re-exporting its submodule: an edge sub -> sub.leaf, no cycle
    "sub/__init__.py": "from {pkg}.sub.leaf import VALUE\n",
    "sub/leaf.py": "VALUE = 1\n",
    # a framework, directly, transitively, through a parent package's __init__, and only for type checkers
    "cfg.py": "import omegaconf\n",
    "uses_cfg.py": "from {pkg}.cfg import omegaconf\n",
    "heavy/__init__.py": "from omegaconf import OmegaConf\n",
    "heavy/util.py": "X = 1\n",
    "via_parent.py": "from {pkg}.heavy.util import X\n",
    "typed.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import omegaconf\n",
    "clean.py": "import json\n",
}


@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Iterator[str]:
    """A package with a unique name (so that nothing cached under another test's name can answer for it)."""
    name = f"layering_fake_{uuid.uuid4().hex[:12]}"
    for relative, source in _FAKE_FILES.items():
        path = tmp_path / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source.replace("{pkg}", name))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_fake_package_graph_is_complete(fake_package):
    graph = build_import_graph(fake_package)
    assert namespace_subpackages(fake_package) == [f"{fake_package}.ns"]
    assert source_modules(fake_package) <= set(graph.modules)


def test_cycle_finder_reports_exactly_the_planted_cycles(fake_package):
    p = fake_package
    graph = build_import_graph(p)
    assert find_import_cycles(graph, p) == [
        [f"{p}.a", f"{p}.b", f"{p}.a"],
        [f"{p}.c", f"{p}.ns.tool", f"{p}.c"],
    ]
    message = describe_chain(graph, [f"{p}.a", f"{p}.b", f"{p}.a"])
    assert f"{p}.a -> {p}.b -> {p}.a" in message
    assert f"line 2: from {p} import a" in message  # the lazy import that closes it
    # the re-export is in the graph, and is no cycle
    assert graph.direct_import_exists(importer=f"{p}.sub", imported=f"{p}.sub.leaf")


def test_forbidden_check_reports_exactly_the_planted_imports(fake_package):
    p = fake_package
    graph = build_runtime_graph(p)
    assert find_forbidden_imports(graph, p, FRAMEWORKS) == [
        (f"{p}.cfg", "omegaconf"),
        (f"{p}.heavy", "omegaconf"),
        (f"{p}.heavy.util", f"{p}.heavy", "omegaconf"),
        (f"{p}.uses_cfg", f"{p}.cfg", "omegaconf"),
        (f"{p}.via_parent", f"{p}.heavy.util", f"{p}.heavy", "omegaconf"),
    ]
    # an exempt module (a command line) is not checked itself, but whoever imports it still is
    assert find_forbidden_imports(graph, p, FRAMEWORKS, exempt=[f"{p}.cfg"]) == [
        (f"{p}.heavy", "omegaconf"),
        (f"{p}.heavy.util", f"{p}.heavy", "omegaconf"),
        (f"{p}.uses_cfg", f"{p}.cfg", "omegaconf"),
        (f"{p}.via_parent", f"{p}.heavy.util", f"{p}.heavy", "omegaconf"),
    ]
    for clean in ("clean", "typed", "sub", "a", "ns.tool"):
        assert find_forbidden_imports(graph, f"{p}.{clean}", FRAMEWORKS) == [], clean
    assert stdlib_violations(graph, f"{p}.clean") == []
    assert stdlib_violations(graph, f"{p}.typed") == []
    assert stdlib_violations(graph, f"{p}.uses_cfg") == [
        (f"{p}.uses_cfg", f"{p}.cfg"),
        (f"{p}.uses_cfg", f"{p}.cfg", "omegaconf"),
    ]
    # the import statements alone miss the parent package's __init__
    assert find_forbidden_imports(build_import_graph(p), f"{p}.via_parent", FRAMEWORKS) == []


#: Entry points share the jobs layer, never each other: (importer, imported) pairs that must not be
#: connected by any chain of imports. `train` alone knows that self-training chains exist.
ENTRY_POINT_EDGES = [
    ("pipnet_lit.eval", "pipnet_lit.train"),
    ("pipnet_lit.eval", "pipnet_lit.ssl.chain"),
    ("pipnet_lit.train", "pipnet_lit.eval"),
    ("pipnet_lit.ssl.chain", "pipnet_lit.train"),
    ("pipnet_lit.ssl.chain", "pipnet_lit.eval"),
    ("pipnet_lit.jobs", "pipnet_lit.train"),
    ("pipnet_lit.jobs", "pipnet_lit.eval"),
    ("pipnet_lit.jobs", "pipnet_lit.ssl.chain"),
]


@pytest.mark.parametrize(("importer", "imported"), ENTRY_POINT_EDGES)
def test_entry_points_do_not_import_each_other(import_graph, importer, imported):
    assert {importer, imported} <= import_graph.modules
    chain = import_graph.find_shortest_chain(importer=importer, imported=imported)
    assert chain is None, f"{importer} imports {imported}: {describe_chain(import_graph, tuple(chain))}"
