"""The staging event kinds are defined once (events.py): every kind an alert rule
may be ``on`` is one the agent emits, every kind the agent emits is in the list,
docs/alerts.md lists exactly these, and a rule on any other word is refused."""
from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

from pbs_globus_staging import alerts, events
from pbs_globus_staging.alerts import StagingEvent, parse_rules
from pbs_globus_staging.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "lib" / "pbs_globus_staging"
AGENT_FILES = [LIB / "agent.py"] + sorted((LIB / "phases").glob("*.py"))
DIRECTIONS = ("in", "out")


def _assigns(path):
    found = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    found.setdefault(t.id, []).append(node.value)
    return found


DECIDE_ASSIGNS = _assigns(LIB / "decide" / "outcomes.py")


def _values(node, assigns):
    """The strings an expression of the agent can be (over-approximated)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _values(node.body, assigns) | _values(node.orelse, assigns)
    if isinstance(node, ast.Dict):
        return set().union(*(_values(v, assigns) for v in node.values))
    if isinstance(node, ast.Subscript):
        return _values(node.value, assigns)
    if isinstance(node, ast.Name) and node.id in assigns:
        return set().union(*(_values(v, assigns) for v in assigns[node.id]))
    if isinstance(node, ast.Attribute) and node.attr == "direction" or \
            isinstance(node, ast.Name) and node.id == "direction":
        return set(DIRECTIONS)
    if isinstance(node, ast.Attribute) and node.attr == "event_kind":
        # a decide verdict's kind: what decide/outcomes.py assigns to event_kind
        return set().union(*(_values(v, DECIDE_ASSIGNS) for v in DECIDE_ASSIGNS["event_kind"]))
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
            node.value.id in ("Kind", "History", "events"):
        # a vocabulary member (events.Kind.X, events.History.X) or a by-direction
        # table (events.FAILED[direction]): the words it can be
        base = events if node.value.id == "events" else getattr(events, node.value.id)
        obj = getattr(base, node.attr)
        return {str(v) for v in (obj.values() if isinstance(obj, dict) else [obj])}
    if isinstance(node, ast.FormattedValue):
        return _values(node.value, assigns)
    if isinstance(node, ast.JoinedStr):
        parts = [_values(v, assigns) for v in node.values]
        return {"".join(p) for p in itertools.product(*parts)}
    raise AssertionError(f"agent.py line {node.lineno}: cannot tell which event kind "
                         f"{ast.dump(node)[:80]} is")


def emitted_kinds():
    """(exact, possible): kinds the agent (agent.py and its phases) passes to
    ``ctx.alert`` as literals or direction f-strings; and those plus what a
    variable first argument may hold."""
    exact, possible = set(), set()
    for path in AGENT_FILES:
        _emitted(ast.parse(path.read_text()), exact, possible)
    return exact, possible


def _emitted(tree, exact, possible):
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        assigns = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        assigns.setdefault(t.id, []).append(node.value)
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("_alert", "alert") and node.args):
                kinds = _values(node.args[0], assigns)
                possible |= kinds
                if not isinstance(node.args[0], ast.Name):
                    exact |= kinds


def test_every_kind_a_rule_can_be_on_is_emitted():
    """Issue 13: `stagein_progress` was a documented trigger nothing emitted."""
    _, possible = emitted_kinds()
    on_accepts = {r for r in alerts.EVENT_KINDS} | set(events.KINDS)   # what `on:` takes
    never = sorted(k for k in on_accepts if k not in possible)
    assert never == []


def test_every_kind_the_agent_emits_is_in_the_list():
    exact, _ = emitted_kinds()
    assert len(exact) >= 8
    assert exact <= set(events.KINDS), exact - set(events.KINDS)


def test_alerts_uses_the_one_list():
    assert alerts.EVENT_KINDS is events.KINDS and alerts.SITE_KINDS is events.SITE_KINDS
    assert set(alerts._KIND_TEXT) == set(events.KINDS)
    assert events.SITE_KINDS <= set(events.KINDS)
    assert len(set(events.KINDS)) == len(events.KINDS)


def test_docs_list_exactly_the_kinds():
    text = (REPO / "docs" / "alerts.md").read_text()
    table = text.split("## Events", 1)[1].split("\n\n", 2)[1]
    documented = set()
    for row in table.splitlines()[2:]:
        documented |= set(re.findall(r"`([a-z_]+)`", row.split("|")[1]))
    assert documented == set(events.KINDS)


@pytest.mark.parametrize("word", ["stagein_progress", "stagein_exploded", "Slow", "progress"])
def test_rule_on_unknown_kind_is_refused_with_the_list(word):
    with pytest.raises(ConfigError) as ei:
        parse_rules({"rules": [{"name": "x", "on": [word], "do": ["log"]}]},
                    source="site.yaml")
    text = str(ei.value)
    assert "\n" not in text
    assert text.startswith(f"site.yaml: alerts.rules[0] (x).on: {word!r} is not an event kind")
    assert "expected one of: " + ", ".join(events.KINDS) + ", or all" in text


def test_an_event_of_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown staging event kind 'stagein_progress'"):
        StagingEvent(kind="stagein_progress", job_id="1.pbs")


def test_every_kind_is_accepted_and_all_means_all():
    for kind in events.KINDS:
        cfg = parse_rules({"rules": [{"name": "x", "on": [kind], "do": ["log"]}]}, source="s")
        assert cfg.rules[0].on == {kind}
    cfg = parse_rules({"rules": [{"name": "x", "on": "all", "do": ["log"]}]}, source="s")
    assert cfg.rules[0].on == set(events.KINDS)
