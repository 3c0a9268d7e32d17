"""The journal speaks the vocabulary of states.py: its CHECK constraints are
generated from the enums (schema v4), a v3 journal written by the previous
release migrates with all its rows, and every request-state write goes
through the transition table."""
from __future__ import annotations

import re
import sqlite3

import pytest

from pbs_globus_staging import journal
from pbs_globus_staging.journal import Journal, JournalError
from pbs_globus_staging.states import (REQUEST_TRANSITIONS, Direction, IllegalTransition, Item,
                                       Request, Transfer)

# The v3 schema as released: the three tables v4 rebuilds, written out by hand
# (not taken from journal.py), with the v2 indexes and columns.
V3_BY_HAND = """
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, owner TEXT NOT NULL, queue TEXT, array_parent TEXT,
  priority INTEGER, qtime REAL, first_seen REAL, last_seen REAL, gone_since REAL,
  exit_status INTEGER, obit_time REAL, stage_state TEXT, comment TEXT);
CREATE TABLE requests (request_id INTEGER PRIMARY KEY, job_id TEXT NOT NULL,
  direction TEXT NOT NULL CHECK (direction IN ('in', 'out')), owner TEXT NOT NULL,
  identity TEXT NOT NULL, raw TEXT NOT NULL, normalized TEXT NOT NULL, request_key TEXT NOT NULL,
  state TEXT NOT NULL, message TEXT, action TEXT, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt REAL, created REAL, updated REAL, UNIQUE (job_id, direction));
CREATE TABLE transfers (transfer_id INTEGER PRIMARY KEY, identity TEXT NOT NULL,
  direction TEXT CHECK (direction IN ('in', 'out')), source_collection TEXT,
  destination_collection TEXT, options TEXT, label TEXT, deadline TEXT,
  submission_id TEXT UNIQUE, task_id TEXT UNIQUE, grafted INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL CHECK (status IN ('new', 'submitting', 'active', 'inactive',
  'succeeded', 'failed', 'canceled')), nice_status TEXT, files INTEGER,
  files_transferred INTEGER, files_skipped INTEGER, bytes_transferred INTEGER,
  bytes_per_second REAL, faults INTEGER, fault_since REAL, fatal_code TEXT, message TEXT,
  created REAL, submitted REAL, completed REAL, last_polled REAL, last_progress REAL,
  orphaned_since REAL, cancel_requested REAL);
CREATE TABLE transfer_items (item_id INTEGER PRIMARY KEY,
  transfer_id INTEGER NOT NULL REFERENCES transfers (transfer_id),
  request_id INTEGER REFERENCES requests (request_id), source_path TEXT NOT NULL,
  destination_path TEXT NOT NULL, recursive INTEGER NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT 'pending' CHECK (outcome IN ('pending', 'succeeded', 'failed')),
  message TEXT);
CREATE TABLE events (event_id INTEGER PRIMARY KEY, time REAL NOT NULL, job_id TEXT,
  request_id INTEGER, transfer_id INTEGER, kind TEXT NOT NULL, message TEXT, data TEXT);
CREATE INDEX events_job ON events (job_id);
CREATE TABLE obits (job_id TEXT PRIMARY KEY, exit_status INTEGER, time REAL,
  owner TEXT, project TEXT, stageout TEXT);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE alerts (rule TEXT NOT NULL, key TEXT NOT NULL, first_sent REAL, last_sent REAL,
  count INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (rule, key));
CREATE TABLE cycles (cycle_id INTEGER PRIMARY KEY, started REAL NOT NULL, finished REAL,
  ok INTEGER, error TEXT, globus_calls INTEGER, pbs_calls INTEGER, cpu_seconds REAL,
  jobs INTEGER, transfers INTEGER);
CREATE INDEX transfers_status ON transfers (status, identity);
CREATE INDEX requests_state ON requests (state, direction);
CREATE INDEX requests_key ON requests (request_key);
CREATE INDEX items_transfer ON transfer_items (transfer_id);
CREATE INDEX items_request ON transfer_items (request_id);
CREATE INDEX events_time ON events (time);
CREATE INDEX jobs_gone ON jobs (gone_since);
PRAGMA application_id = 1346851658;
PRAGMA user_version = 3;
"""
STATES = ("waiting-exit", "pending", "queued", "active", "user-action", "succeeded",
          "failed", "skipped", "canceled")
