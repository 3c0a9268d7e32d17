"""No import cycle among the product's modules.

Every relative import counts, wherever it is written: at the top, under
``if TYPE_CHECKING``, or inside a function (a lazy import hides a cycle from
Python, not from the reader who has to know which module comes first).  The
test doubles are another distribution (sim/); that the product imports none of
them is tests/unit/test_product_boundary.py's to check.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pbs_globus_staging

PACKAGE_DIR = Path(pbs_globus_staging.__file__).parent


def module_names(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for the package under ``root``."""
    mods = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts = [package, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def import_graph(root: Path, package: str) -> Dict[str, Set[str]]:
    """Module -> the product modules it imports (relative, or absolute by package name)."""
    mods = module_names(root, package)
    graph: Dict[str, Set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            targets: List[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    if node.level - 1 > len(here) - 1:
                        raise AssertionError(f"{path}:{node.lineno}: import beyond the package")
                    base = here[:len(here) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == package:
                    target = node.module
                else:
                    continue
                # `from . import x` names a submodule when there is one, else
                # a name defined in the package's __init__.
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    targets.append(sub if sub in mods else target)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == package]
            # A package's __init__ naming one of its own attributes is no edge.
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One cycle (as a closed path) per strongly connected component that has one."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def strongconnect(v: str) -> None:   # Tarjan; the graph has a few dozen nodes
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(_path_in(graph, set(comp)))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def _path_in(graph: Dict[str, Set[str]], comp: Set[str]) -> List[str]:
    """A closed path through the component, from its first module back to it."""
    start = min(comp)
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return [start, *reversed(path[:-1]), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"no cycle in component {sorted(comp)}")


def describe(found: List[List[str]]) -> str:
    return "\n".join(" -> ".join(c) for c in found)


def test_the_product_package_has_no_import_cycle():
    graph = import_graph(PACKAGE_DIR, "pbs_globus_staging")
    assert "pbs_globus_staging.cli" in graph and "pbs_globus_staging.commands.show" in graph
    found = cycles(graph)
    assert not found, "import cycles among the product's modules:\n" + describe(found)


def test_the_entry_point_is_imported_by_no_product_module():
    graph = import_graph(PACKAGE_DIR, "pbs_globus_staging")
    importers = sorted(m for m, deps in graph.items() if "pbs_globus_staging.cli" in deps)
    assert importers == ["pbs_globus_staging.__main__"]


def test_mail_imports_nothing_of_alerts():
    """alerts (a package since issue 13) uses mail as its transport, never back."""
    graph = import_graph(PACKAGE_DIR, "pbs_globus_staging")
    alerts_mods = {m for m in graph if m == "pbs_globus_staging.alerts"
                   or m.startswith("pbs_globus_staging.alerts.")}
    assert len(alerts_mods) > 1 and "pbs_globus_staging.mail" in graph
    assert any("pbs_globus_staging.mail" in graph[m] for m in alerts_mods)
    assert not graph["pbs_globus_staging.mail"] & alerts_mods


def test_a_cycle_through_a_package_reexport_is_found(tmp_path):
    """alerts/ and credentials/ re-export their submodules' names: a submodule
    that took a name from the package (not from its sibling) would close a cycle."""
    _write(tmp_path, {
        "__init__.py": "",
        "alerts/__init__.py": "from .engine import Engine\nfrom .rules import Rule\n",
        "alerts/rules.py": "X = 1\n",
        "alerts/engine.py": "from . import Rule\n",          # the package, not .rules
        "mail.py": "from .alerts.rules import X\n",   # into a leaf submodule: no cycle
    })
    assert describe(cycles(import_graph(tmp_path, "pkg"))) == \
        "pkg.alerts -> pkg.alerts.engine -> pkg.alerts"


def _write(root: Path, files: Dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_a_cycle_through_type_checking_or_a_function_is_found_and_printed(tmp_path):
    _write(tmp_path, {
        "__init__.py": "",
        "alerts.py": "from .mail import Settings\n",
        "mail.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                   "    from .alerts import Config\n",
        "cli.py": "def main():\n    from .commands import show\n",
        "commands/__init__.py": "",
        "commands/show.py": "def run():\n    from ..cli import load_site\n",
        "commands/check.py": "from . import helper\n",      # the package, no cycle
    })
    found = cycles(import_graph(tmp_path, "pkg"))
    assert describe(found).splitlines() == [
        "pkg.alerts -> pkg.mail -> pkg.alerts",
        "pkg.cli -> pkg.commands.show -> pkg.cli",
    ]


def test_a_package_importing_its_own_submodule_that_imports_it_back_is_a_cycle(tmp_path):
    _write(tmp_path, {
        "__init__.py": "",
        "commands/__init__.py": "from . import show\n",
        "commands/show.py": "from . import emit\n",     # a name from the package's __init__
        "other.py": "import pkg.commands.show\n",
    })
    assert describe(cycles(import_graph(tmp_path, "pkg"))) == \
        "pkg.commands -> pkg.commands.show -> pkg.commands"
