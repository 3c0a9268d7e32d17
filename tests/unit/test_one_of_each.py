"""Issue 13, "one of each": one duration grammar, one byte format, one place for
each default.  tests/unit/test_units.py proves the grammar and the format behave as
one; this proves by reading the product's source that no second one is written."""
import ast
import dataclasses
import re
from pathlib import Path

from pbs_globus_staging import request, siteconfig

LIB = Path(siteconfig.__file__).resolve().parent


def product_files():
    yield from sorted(LIB.rglob("*.py"))


def hits(pattern, *, skip=("units.py",)):
    rx = re.compile(pattern)
    return [f"{p.relative_to(LIB)}:{n}: {line.strip()}"
            for p in product_files() if p.name not in skip
            for n, line in enumerate(p.read_text().splitlines(), 1) if rx.search(line)]


def test_no_second_byte_format():
    # unit words, powers of 1000 or 1024 as divisors: only units.human_bytes has them
    assert hits(r"[\"'](KB|kB|KiB|MB|MiB|GB|GiB|TB|TiB)[\"' /]|/ *1024\b|/ *1e[369]\b"
                r"|\b1e[69]\b|\b1_?000_?000\b") == []


def test_no_second_duration_unit_table():
    # a table of unit letters to seconds: units.DURATION_UNITS is the only one (the
    # request grammar's deadline=Nm|Nh|Nd takes its factors from it)
    assert hits(r"[\"'][smhdw][\"'] *: *[0-9]|\([\"'][smhdw][\"'], *[0-9]",
                skip=("units.py",)) == []


def test_every_duration_parser_is_the_units_one():
    """A ``parse_duration`` anywhere but units.py only adds a range check."""
    found = []
    for path in product_files():
        if path.name == "units.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and "duration" in node.name \
                    and node.name.startswith("parse"):
                calls = {ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call)}
                found.append(path.name)
                assert "units.parse_duration" in calls, f"{path.name}: {node.name}"
    assert sorted(found) == ["rules.py", "siteconfig.py"]


def test_the_request_limits_have_one_default():
    limits = {f.name: f.default for f in dataclasses.fields(siteconfig.Limits)}
    assert limits == {"max_value_length": request.MAX_VALUE_LENGTH,
                      "max_items": request.MAX_ITEMS,
                      "manifest_max_bytes": request.MANIFEST_MAX_BYTES,
                      "manifest_max_items": request.MANIFEST_MAX_ITEMS}
    # and hookcore's fallbacks (a hook config without limits) are the same names
    assert hits(r"getattr\(limits, *\"\w+\", *[0-9]", skip=()) == []


def test_the_periodic_hook_and_the_installer_keep_no_fallback_of_their_own():
    """cycle_budget, alarm and serve are written into the hook config by the
    installer from siteconfig and the .HK file; a second default in the hook
    script or the install command would drift from them."""
    fallback = re.compile(r"\.get\(\s*[\"'](cycle_budget|alarm|freq|serve)[\"']\s*,")
    for path in [LIB / "data" / "hooks" / "globus_staging_periodic.py",
                 LIB / "commands" / "install.py"]:
        assert not fallback.search(path.read_text()), path.name