STATUSES = ("new", "submitting", "active", "inactive", "succeeded", "failed", "canceled")


def _make_v3(path):
    con = sqlite3.connect(path)
    con.executescript(V3_BY_HAND)
    for n, state in enumerate(STATES, 1):
        direction = "out" if state in ("waiting-exit", "skipped") else "in"
        con.execute("INSERT INTO jobs (job_id, owner) VALUES (?, 'bob')", (f"{n}.srv",))
        con.execute("INSERT INTO requests (request_id, job_id, direction, owner, identity, raw,"
                    " normalized, request_key, state, message, action, attempts, next_attempt,"
                    " created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (n * 10, f"{n}.srv", direction, "bob", "bob", f"raw{n}", f"norm{n}",
                     f"key{n}", state, f"msg{n}", "act" if state == "user-action" else None,
                     n, 100.0 + n, 1.0, 2.0))
    for n, status in enumerate(STATUSES, 1):
        con.execute("INSERT INTO transfers (transfer_id, identity, direction, submission_id,"
                    " task_id, status, options, grafted, bytes_transferred, orphaned_since,"
                    " cancel_requested, completed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (n * 7, "bob", "in", f"sub{n}", f"task{n}" if n > 2 else None, status,
                     '{"sync_level":"checksum"}', n % 2, n * 1000, 5.0 if n == 4 else None,
                     6.0 if n == 7 else None, 9.0 if n > 4 else None))
        con.execute("INSERT INTO transfer_items (item_id, transfer_id, request_id, source_path,"
                    " destination_path, recursive, outcome, message) VALUES (?,?,?,?,?,?,?,?)",
                    (n * 3, n * 7, 10 * (1 + n % len(STATES)), f"/src{n}", f"/dst{n}", n % 2,
                     ("pending", "succeeded", "failed")[n % 3], f"item{n}"))
    con.execute("INSERT INTO events (time, job_id, kind, message) VALUES (1.0, '1.srv', 'seen', 'x')")
    con.commit()
    before = {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
              for t in ("jobs", "requests", "transfers", "transfer_items", "events")}
    con.close()
    return before


def test_v3_journal_migrates_with_every_row(tmp_path):
    path = tmp_path / "j.db"
    before = _make_v3(path)
    with Journal.open(path) as jr:
        assert jr.schema_version == journal.SCHEMA_VERSION == 4
        assert jr.integrity_check() == []
        assert [r.state for r in jr.requests()] == list(STATES)
        assert jr.get_transfer(14).status == "new"           # "submitting" was never written
        assert jr.get_transfer(28).orphaned_since == 5.0
        assert jr.get_transfer(49).cancel_requested == 6.0
        assert jr.get_transfer(7).options == {"sync_level": "checksum"}
        assert jr.items_for_transfer(28)[0].outcome == "succeeded"
        assert jr.request_satisfied(10 * (1 + 5 % len(STATES))) is False
    con = sqlite3.connect(path)
    after = {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in before}
    indexes = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                         " AND name NOT LIKE 'sqlite_%'")}
    temp = con.execute("SELECT count(*) FROM sqlite_temp_master").fetchone()[0]
    con.close()
    expected = dict(before)
    expected["transfers"] = [r[:11] + ("new",) + r[12:] if r[11] == "submitting" else r
                             for r in before["transfers"]]
    assert after == expected
    assert indexes == {"transfers_status", "requests_state", "requests_key", "items_transfer",
                       "items_request", "events_time", "jobs_gone", "events_job"}
    assert temp == 0


