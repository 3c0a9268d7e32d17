"""The agent's settings have one default each, in ``siteconfig.AgentSettings``:
the agent reads every setting through ``ctx.setting(name)`` (``Agent._agent``)
with no fallback of its own, and site.yaml's ``agent:`` accepts and keeps every one of them."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from pbs_globus_staging import siteconfig
from pbs_globus_staging.agent import Agent
from pbs_globus_staging.siteconfig import AgentSettings, from_dict

LIB = Path(siteconfig.__file__).resolve().parent
FIELDS = {f.name: f.default for f in dataclasses.fields(AgentSettings)}


AGENT_FILES = [LIB / "agent.py"] + sorted((LIB / "phases").glob("*.py"))


def agent_reads():
    """Every ``ctx.setting(...)`` / ``self._agent(...)`` call of the agent (agent.py
    and its phases): (file, node)."""
    calls = []
    for path in AGENT_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("_agent", "setting")):
                calls.append((path.name, node))
    return calls


def test_every_key_the_agent_reads_has_exactly_one_default():
    calls = agent_reads()
    assert len(calls) >= 15
    names = set()
    for fname, call in calls:
        where = f"{fname} line {call.lineno}"
        # a second argument would be a second default, free to drift from siteconfig's
        assert len(call.args) == 1 and not call.keywords, where
        assert isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str), where
        names.add(call.args[0].value)
    assert names <= set(FIELDS), names - set(FIELDS)
    # and every setting is read by the agent (none is validated and then ignored),
    # except what the installer writes into the periodic hook's config for the hook
    # itself: the interpreter, and whether it keeps a serving agent alive
    assert set(FIELDS) - names == {"python", "serve"}


def test_no_other_fallback_in_the_product():
    """The same defaults written a second time elsewhere, e.g. ``cycle_budget or 15``."""
    pattern = re.compile(r"\.agent\.(\w+)\s+or\s+[0-9]|(_agent|\.setting)\(\s*['\"]\w+['\"]\s*,")
    hits = [f"{p.name}: {m.group(0)}" for p in LIB.rglob("*.py")
            for m in pattern.finditer(p.read_text())]
    assert hits == []


class _NoAgentSection:
    credentials = None


class _Config:
    def __init__(self, agent):
        self.agent = agent


def make_agent(config):
    return Agent(config=config, journal=None, pbs=None, backend=None, clock=lambda: 0.0)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_agent_falls_back_to_the_table(name):
    assert make_agent(_NoAgentSection())._agent(name) == FIELDS[name]
    assert make_agent(siteconfig.default())._agent(name) == FIELDS[name]


def test_a_name_without_a_default_is_an_error():
    with pytest.raises(AttributeError):
        make_agent(siteconfig.default())._agent("poll_intervall")


OTHER = {"poll_interval": 5.0, "cycle_budget": 20.0, "orphan_grace": 60.0,
         "fatal_fault_window": 0.0, "stagein_failure": "delete", "stageout_when": "always",
         "stageout_retries": 0, "default_deadline": 3600.0, "max_tasks_per_identity": 7,
         "batch_window": 30.0, "batch_max_items": 5, "python": "/opt/py/bin/python3",
         "retry_delay": 0.0, "rescan_interval": 30.0, "slow_after": 120.0, "stage_ahead": 2,
         "api_rate": 2.5, "history_days": 1.5, "max_progress_comments": 0,
         "max_history_lookups": 9, "max_pending_tasks": 40, "serve": False,
         "poll_fast": 3.0}


def test_every_setting_is_kept_from_site_yaml():
    assert set(OTHER) == set(FIELDS)
    cfg = from_dict({"agent": OTHER}, source="site.yaml").agent
    for name, value in OTHER.items():
        assert value != FIELDS[name], name        # else the test would prove nothing
        assert getattr(cfg, name) == value, name
        assert make_agent(_Config(cfg))._agent(name) == value, name


@pytest.mark.parametrize("name,bad", [("max_progress_comments", -1),
                                      ("max_history_lookups", 0)])
def test_new_settings_are_validated(name, bad):
    with pytest.raises(Exception, match=rf"agent\.{name}: must be"):
        from_dict({"agent": {name: bad}}, source="site.yaml")


def test_standalone_budget_is_used_only_without_cycle_budget():
    seen = []

    class A(Agent):
        def full_pass(self):
            seen.append(self._run_deadline - self.stats.started)
            raise SystemExit  # stop after the budget is known

    class Journal:
        def start_cycle(self, now):
            return None

    class Pbs:
        calls = 0

    cases = ((siteconfig.default(), None, siteconfig.STANDALONE_CYCLE_BUDGET),
             (from_dict({"agent": {"cycle_budget": 8}}, source="s"), None, 8.0),
             (from_dict({"agent": {"cycle_budget": 8}}, source="s"), 4.0, 4.0))
    for cfg, budget, expected in cases:
        seen.clear()
        agent = A(config=cfg, journal=Journal(), pbs=Pbs(), backend=None, clock=lambda: 100.0)
        with pytest.raises(SystemExit):
            agent.run(budget=budget)
        assert seen == [expected - 1.0]
