"""The vocabularies of states.py and events.py: each member is its word
(byte-identical in str(), format(), f-strings, %, JSON, SQLite, on every Python
the project supports), and the request transition table is what it says."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pbs_globus_staging import events, states
from pbs_globus_staging.states import (REQUEST_INITIAL, REQUEST_TRANSITIONS, Direction,
                                       GlobusStatus, IllegalTransition, Item, JobMark, Outcome,
                                       Request, Stage, Transfer, check_transition)

VOCABULARIES = (Stage, JobMark, Request, Transfer, Item, Direction, GlobusStatus, Outcome,
                events.Kind, events.History)
LIB = Path(__file__).resolve().parents[2] / "lib"


@pytest.mark.parametrize("vocab", VOCABULARIES, ids=lambda v: v.__name__)
def test_members_are_their_words(vocab):
    for m in vocab:
        word = m.value
        assert type(word) is str
        assert m == word and hash(m) == hash(word)
        assert str(m) == word and type(str(m)) is str
        assert f"{m}" == word and format(m, "") == word and "%s" % m == word
        assert f"{m:>20}" == f"{word:>20}"
        assert json.dumps({m: [m]}) == json.dumps({word: [word]})
        assert vocab(word) is m
    assert len(set(vocab.values())) == len(vocab)


def test_sqlite_stores_the_plain_word():
    conn = sqlite3.connect(":memory:")
    row = conn.execute("SELECT ?, typeof(?), ? = 'staging-in'",
                       (Stage.STAGING_IN, Stage.STAGING_IN, Stage.STAGING_IN)).fetchone()
    assert row == ("staging-in", "text", 1)


def test_old_pythons_format_the_same():
    """The str-mixin enum's own __format__ differs across 3.6..3.13; ours does not."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]);"
            "from pbs_globus_staging import states, events;"
            "vs=[states.Stage, states.Request, states.Transfer, states.Item, states.Direction,"
            " states.GlobusStatus, states.Outcome, states.JobMark, events.Kind, events.History];"
            "print(json.dumps([[str(m), format(m), '{}'.format(m), '%s' % m] for v in vs for m in v]))")
    expected = [[m.value] * 4 for v in (Stage, Request, Transfer, Item, Direction, GlobusStatus,
                                        Outcome, JobMark, events.Kind, events.History) for m in v]
    pythons = [p for p in (Path.home() / ".pyenv" / "versions").glob("3.*/bin/python")]
    if not pythons:
        pytest.skip("no other Python installed")
    for py in sorted(pythons):
        out = subprocess.run([str(py), "-I", "-S", "-c", code, str(LIB)], capture_output=True,
                             text=True, check=True).stdout
        assert json.loads(out) == expected, py


def test_no_module_level_aliases():
    """One name per word: the stage words are Stage.X only."""
    assert not hasattr(states, "WAITING") and not hasattr(states, "STAGED_IN")
    assert not hasattr(events, "USER_ACTION")


def test_user_action_is_two_names_and_one_kind():
    assert Stage.USER_ACTION is not Request.USER_ACTION
    assert events.Kind.USER_ACTION == "user_action"


def test_kinds_are_derived_from_the_enum():
    assert events.KINDS == tuple(events.Kind)
    assert events.SITE_KINDS <= set(events.KINDS)
    assert not set(events.Kind.values()) & set(events.History.values())
    for table in (events.REQUESTED, events.SUBMITTED, events.SUCCEEDED, events.FAILED,
                  events.DEFERRED, events.GRAFTED, events.ADOPTED, events.RESUMED,
                  events.ACTIVE):
        assert set(table) == set(Direction)
        assert table[Direction.IN].startswith("stagein_")
        assert table["out"].startswith("stageout_")


def test_transition_table_covers_every_state():
    assert set(REQUEST_TRANSITIONS) == set(Request)
    for old, targets in REQUEST_TRANSITIONS.items():
        assert old not in targets          # staying is always allowed, never listed
        assert targets <= set(Request)
    assert REQUEST_TRANSITIONS[Request.SUCCEEDED] == frozenset()


def test_check_transition():
    assert check_transition("pending", "queued") is Request.QUEUED
    assert check_transition(Request.ACTIVE, Request.ACTIVE) is Request.ACTIVE
    assert check_transition(None, "waiting-exit") is Request.WAITING_EXIT
    for old, new in (("succeeded", "pending"), ("skipped", "active"), ("queued", "waiting-exit"),
                     (None, "active"), ("pending", "bogus"), ("bogus", "pending")):
        with pytest.raises(IllegalTransition):
            check_transition(old, new)
    assert issubclass(IllegalTransition, ValueError)


def test_every_state_reachable_from_an_initial_one():
    seen, todo = set(REQUEST_INITIAL), list(REQUEST_INITIAL)
    while todo:
        for nxt in REQUEST_TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(Request)


def test_internals_doc_table_is_the_transition_table():
    """docs/internals.md's "Allowed moves" table says what REQUEST_TRANSITIONS says."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "internals.md").read_text()
    table = text.split("Allowed moves (from `REQUEST_TRANSITIONS`):", 1)[1].split("\n\n")[1]
    by_name = {m.name: m for m in Request}
    documented = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        targets = {by_name[w] for w in re.findall(r"\b[A-Z_]{4,}\b", cells[1])}
        key = None if cells[0] == "(new)" else by_name[cells[0]]
        documented[key] = frozenset(targets)
    assert documented.pop(None) == REQUEST_INITIAL
    assert documented == REQUEST_TRANSITIONS
