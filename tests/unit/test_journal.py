"""The journal on real SQLite files, in this process: CRUD, constraints,
schema migration, error mapping, durability wiring, pruning.

Multi-process behaviour (concurrency, kill -9, lock timeouts) is in
test_journal_procs.py.
"""
from __future__ import annotations

import errno
import hashlib
import os
import sqlite3
import time

import pytest

from pbs_globus_staging import errors, journal
from pbs_globus_staging.journal import (ConflictError, ItemSpec, Journal, JournalError,
                                        SchemaError)

T0 = 1_800_000_000.0
DAY = 86400.0


@pytest.fixture
def jpath(tmp_path):
    return tmp_path / "state" / "journal.db"


@pytest.fixture
def j(jpath):
    jr = Journal.open(jpath)
    yield jr
    jr.close()


def _request(j, job_id="1.srv", direction="in", **kw):
    args = dict(job_id=job_id, direction=direction, owner="alice", identity="alice",
                raw="/lus/in/@dtn:/data/", normalized="/lus/in/@dtn:/data/",
                request_key="key-" + job_id, state="pending", now=T0)
    args.update(kw)
    return j.add_request(**args)


def _transfer(j, **kw):
    args = dict(identity="alice", direction="in", source_collection="src",
                destination_collection="dst", now=T0)
    args.update(kw)
    return j.create_transfer(**args)


# -- opening, files, modes -------------------------------------------------------


def test_open_creates_private_dir_and_files_in_wal_mode(tmp_path):
    path = tmp_path / "a" / "b" / "journal.db"
    old = os.umask(0o022)
    try:
        with Journal.open(path) as jr:
            jr.add_event(None, "hello")
            assert jr.schema_version == journal.SCHEMA_VERSION
            assert jr._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert jr._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert jr._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
            assert jr._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
            for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
                assert (path.parent / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700


def test_existing_parent_directory_mode_is_left_alone(tmp_path):
    tmp_path.chmod(0o755)
    Journal.open(tmp_path / "j.db").close()
    assert tmp_path.stat().st_mode & 0o777 == 0o755


def test_reopen_keeps_data(jpath):
    with Journal.open(jpath) as a:
        a.set_meta("k", "v")
    with Journal.open(jpath) as b:
        assert b.get_meta("k") == "v"
        assert b.get_meta("missing", "dflt") == "dflt"


def test_parent_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "plain").write_text("x")
    with pytest.raises(JournalError) as info:
        Journal.open(tmp_path / "plain" / "j.db")
    assert str(tmp_path / "plain") in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_timeout_is_refused(jpath):
    with pytest.raises(ValueError, match="timeout"):
        Journal.open(jpath, timeout=-1)


def test_readonly_reads_and_refuses_writes(jpath):
    with Journal.open(jpath) as w:
        w.upsert_job("1.srv", owner="alice", now=T0)
    with Journal.open(jpath, readonly=True) as ro:
        assert ro.get_job("1.srv").owner == "alice"
        with pytest.raises(JournalError, match="read-only"):
            ro.add_event("1.srv", "x")
        with pytest.raises(JournalError, match="read-only"):
            with ro.transaction():
                pass


