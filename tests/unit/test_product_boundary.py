"""The test doubles are not the product: ``pbs_globus_staging`` imports nothing of
``pbs_globus_staging_sim`` (sim/, the ``[sim]`` extra), and the two commands the doubles
bring (``demo``, ``emulator``) reach the CLI by entry point only.

A production install is the product's wheel alone; tests/integration/test_package.py
installs exactly that and runs it.  This tier reads the source and imports it with the
doubles hidden."""
import ast
import subprocess
import sys
import types
from pathlib import Path

import pytest

import pbs_globus_staging
from pbs_globus_staging import cli

LIB = Path(pbs_globus_staging.__file__).resolve().parent
SIM = "pbs_globus_staging_sim"


def imported_names(path: Path):
    """Every module an import statement names, at any depth (lazy imports included),
    and every string literal that spells a dotted module name (importlib, -m, mock)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def test_no_product_module_names_the_doubles():
    named = sorted(f"{p.relative_to(LIB)}: {n}" for p in LIB.rglob("*.py")
                   for n in imported_names(p) if n.split(".")[0] == SIM)
    assert named == []


def test_the_doubles_are_not_in_the_product_package():
    assert sorted(p.name for p in LIB.iterdir()
                  if p.name in ("emulator", "testing", "demo.py")) == []
    assert not any((LIB / "commands" / n).exists() for n in ("demo.py", "emulator.py"))


def test_every_product_module_imports_with_the_doubles_hidden():
    """A production install has no pbs_globus_staging_sim: each product module imports,
    and ``globus-staging --help`` works and lists neither double's command."""
    script = r"""
import importlib, importlib.abc, importlib.metadata, pkgutil, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pbs_globus_staging_sim":
            raise ImportError("hidden: " + name)
sys.meta_path.insert(0, Hide())
importlib.metadata.entry_points = lambda **kw: (
    importlib.metadata.EntryPoints(()) if hasattr(importlib.metadata, "EntryPoints") else {})
import pbs_globus_staging
names = [m.name for m in pkgutil.walk_packages(pbs_globus_staging.__path__, "pbs_globus_staging.")
         if m.name != "pbs_globus_staging.__main__"]
for name in names:
    importlib.import_module(name)
print(len(names))
from pbs_globus_staging import cli
print(" ".join(sorted(cli.build_parser()._subparsers._group_actions[0].choices)))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, commands = proc.stdout.splitlines()
    assert int(count) > 50
    assert commands.split() and not {"demo", "emulator"} & set(commands.split())
    assert {"agent", "install", "show", "status", "login"} <= set(commands.split())


def test_the_doubles_commands_come_from_their_entry_points():
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices
    for name in ("demo", "emulator"):
        func = choices[name].get_default("func")
        assert func.__module__ == f"{SIM}.commands.{name}", (name, func.__module__)


class _EntryPoint:
    def __init__(self, name, load):
        self.name, self.value, self.load = name, f"somepkg.{name}", load


def _with_entry_points(monkeypatch, eps):
    import importlib.metadata as md

    class Found(list):
        def select(self, *, group):
            return [e for e in self if group == cli.PLUGIN_GROUP]

    monkeypatch.setattr(md, "entry_points", lambda: Found(eps))


def test_a_command_that_fails_to_load_costs_one_line_not_the_cli(monkeypatch, capsys):
    def broken():
        raise ImportError("No module named 'somepkg'")

    extra = types.SimpleNamespace(register=lambda sub: sub.add_parser("extra"))
    _with_entry_points(monkeypatch, [_EntryPoint("broken", broken),
                                     _EntryPoint("extra", lambda: extra)])
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert "extra" in choices and "broken" not in choices and "show" in choices
    err = capsys.readouterr().err.splitlines()
    assert err == ["globus-staging: command 'broken' from somepkg.broken not loaded "
                   "(ImportError: No module named 'somepkg')"]


def test_a_plugin_cannot_replace_a_product_command(monkeypatch):
    def hijack():
        raise AssertionError("a product command's name must not be loaded from a plugin")

    _with_entry_points(monkeypatch, [_EntryPoint("show", hijack)])
    choices = cli.build_parser()._subparsers._group_actions[0].choices
    assert choices["show"].get_default("func").__module__ == "pbs_globus_staging.commands.show"


@pytest.mark.parametrize("argv", [["demo", "--help"], ["emulator", "--help"]])
def test_the_doubles_commands_run_through_the_product_entry_point(argv):
    proc = subprocess.run([sys.executable, "-m", "pbs_globus_staging", *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: globus-staging {argv[0]}")
