"""The journal shared by real processes: concurrent writers, a writer killed
with SIGKILL at random moments, and lock timeouts (the jobobit hook's short
timeout must hold while another process has the write lock)."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pbs_globus_staging import errors, journal
from pbs_globus_staging.journal import Journal


def _child(code: str, *args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Writes transfers (with items, a submission id and an event, in one
# transaction), plain events and obits until the deadline; prints its counts.
WRITER = """
    import json, sys, time
    from pbs_globus_staging import errors
    from pbs_globus_staging.journal import Journal, ItemSpec
    path, wid, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    j = Journal.open(path, timeout=5.0)
    counts = {"transfers": 0, "items": 0, "events": 0, "obits": 0, "retryable": 0}
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        try:
            if n % 3:
                with j.transaction():
                    k = 1 + n % 4
                    tid = j.create_transfer(identity=wid, direction="in", source_collection="s",
                                            destination_collection="d", label=f"{wid}:{k}",
                                            items=[ItemSpec(None, f"/s/{i}", f"/d/{i}") for i in range(k)])
                    j.set_submission_id(tid, f"{wid}-{n}")
                    j.add_event(f"{wid}.srv", "submit", transfer_id=tid)
                counts["transfers"] += 1
                counts["items"] += k
                counts["events"] += 1
            elif n % 2:
                j.record_obit(f"{wid}-{n}.srv", n % 7)
                counts["obits"] += 1
            else:
                j.add_event(f"{wid}.srv", "poll", str(n))
                counts["events"] += 1
        except errors.RetryableError:
            counts["retryable"] += 1
    j.close()
    print(json.dumps(counts))
"""


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "j.db"
    Journal.open(path).close()
    procs = {f"w{i}": _child(WRITER, path, f"w{i}", 2.0) for i in range(4)}
    results = {}
    for wid, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err           # no raw sqlite3 error escaped
        results[wid] = json.loads(out)
    with Journal.open(path) as j:
        assert j.integrity_check() == []
        for wid, c in results.items():
            assert c["retryable"] == 0, c         # 5 s timeout: never reached under this load
            assert c["transfers"] > 20, c         # every writer made progress
            ts = j.transfers(identity=wid)
            assert len(ts) == c["transfers"]
            assert sum(len(j.items_for_transfer(t.transfer_id)) for t in ts) == c["items"]
            assert all(len(j.items_for_transfer(t.transfer_id)) == int(t.label.split(":")[1])
                       and t.submission_id for t in ts)
            assert len(j.events(f"{wid}.srv")) == c["events"]
        assert len(j.obits()) == sum(c["obits"] for c in results.values())


# Loops multi-statement transactions forever; after each commit prints the
# transfer id, so the parent knows what was committed before the kill.
CRASHER = """
    import sys
    from pbs_globus_staging.journal import Journal, ItemSpec
    path = sys.argv[1]
    j = Journal.open(path, timeout=5.0)
    n = int(j.get_meta("n") or 0)
    while True:
        n += 1
        k = 1 + n % 5
        with j.transaction(durable=(n % 4 == 0)):
            rid = j.add_request(job_id=f"{n}.srv", direction="in", owner="u", identity="u",
                                raw="r", normalized="r", request_key=f"k{n}", state="pending")
            tid = j.create_transfer(identity="u", direction="in", source_collection="s",
                                    destination_collection="d", label=str(k))
            j.add_items(tid, [ItemSpec(rid, f"/s/{n}/{i}", f"/d/{n}/{i}") for i in range(k)])
            j.set_submission_id(tid, f"sub-{n}")
            j.set_request_state(rid, "active", message=f"transfer {tid}")
            j.add_event(f"{n}.srv", "submit", transfer_id=tid, data={"items": k})
            j.set_meta("n", str(n))
        sys.stdout.write(f"{tid}\\n")
        sys.stdout.flush()