def test_readonly_never_creates_a_journal(tmp_path):
    path = tmp_path / "nothing" / "j.db"
    with pytest.raises(JournalError, match="no journal at"):
        Journal.open(path, readonly=True)
    assert not path.parent.exists()


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "j.db"
    path.write_bytes(b"this is not sqlite\n" * 100)
    with pytest.raises(JournalError) as info:
        Journal.open(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == b"this is not sqlite\n" * 100


def test_foreign_sqlite_file_is_not_adopted(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE foo (x)")
    con.commit()
    con.close()
    with pytest.raises(SchemaError, match="not a pbs-globus-staging journal"):
        Journal.open(path)
    con = sqlite3.connect(path)
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["foo"]
    con.close()


# -- migrations -------------------------------------------------------------------

# The v1 schema as released, written out by hand (not taken from journal.py),
# so the test proves a real old file migrates.
V1_BY_HAND = """
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
  created REAL, submitted REAL, completed REAL, last_polled REAL, last_progress REAL);
CREATE TABLE transfer_items (item_id INTEGER PRIMARY KEY,
  transfer_id INTEGER NOT NULL REFERENCES transfers (transfer_id),
  request_id INTEGER REFERENCES requests (request_id), source_path TEXT NOT NULL,
  destination_path TEXT NOT NULL, recursive INTEGER NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT 'pending' CHECK (outcome IN ('pending', 'succeeded', 'failed')),
  message TEXT);
CREATE TABLE events (event_id INTEGER PRIMARY KEY, time REAL NOT NULL, job_id TEXT,
  request_id INTEGER, transfer_id INTEGER, kind TEXT NOT NULL, message TEXT, data TEXT);
CREATE INDEX events_job ON events (job_id);
CREATE TABLE obits (job_id TEXT PRIMARY KEY, exit_status INTEGER, time REAL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
INSERT INTO jobs (job_id, owner, first_seen) VALUES ('7.srv', 'bob', 1.0);
INSERT INTO requests (job_id, direction, owner, identity, raw, normalized, request_key, state)
  VALUES ('7.srv', 'in', 'bob', 'bob', 'r', 'n', 'k', 'active');
INSERT INTO transfers (identity, direction, submission_id, task_id, status)
  VALUES ('bob', 'in', 'sub-7', 'task-7', 'active');
INSERT INTO transfer_items (transfer_id, request_id, source_path, destination_path)
  VALUES (1, 1, '/a', '/b');
PRAGMA application_id = 1346851658;
PRAGMA user_version = 1;
"""


def _make_v1(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    con.executescript(V1_BY_HAND)
    con.close()


def test_v1_file_is_migrated_and_keeps_its_data(jpath):
    _make_v1(jpath)
    with Journal.open(jpath) as jr:
        assert jr.schema_version == journal.SCHEMA_VERSION == 4
        t = jr.transfer_by_task_id("task-7")
        assert t.submission_id == "sub-7" and t.status == "active"
        assert t.orphaned_since is None and t.cancel_requested is None
        jr.update_transfer(t.transfer_id, orphaned_since=5.0, cancel_requested=6.0)
        assert jr.get_transfer(t.transfer_id).cancel_requested == 6.0
        assert jr.requests_for_job("7.srv")[0].state == "active"
        assert [i.source_path for i in jr.items_for_request(1)] == ["/a"]
        assert jr.mark_alert("stuck", "7.srv", at=10.0).count == 1
        cid = jr.start_cycle(now=1.0)
        jr.finish_cycle(cid, ok=True, jobs=3, now=2.0)
        assert jr.last_cycles(1)[0].jobs == 3
        assert jr._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert jr.integrity_check() == []
    # A second open has nothing to do.
    with Journal.open(jpath) as jr:
        assert jr.schema_version == 4


def test_readonly_open_of_old_file_says_to_migrate(jpath):
    _make_v1(jpath)
    with pytest.raises(SchemaError, match="older"):
        Journal.open(jpath, readonly=True)


def test_failing_migration_rolls_back_whole(jpath, monkeypatch):
    Journal.open(jpath).close()
    bad = ("CREATE TABLE newthing (x)", "ALTER TABLE nosuchtable ADD COLUMN y")
    current = journal.SCHEMA_VERSION
    monkeypatch.setattr(journal.schema, "MIGRATIONS", journal.MIGRATIONS + (bad,))
    monkeypatch.setattr(journal.schema, "SCHEMA_VERSION", current + 1)
    with pytest.raises(JournalError, match="nosuchtable"):
        Journal.open(jpath)
    con = sqlite3.connect(jpath)
    assert con.execute("PRAGMA user_version").fetchone()[0] == current
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    assert "newthing" not in names


def test_file_from_a_newer_version_is_refused_untouched(jpath):
    with Journal.open(jpath) as jr:
        jr.set_meta("x", "1")
        jr._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con = sqlite3.connect(jpath)
    con.execute(f"PRAGMA user_version = {journal.SCHEMA_VERSION + 1}")
    con.close()
    before = hashlib.sha256(jpath.read_bytes()).hexdigest()
    for ro in (False, True):
        with pytest.raises(SchemaError) as info:
            Journal.open(jpath, readonly=ro)
        assert "newer" in str(info.value) and str(jpath) in str(info.value)
    assert hashlib.sha256(jpath.read_bytes()).hexdigest() == before


# -- jobs ------------------------------------------------------------------------------


def test_upsert_job_keeps_fields_not_given_and_tracks_seen(j):
    j.upsert_job("1.srv", owner="alice", queue="workq", priority=5, stage_state="waiting", now=T0)
    j.upsert_job("1.srv", owner="alice", stage_state="staging-in", now=T0 + 10)
    row = j.get_job("1.srv")
    assert (row.queue, row.priority, row.stage_state) == ("workq", 5, "staging-in")
    assert (row.first_seen, row.last_seen, row.gone_since) == (T0, T0 + 10, None)
    assert j.mark_gone("1.srv", now=T0 + 20) == 1
    assert j.mark_gone("1.srv", now=T0 + 30) == 1
    assert j.get_job("1.srv").gone_since == T0 + 20      # first time kept
    assert [x.job_id for x in j.jobs(present=False)] == ["1.srv"]
    assert j.mark_job_seen(["1.srv", "unknown.srv"], now=T0 + 40) == 1
    row = j.get_job("1.srv")
    assert (row.last_seen, row.gone_since) == (T0 + 40, None)
    assert j.get_job("unknown.srv") is None


def test_upsert_job_validates(j):
    with pytest.raises(ValueError, match="owner"):
        j.upsert_jobs([{"job_id": "1.srv"}])
    with pytest.raises(ValueError, match="unknown job field"):
        j.upsert_jobs([{"job_id": "1.srv", "owner": "a", "colour": "red"}])
    assert j.jobs() == []


def test_jobs_filters(j):
    j.upsert_jobs([
        {"job_id": "1.srv", "owner": "alice", "stage_state": "waiting"},
        {"job_id": "2.srv", "owner": "bob", "stage_state": "staged-in"},
        {"job_id": "3[1].srv", "owner": "alice", "array_parent": "3[].srv",
         "stage_state": "staged-in"},
    ], now=T0)
    assert [x.job_id for x in j.jobs(owner="alice")] == ["1.srv", "3[1].srv"]
    assert [x.job_id for x in j.jobs(stage_state=["waiting", "staged-in"], owner="bob")] == ["2.srv"]
    assert [x.job_id for x in j.jobs(array_parent="3[].srv")] == ["3[1].srv"]
    assert [x.job_id for x in j.jobs(job_ids=["2.srv", "9.srv"])] == ["2.srv"]
    assert j.jobs(job_ids=[]) == []


def test_ten_thousand_jobs_batch(j):
    rows = [{"job_id": f"{i}.srv", "owner": "u%d" % (i % 50), "queue": "workq"}
            for i in range(10_000)]
    t = time.perf_counter()
    assert j.upsert_jobs(rows, now=T0) == 10_000
    assert j.mark_job_seen([r["job_id"] for r in rows], now=T0 + 1) == 10_000
    elapsed = time.perf_counter() - t
    assert elapsed < 2.0, elapsed      # ~0.1 s here; see bench/bench_journal.py
    assert len(j.jobs(job_ids=[r["job_id"] for r in rows[:1500]])) == 1500
    assert j.get_job("9999.srv").last_seen == T0 + 1


# -- requests -------------------------------------------------------------------------


def test_one_request_per_job_and_direction(j):
    rid = _request(j)
    assert _request(j, raw="something else") == rid       # idempotent, unchanged
    assert j.get_request(rid).raw == "/lus/in/@dtn:/data/"
    out = _request(j, direction="out")
    assert out != rid
    assert [r.direction for r in j.requests_for_job("1.srv")] == ["in", "out"]
    with pytest.raises(sqlite3.IntegrityError):   # the schema itself forbids a second one
        j._conn.execute(
            "INSERT INTO requests (job_id, direction, owner, identity, raw, normalized,"
            " request_key, state) VALUES ('1.srv', 'in', 'a', 'a', 'r', 'n', 'k', 'pending')")
    with pytest.raises(ValueError, match="direction"):
        _request(j, direction="sideways")


def test_request_state_filters_and_attempts(j):
    a = _request(j, "1.srv", request_key="same")
    b = _request(j, "2.srv", request_key="same")
    c = _request(j, "3.srv", direction="out")
    j.set_request_state(a, "active", message="task abc", now=T0 + 1)
    j.set_request_state(b, "pending", message="globus busy", next_attempt=T0 + 60,
                        count_attempt=True, now=T0 + 1)
    j.set_request_state(b, "pending", next_attempt=T0 + 120, count_attempt=True, now=T0 + 2)
    rb = j.get_request(b)
    assert (rb.attempts, rb.next_attempt, rb.message, rb.updated) == (2, T0 + 120, None, T0 + 2)
    assert [r.request_id for r in j.requests(state="pending")] == [b, c]
    assert [r.request_id for r in j.requests(state="pending", due=T0 + 100)] == [c]
    assert [r.request_id for r in j.requests(direction="out")] == [c]
    assert [r.request_id for r in j.find_requests_by_key("same")] == [a, b]
    j.update_request(a, raw="new", normalized="new", request_key="k2")
    assert j.get_request(a).request_key == "k2"
    with pytest.raises(ValueError, match="job_id"):
        j.update_request(a, job_id="9.srv")
    with pytest.raises(KeyError):
        j.set_request_state(999, "x")


# -- transfers ------------------------------------------------------------------------


def test_transfer_with_items_serving_two_jobs(j):
    r1, r2 = _request(j, "1.srv"), _request(j, "2.srv")
    tid = _transfer(j, options={"sync_level": "checksum"}, label="stage-in",
                    items=[ItemSpec(r1, "/src/a", "/dst/a"),
                           {"request_id": r2, "source_path": "/src/b/", "destination_path": "/dst/b/",
                            "recursive": True}])
    t = j.get_transfer(tid)
    assert t.status == "new" and t.options == {"sync_level": "checksum"} and not t.finished
    items = j.items_for_transfer(tid)
    assert [(i.request_id, i.recursive, i.outcome) for i in items] == [
        (r1, False, "pending"), (r2, True, "pending")]
    assert [x.transfer_id for x in j.transfers_for_request(r2)] == [tid]

    j.set_submission_id(tid, "sub-1")
    j.set_task_id(tid, "task-1", now=T0 + 5)
    j.update_transfer(tid, status="active", files=2, bytes_transferred=10, last_polled=T0 + 6)
    assert j.transfer_by_task_id("task-1").transfer_id == tid
    assert j.transfer_by_submission_id("sub-1").submitted == T0 + 5
    assert [x.transfer_id for x in j.transfers(status=("active", "inactive"), identity="alice")] == [tid]
    assert j.transfers(status="active", identity="bob") == []

    j.update_transfer(tid, status="succeeded", now=T0 + 100)
    assert j.get_transfer(tid).completed == T0 + 100 and j.get_transfer(tid).finished
    assert j.set_transfer_outcome(tid, "succeeded") == 2
    assert j.request_satisfied(r1) is True


def test_submission_and_task_ids_are_unique_and_immutable(j):
    a = _transfer(j, submission_id="sub-A")
    b = _transfer(j)
    with pytest.raises(ConflictError, match="sub-A"):
        _transfer(j, submission_id="sub-A")
    with pytest.raises(ConflictError, match="already belongs to transfer"):
        j.set_submission_id(b, "sub-A")
    j.set_submission_id(a, "sub-A")                       # same again: fine
    with pytest.raises(ConflictError, match="never changes"):
        j.set_submission_id(a, "sub-B")
    j.set_task_id(a, "task-A")
    with pytest.raises(ConflictError):
        j.set_task_id(b, "task-A")
    with pytest.raises(ConflictError):
        _transfer(j, task_id="task-A")
    with pytest.raises(ValueError, match="submission_id"):
        j.update_transfer(b, submission_id="sub-C")
    # Even bypassing the methods, the schema holds the line.
    with pytest.raises(sqlite3.IntegrityError):
        j._conn.execute("UPDATE transfers SET task_id = 'task-A' WHERE transfer_id = ?", (b,))
    assert j.get_transfer(b).submission_id is None and j.get_transfer(b).task_id is None
    assert len(j.transfers()) == 2


def test_failed_create_transfer_leaves_nothing(j):
    r = _request(j)
    with pytest.raises(ValueError, match="destination_path"):
        _transfer(j, submission_id="s", items=[ItemSpec(r, "/a", "/b"), {"source_path": "/x"}])
    with pytest.raises(JournalError):   # item for a request that does not exist (foreign key)
        _transfer(j, submission_id="s", items=[ItemSpec(r, "/a", "/b"), ItemSpec(999, "/c", "/d")])
    assert j.transfers() == [] and j.items_for_request(r) == []


def test_transfer_field_validation(j):
    tid = _transfer(j)
    with pytest.raises(ValueError, match="status must be one of"):
        j.update_transfer(tid, status="ACTIVE")
    with pytest.raises(ValueError, match="cannot update transfer column"):
        j.update_transfer(tid, identity="mallory")
    with pytest.raises(KeyError):
        j.update_transfer(12345, status="active")
    with pytest.raises(ValueError, match="outcome"):
        j.set_transfer_outcome(tid, "done")


def test_request_satisfied_over_several_transfers(j):
    r = _request(j)
    assert j.request_satisfied(r) is None                   # nothing yet
    t1 = _transfer(j, items=[ItemSpec(r, "/a", "/a")])
    t2 = _transfer(j, items=[ItemSpec(r, "/b", "/b"), ItemSpec(r, "/c", "/c")])
    j.set_transfer_outcome(t1, "succeeded")
    assert j.request_satisfied(r) is None                   # t2 pending
    items2 = j.items_for_transfer(t2)
    j.set_item_outcome(items2[0].item_id, "succeeded")
    assert j.request_satisfied(r) is None
    j.set_item_outcome(items2[1].item_id, "failed", message="FILE_NOT_FOUND")
    assert j.request_satisfied(r) is False
    j.set_item_outcome(items2[1].item_id, "succeeded")      # a retry made it
    assert j.request_satisfied(r) is True
    assert j.set_transfer_outcome(t2, "failed") == 0        # only pending items change


# -- events, alerts, obits, cycles, meta --------------------------------------------------


def test_events_in_order_with_data(j):
    for n in range(5):
        j.add_event("1.srv", "poll" if n % 2 else "submit", f"m{n}", transfer_id=n,
                    data={"n": n, "t": [1, 2]}, at=T0 + n)
    j.add_event("2.srv", "submit", "other", at=T0)
    evs = j.events("1.srv")
    assert [e.message for e in evs] == ["m0", "m1", "m2", "m3", "m4"]
    assert evs[3].data == {"n": 3, "t": [1, 2]} and evs[3].time == T0 + 3
    assert [e.message for e in j.events("1.srv", limit=2)] == ["m3", "m4"]
    assert [e.message for e in j.events("1.srv", kind="submit", since=T0 + 1)] == ["m2", "m4"]
    assert [e.job_id for e in j.events(transfer_id=0)] == ["1.srv"]
    with pytest.raises(ValueError):
        j.add_event("1.srv", "")


def test_alert_state(j):
    assert j.alert_state("stuck", "1.srv") is None
    j.mark_alert("stuck", "1.srv", at=T0)
    a = j.mark_alert("stuck", "1.srv", at=T0 + 60)
    assert (a.first_sent, a.last_sent, a.count) == (T0, T0 + 60, 2)
    assert j.alert_state("stuck", "2.srv") is None
    assert j.clear_alert("stuck", "1.srv") is True
    assert j.alert_state("stuck", "1.srv") is None


def test_obits_latest_wins(j, jpath):
    j.record_obit("1.srv", 3, at=T0)
    journal.write_obit(jpath, "1.srv", 0, at=T0 + 5)        # rerun ended again
    journal.write_obit(jpath, "2.srv", None, at=T0 + 6)
    assert j.obit("1.srv") == journal.ObitRow("1.srv", 0, T0 + 5)
    assert j.obit("3.srv") is None
    assert [o.job_id for o in j.obits(since=T0 + 6)] == ["2.srv"]


def test_cycles_and_meta(j):
    for n in range(3):
        cid = j.start_cycle(now=T0 + n)
        j.finish_cycle(cid, ok=n != 1, error="boom" if n == 1 else None, globus_calls=n,
                       cpu_seconds=0.5, now=T0 + n + 0.5)
    last = j.last_cycles(2)
    assert [c.globus_calls for c in last] == [2, 1]
    assert last[1].ok is False and last[1].error == "boom" and last[0].finished == T0 + 2.5
    with pytest.raises(KeyError):
        j.finish_cycle(999, ok=True)
    j.set_meta("k", "1")
    j.set_meta("k", None)
    assert j.get_meta("k") is None


# -- transactions ----------------------------------------------------------------------


def test_transaction_is_atomic_and_nests(j):
    with pytest.raises(RuntimeError):
        with j.transaction():
            j.set_meta("a", "1")
            raise RuntimeError("boom")
    assert j.get_meta("a") is None

    with j.transaction():
        j.set_meta("outer", "1")
        try:
            with j.transaction():
                j.set_meta("inner", "1")
                raise RuntimeError("inner fails")
        except RuntimeError:
            pass
        j.set_meta("after", "1")
    assert (j.get_meta("outer"), j.get_meta("inner"), j.get_meta("after")) == ("1", None, "1")


def test_keyboard_interrupt_rolls_back(j):
    # A hook's alarm arrives as KeyboardInterrupt in the middle of our work.
    with pytest.raises(KeyboardInterrupt):
        with j.transaction():
            j.record_obit("1.srv", 0)
            raise KeyboardInterrupt
    assert j.obit("1.srv") is None
    j.record_obit("1.srv", 0)
    assert j.obit("1.srv").exit_status == 0


def test_durable_commits_sync_the_wal(j, monkeypatch):
    synced = []
    real = getattr(os, "fdatasync", os.fsync)

    def spy(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fdatasync" if hasattr(os, "fdatasync") else "fsync", spy)
    j.add_event("1.srv", "cheap")
    j.record_obit("1.srv", 0)
    tid = _transfer(j)
    assert synced == []                     # ordinary commits pay no fsync
    j.set_submission_id(tid, "sub-1")
    assert synced == [str(j.path) + "-wal"]
    _transfer(j, submission_id="sub-2")
    with j.transaction():                   # inside a bigger transaction: synced at its commit
        t3 = _transfer(j)
        j.set_submission_id(t3, "sub-3")
        assert len(synced) == 2
    assert len(synced) == 3


def test_fork_child_cannot_use_parent_connection(j):
    pid = os.fork()
    if pid == 0:   # pragma: no cover - child
        code = 1
        try:
            j.get_meta("x")
        except JournalError:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert j.get_meta("x") is None          # parent unaffected


# -- error mapping ----------------------------------------------------------------------


def test_disk_full_is_retryable_and_names_the_file(j):
    j.set_meta("seed", "x")
    pages = j._conn.execute("PRAGMA page_count").fetchone()[0]
    j._conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    with pytest.raises(errors.RetryableError) as info:
        j.add_event("1.srv", "big", "x" * 200_000)
    assert "disk full" in str(info.value) and str(j.path) in str(info.value)
    j._conn.execute("PRAGMA max_page_count = 1073741823")
    j.add_event("1.srv", "small")                      # usable again afterwards
    assert [e.kind for e in j.events("1.srv")] == ["small"]


def test_unwritable_database_is_retryable(j):
    j._conn.execute("PRAGMA query_only = ON")          # SQLite's SQLITE_READONLY path
    with pytest.raises(errors.RetryableError) as info:
        j.record_obit("1.srv", 0)
    assert str(j.path) in str(info.value)
    j._conn.execute("PRAGMA query_only = OFF")
    j.record_obit("1.srv", 0)


@pytest.mark.parametrize("err", [errno.EROFS, errno.ENOSPC])
def test_readonly_or_full_filesystem_at_creation_is_retryable(tmp_path, monkeypatch, err):
    path = tmp_path / "j.db"
    real_open = os.open

    def failing_open(name, *args, **kw):
        if os.fspath(name) == str(path):
            raise OSError(err, os.strerror(err), str(name))
        return real_open(name, *args, **kw)

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(errors.RetryableError) as info:
        Journal.open(path)
    assert str(path) in str(info.value) and os.strerror(err) in str(info.value)


# -- pruning -------------------------------------------------------------------------------


def test_prune_removes_old_finished_history_only(j):
    old, recent = T0 - 40 * DAY, T0 - 1 * DAY
    # A long-gone job whose transfer finished long ago: all of it goes.
    j.upsert_job("old.srv", owner="a", now=old)
    j.mark_gone("old.srv", now=old)
    r_old = _request(j, "old.srv", now=old)
    t_old = _transfer(j, submission_id="s-old", items=[ItemSpec(r_old, "/a", "/a")], now=old)
    j.update_transfer(t_old, status="succeeded", now=old)
    j.add_event("old.srv", "done", at=old)
    j.record_obit("old.srv", 0, at=old)
    # A long-gone job still tied to an unfinished transfer: kept.
    j.upsert_job("tied.srv", owner="a", now=old)
    j.mark_gone("tied.srv", now=old)
    r_tied = _request(j, "tied.srv", now=old)
    t_active = _transfer(j, submission_id="s-act", items=[ItemSpec(r_tied, "/b", "/b")], now=old)
    j.update_transfer(t_active, status="active")
    # A job gone only yesterday, and one still present since long ago: kept.
    j.upsert_job("new.srv", owner="a", now=old)
    j.mark_gone("new.srv", now=recent)
    j.upsert_job("alive.srv", owner="a", now=old)
    r_alive = _request(j, "alive.srv", now=old)
    t_shared = _transfer(j, items=[ItemSpec(r_alive, "/c", "/c")], now=old)
    j.update_transfer(t_shared, status="succeeded", now=old)
    j.add_event(None, "agent-start", at=old)
    j.add_event(None, "agent-start", at=recent)
    c = j.start_cycle(now=old)
    j.finish_cycle(c, ok=True, now=old)
    j.mark_alert("stuck", "old.srv", at=old)

    out = j.prune(older_than_days=30, now=T0)

    assert out["jobs"] == 1 and out["transfers"] == 1 and out["requests"] == 1
    assert j.get_job("old.srv") is None and j.get_transfer(t_old) is None
    assert j.obit("old.srv") is None and j.events("old.srv") == []
    assert {x.job_id for x in j.jobs()} == {"tied.srv", "new.srv", "alive.srv"}
    assert {t.transfer_id for t in j.transfers()} == {t_active, t_shared}
    assert j.items_for_request(r_tied) and j.items_for_request(r_alive)
    assert [e.time for e in j.events(kind="agent-start")] == [recent]
    assert j.last_cycles() == [] and j.alert_state("stuck", "old.srv") is None
    assert j.integrity_check() == []
    j.vacuum()
    assert j.integrity_check() == []
    with pytest.raises(ValueError):
        j.prune(older_than_days=-1)


def test_settled_jobs_that_left_pbs_become_history_and_are_pruned(j):
    for job in ("1.s", "2.s", "3.s"):
        j.upsert_job(job, owner="alice", now=100.0)
    a = j.add_request(job_id="1.s", direction="in", owner="alice", identity="alice", raw="r",
                      normalized="r", request_key="k1", state="pending", now=100.0)
    j.set_request_state(a, "succeeded", now=100.0)
    b = j.add_request(job_id="2.s", direction="in", owner="alice", identity="alice", raw="r",
                      normalized="r", request_key="k2", state="pending", now=100.0)
    j.set_request_state(b, "active", now=100.0)
    j.mark_job_seen(["3.s"], now=200.0)
    n = j.mark_settled_jobs_gone(seen_before=200.0,
                                 final_states=("succeeded", "failed", "skipped", "canceled"),
                                 now=200.0)
    assert n == 1                                  # 1.s: settled and unseen
    assert j.get_job("1.s").gone_since == 200.0
    assert j.get_job("2.s").gone_since is None     # its stage-in is still active
    assert j.get_job("3.s").gone_since is None     # PBS still lists it
    j.prune(older_than_days=1, now=200.0 + 2 * 86400)
    assert j.get_job("1.s") is None and j.get_request(a) is None
    assert j.get_job("2.s") is not None