def test_migration_of_a_bad_word_rolls_back_whole(tmp_path):
    """A request state no release wrote: the file stays a readable v3, the
    error names the file."""
    path = tmp_path / "j.db"
    _make_v3(path)
    con = sqlite3.connect(path)
    con.execute("UPDATE requests SET state = 'staging-in' WHERE request_id = 10")
    con.commit()
    con.close()
    with pytest.raises(JournalError, match=str(path)):
        Journal.open(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 3
    assert con.execute("SELECT count(*) FROM requests").fetchone()[0] == len(STATES)
    con.close()


def _checks(path):
    con = sqlite3.connect(path)
    sql = {name: text for name, text in con.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table'")}
    con.close()
    found = {}
    for table in ("requests", "transfers", "transfer_items"):
        for col, words in re.findall(r"CHECK \((\w+) IN \(([^)]*)\)\)", sql[table]):
            found[(table, col)] = tuple(w.strip().strip("'") for w in words.split(","))
    return found


def test_check_constraints_are_the_enums(tmp_path):
    """Adding a word to one of these enums needs a migration: this fails until
    the live schema says the same as states.py."""
    Journal.open(tmp_path / "j.db").close()
    assert _checks(tmp_path / "j.db") == {
        ("requests", "direction"): Direction.values(),
        ("requests", "state"): Request.values(),
        ("transfers", "direction"): Direction.values(),
        ("transfers", "status"): Transfer.values(),
        ("transfer_items", "outcome"): Item.values(),
    }


@pytest.fixture
def jr(tmp_path):
    with Journal.open(tmp_path / "j.db") as j:
        yield j


def _request(jr, state="pending", job="1.srv", direction="in"):
    return jr.add_request(job_id=job, direction=direction, owner="bob", identity="bob",
                          raw="r", normalized="n", request_key="k", state=state, now=1.0)


def test_sqlite_refuses_a_word_outside_the_vocabulary(jr):
    rid = _request(jr)
    with pytest.raises(JournalError, match="CHECK"):
        with jr.transaction():
            jr._exec("UPDATE requests SET state = 'staging-in' WHERE request_id = ?", (rid,))
    assert jr.get_request(rid).state == "pending"


@pytest.mark.parametrize("old", list(Request))
def test_every_allowed_move_is_written_and_every_other_refused(jr, old):
    for new in Request:
        rid = _request(jr, job=f"{old}-{new}.srv")
        with jr.transaction():            # put it in `old` without the check
            jr._exec("UPDATE requests SET state = ? WHERE request_id = ?", (old, rid))
        if new == old or new in REQUEST_TRANSITIONS[old]:
            jr.set_request_state(rid, new, message="m", now=2.0)
            assert jr.get_request(rid).state == new
        else:
            with pytest.raises(IllegalTransition, match=f"request {rid}: .*{old} to {new}"):
                jr.set_request_state(rid, new, message="m", now=2.0)
            row = jr.get_request(rid)
            assert row.state == old and row.message is None
            with pytest.raises(IllegalTransition):
                jr.update_request(rid, state=new)


def test_illegal_move_rolls_back_the_enclosing_transaction_part(jr):
    rid = _request(jr, state="waiting-exit", direction="out")
    with pytest.raises(IllegalTransition):
        with jr.transaction():
            jr.add_event("1.srv", "seen", "x")
            jr.set_request_state(rid, Request.ACTIVE)
    assert jr.events("1.srv") == [] and jr.get_request(rid).state == "waiting-exit"


def test_a_request_starts_only_in_an_initial_state(jr):
    with pytest.raises(IllegalTransition):
        _request(jr, state="active")
    with pytest.raises(IllegalTransition):
        _request(jr, state="staging-in")
    assert jr.requests() == []
    assert jr.get_request(_request(jr, state=Request.FAILED)).state == "failed"


def test_unknown_request_is_still_a_key_error(jr):
    with pytest.raises(KeyError):
        jr.set_request_state(999, Request.PENDING)