"""


def _check_invariants(j: Journal, committed: set) -> int:
    assert j.integrity_check() == []
    assert j.schema_version == journal.SCHEMA_VERSION
    q = j._conn.execute
    ids = {r[0] for r in q("SELECT transfer_id FROM transfers")}
    assert committed <= ids, f"lost committed transfers {sorted(committed - ids)[:5]}"
    n = int(j.get_meta("n") or 0)
    assert len(ids) == n == q("SELECT count(*) FROM requests").fetchone()[0]
    # Every transfer has exactly its items, all for one request, whose state
    # names it, a submission id, and one event: nothing half-written.
    bad = q("""
        SELECT t.transfer_id FROM transfers t
        LEFT JOIN (SELECT transfer_id, count(*) AS n, min(request_id) AS r,
                          max(request_id) AS r2 FROM transfer_items GROUP BY transfer_id) i
               ON i.transfer_id = t.transfer_id
        LEFT JOIN requests r ON r.request_id = i.r
        LEFT JOIN (SELECT transfer_id, count(*) AS n FROM events GROUP BY transfer_id) e
               ON e.transfer_id = t.transfer_id
        WHERE i.n IS NOT CAST(t.label AS INTEGER) OR i.r IS NOT i.r2
           OR t.submission_id IS NULL OR r.message IS NOT 'transfer ' || t.transfer_id
           OR e.n IS NOT 1
    """).fetchall()
    assert bad == [], bad[:5]
    if ids:   # and the same through the API, for the newest one
        t = j.get_transfer(max(ids))
        assert len(j.items_for_transfer(t.transfer_id)) == int(t.label)
        assert j.events(transfer_id=t.transfer_id)[0].data == {"items": int(t.label)}
    return n


def test_sigkill_at_random_moments_leaves_a_consistent_journal(tmp_path):
    path = tmp_path / "j.db"           # not created: early kills land in create/migrate
    rng = random.Random(20261121)
    committed: set = set()
    progress = []
    for _ in range(30):
        p = _child(CRASHER, path)
        time.sleep(rng.uniform(0.05, 0.45))
        p.send_signal(signal.SIGKILL)
        out, err = p.communicate(timeout=30)
        assert p.returncode == -signal.SIGKILL, err
        committed.update(int(x) for x in out.split())
        if not path.exists():
            continue                       # killed before it even created the file
        with Journal.open(path) as j:
            progress.append(_check_invariants(j, committed))
    assert progress and progress[-1] > 100, progress     # the kills hit a busy writer
    assert progress == sorted(progress)


HOLDER = """
    import sys, time
    from pbs_globus_staging.journal import Journal
    j = Journal.open(sys.argv[1])
    with j.transaction():
        j.set_meta("holder", "1")
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def locked(tmp_path):
    path = tmp_path / "j.db"
    with Journal.open(path) as j:
        j.set_meta("before", "1")
    p = _child(HOLDER, path, 20)
    assert p.stdout.readline().strip() == "locked"
    yield path
    p.kill()
    p.communicate()


def test_short_timeout_obit_gives_up_quickly_under_a_held_lock(locked):
    t = time.monotonic()
    with pytest.raises(errors.RetryableError) as info:
        journal.write_obit(locked, "1.srv", 0, timeout=0.5)
    elapsed = time.monotonic() - t
    assert 0.4 < elapsed < 1.5, elapsed
    assert str(info.value).startswith("journal is locked") and str(locked) in str(info.value)


def test_lock_timeout_is_retryable_and_reads_still_work(locked):
    with Journal.open(locked, timeout=0.2) as j:
        assert j.get_meta("before") == "1"          # WAL: readers never wait for the writer
        assert j.get_meta("holder") is None         # and never see uncommitted data
        for write in (lambda: j.add_event(None, "x"),
                      lambda: j.create_transfer(identity="u", direction="in",
                                                source_collection="s",
                                                destination_collection="d", submission_id="x")):
            t = time.monotonic()
            with pytest.raises(errors.RetryableError, match="journal is locked"):
                write()
            assert time.monotonic() - t < 1.0
        assert j.transfers() == []


def test_lock_released_lets_a_waiting_writer_through(tmp_path):
    path = tmp_path / "j.db"
    Journal.open(path).close()
    p = _child(HOLDER, path, 0.5)
    assert p.stdout.readline().strip() == "locked"
    with Journal.open(path, timeout=5.0) as j:
        t = time.monotonic()
        j.record_obit("1.srv", 0)                   # waits for the holder, then succeeds
        assert 0.2 < time.monotonic() - t < 4.0
        assert j.get_meta("holder") == "1"
    p.communicate(timeout=10)


def test_many_processes_create_and_migrate_the_same_new_file(tmp_path):
    path = tmp_path / "new" / "j.db"
    code = """
        import sys
        from pbs_globus_staging.journal import Journal
        with Journal.open(sys.argv[1]) as j:
            j.add_event(None, "hello", sys.argv[2])
    """
    procs = [_child(code, path, i) for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    with Journal.open(path) as j:
        assert sorted(e.message for e in j.events(kind="hello")) == [str(i) for i in range(8)]
        assert j.schema_version == journal.SCHEMA_VERSION and j.integrity_check() == []
