"""The journal's schema: vocabularies as SQL, and the migrations.

Stdlib only, Python 3.6+.  Each migration is an ordered list of statements
applied in one transaction together with the ``user_version`` bump (see
``connection.Connection._migrate``).  Never edit a released migration: append a
new one.
"""

from typing import Iterable, Tuple

from ..states import FINISHED_TRANSFER, Direction, Item, Request, Transfer

# "PGSJ" -- marks the file as ours, so we never migrate somebody else's database.
APPLICATION_ID = 0x5047534A

# The vocabularies are states.Transfer, states.Item, states.Direction and
# states.Request; these tuples are their members, for callers that iterate.
TRANSFER_STATUSES = tuple(Transfer)
FINISHED_STATUSES = FINISHED_TRANSFER
ITEM_OUTCOMES = tuple(Item)
DIRECTIONS = tuple(Direction)


def _q(word: str) -> str:
    """A vocabulary word as an SQL string literal (our own words: no quotes in them)."""
    assert "'" not in word
    return "'" + str(word) + "'"


def _sql_set(words: Iterable[str]) -> str:
    return "(" + ", ".join(_q(w) for w in words) + ")"


def _check_in(column: str, vocabulary: Iterable[str]) -> str:
    """The CHECK constraint that keeps ``column`` within a vocabulary."""
    return f"CHECK ({column} IN {_sql_set(vocabulary)})"


_FINISHED_SQL = _sql_set(sorted(FINISHED_TRANSFER))

# ---------------------------------------------------------------------------
# Schema.  Each migration is an ordered list of statements applied in one
# transaction together with the ``user_version`` bump.  Never edit a released
# migration: append a new one.  Only SQL that SQLite 3.24 understands (the
# distribution SQLite a PBS server's Python may link against): no RETURNING,
# no DROP COLUMN.

_V1 = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    """CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        queue TEXT,
        array_parent TEXT,
        priority INTEGER,
        qtime REAL,
        first_seen REAL,
        last_seen REAL,
        gone_since REAL,
        exit_status INTEGER,
        obit_time REAL,
        stage_state TEXT,
        comment TEXT)""",
    """CREATE TABLE requests (
        request_id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        owner TEXT NOT NULL,
        identity TEXT NOT NULL,
        raw TEXT NOT NULL,
        normalized TEXT NOT NULL,
        request_key TEXT NOT NULL,
        state TEXT NOT NULL,
        message TEXT,
        action TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL,
        created REAL,
        updated REAL,
        UNIQUE (job_id, direction))""",
    """CREATE TABLE transfers (
        transfer_id INTEGER PRIMARY KEY,
        identity TEXT NOT NULL,
        direction TEXT CHECK (direction IN ('in', 'out')),
        source_collection TEXT,
        destination_collection TEXT,
        options TEXT,
        label TEXT,
        deadline TEXT,
        submission_id TEXT UNIQUE,
        task_id TEXT UNIQUE,
        grafted INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('new', 'submitting', 'active',
            'inactive', 'succeeded', 'failed', 'canceled')),
        nice_status TEXT,
        files INTEGER,
        files_transferred INTEGER,
        files_skipped INTEGER,
        bytes_transferred INTEGER,
        bytes_per_second REAL,
        faults INTEGER,
        fault_since REAL,
        fatal_code TEXT,
        message TEXT,
        created REAL,
        submitted REAL,
        completed REAL,
        last_polled REAL,
        last_progress REAL)""",
    """CREATE TABLE transfer_items (
        item_id INTEGER PRIMARY KEY,
        transfer_id INTEGER NOT NULL REFERENCES transfers (transfer_id),
        request_id INTEGER REFERENCES requests (request_id),
        source_path TEXT NOT NULL,
        destination_path TEXT NOT NULL,
        recursive INTEGER NOT NULL DEFAULT 0,
        outcome TEXT NOT NULL DEFAULT 'pending'
            CHECK (outcome IN ('pending', 'succeeded', 'failed')),
        message TEXT)""",
    """CREATE TABLE events (
        event_id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        job_id TEXT,
        request_id INTEGER,
        transfer_id INTEGER,
        kind TEXT NOT NULL,
        message TEXT,
        data TEXT)""",
    "CREATE INDEX events_job ON events (job_id)",
    """CREATE TABLE obits (
        job_id TEXT PRIMARY KEY,
        exit_status INTEGER,
        time REAL)""",
    """CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT)""",
)

# v2: orphan and cancel bookkeeping on transfers, alert state, cycle stats, and
# the indexes the agent's per-cycle queries need at 10,000 jobs.
_V2 = (
    "ALTER TABLE transfers ADD COLUMN orphaned_since REAL",
    "ALTER TABLE transfers ADD COLUMN cancel_requested REAL",
    """CREATE TABLE alerts (
        rule TEXT NOT NULL,
        key TEXT NOT NULL,
        first_sent REAL,
        last_sent REAL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (rule, key))""",
    """CREATE TABLE cycles (
        cycle_id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        ok INTEGER,
        error TEXT,
        globus_calls INTEGER,
        pbs_calls INTEGER,
        cpu_seconds REAL,
        jobs INTEGER,
        transfers INTEGER)""",
    "CREATE INDEX transfers_status ON transfers (status, identity)",
    "CREATE INDEX requests_state ON requests (state, direction)",
    "CREATE INDEX requests_key ON requests (request_key)",
    "CREATE INDEX items_transfer ON transfer_items (transfer_id)",
    "CREATE INDEX items_request ON transfer_items (request_id)",
    "CREATE INDEX events_time ON events (time)",
    "CREATE INDEX jobs_gone ON jobs (gone_since)",
)

# v3: the stage-out request travels with the exit status.  The jobobit hook
# writes both in one transaction, so a job that ended before the agent ever
# saw it queued or running (a short stage-out-only job) still has its results
# sent: nothing depends on the agent having seen the job alive.
_V3 = (
    "ALTER TABLE obits ADD COLUMN owner TEXT",
    "ALTER TABLE obits ADD COLUMN project TEXT",
    "ALTER TABLE obits ADD COLUMN stageout TEXT",
)

# v4: the CHECK constraints come from the vocabularies in states.py, and
# requests.state has one (it had none; transfers allowed a "submitting" nothing
# ever wrote).  SQLite cannot change a constraint in place, so the three tables
# are rebuilt: copied aside, dropped children first (no foreign key is ever
# violated), created anew and filled back, with their indexes.  A future word
# added to one of these vocabularies needs another migration like this one
# (tests/unit/test_journal.py compares the live constraints with the enums).
_REQUESTS_COLUMNS = ("request_id", "job_id", "direction", "owner", "identity", "raw",
                     "normalized", "request_key", "state", "message", "action", "attempts",
                     "next_attempt", "created", "updated")
_TRANSFERS_COLUMNS = (
    "transfer_id", "identity", "direction", "source_collection", "destination_collection",
    "options", "label", "deadline", "submission_id", "task_id", "grafted", "status",
    "nice_status", "files", "files_transferred", "files_skipped", "bytes_transferred",
    "bytes_per_second", "faults", "fault_since", "fatal_code", "message", "created",
    "submitted", "completed", "last_polled", "last_progress", "orphaned_since",
    "cancel_requested")
_ITEMS_COLUMNS = ("item_id", "transfer_id", "request_id", "source_path", "destination_path",
                  "recursive", "outcome", "message")


def _rebuild_v4() -> Tuple[str, ...]:
    req_cols = ", ".join(_REQUESTS_COLUMNS)
    tr_cols = ", ".join(_TRANSFERS_COLUMNS)
    it_cols = ", ".join(_ITEMS_COLUMNS)
    # "submitting" was allowed and never written; were one there, it is a
    # transfer recorded and not known to be at Globus: new.
    tr_select = tr_cols.replace("status,", "CASE status WHEN 'submitting' THEN "
                                f"{_q(Transfer.NEW)} ELSE status END,", 1)
    return (
        "CREATE TEMP TABLE v4_requests AS SELECT * FROM requests",
        "CREATE TEMP TABLE v4_transfers AS SELECT * FROM transfers",
        "CREATE TEMP TABLE v4_items AS SELECT * FROM transfer_items",
        "DROP TABLE transfer_items",
        "DROP TABLE transfers",
        "DROP TABLE requests",
        f"""CREATE TABLE requests (
        request_id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        direction TEXT NOT NULL {_check_in("direction", Direction)},
        owner TEXT NOT NULL,
        identity TEXT NOT NULL,
        raw TEXT NOT NULL,
        normalized TEXT NOT NULL,
        request_key TEXT NOT NULL,
        state TEXT NOT NULL {_check_in("state", Request)},
        message TEXT,
        action TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL,
        created REAL,
        updated REAL,
        UNIQUE (job_id, direction))""",
        f"""CREATE TABLE transfers (
        transfer_id INTEGER PRIMARY KEY,
        identity TEXT NOT NULL,
        direction TEXT {_check_in("direction", Direction)},
        source_collection TEXT,
        destination_collection TEXT,
        options TEXT,
        label TEXT,
        deadline TEXT,
        submission_id TEXT UNIQUE,
        task_id TEXT UNIQUE,
        grafted INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL {_check_in("status", Transfer)},
        nice_status TEXT,
        files INTEGER,
        files_transferred INTEGER,
        files_skipped INTEGER,
        bytes_transferred INTEGER,
        bytes_per_second REAL,
        faults INTEGER,
        fault_since REAL,
        fatal_code TEXT,
        message TEXT,
        created REAL,
        submitted REAL,
        completed REAL,
        last_polled REAL,
        last_progress REAL,
        orphaned_since REAL,
        cancel_requested REAL)""",
        f"""CREATE TABLE transfer_items (
        item_id INTEGER PRIMARY KEY,
        transfer_id INTEGER NOT NULL REFERENCES transfers (transfer_id),
        request_id INTEGER REFERENCES requests (request_id),
        source_path TEXT NOT NULL,
        destination_path TEXT NOT NULL,
        recursive INTEGER NOT NULL DEFAULT 0,
        outcome TEXT NOT NULL DEFAULT {_q(Item.PENDING)}
            {_check_in("outcome", Item)},
        message TEXT)""",
        f"INSERT INTO requests ({req_cols}) SELECT {req_cols} FROM v4_requests",
        f"INSERT INTO transfers ({tr_cols}) SELECT {tr_select} FROM v4_transfers",
        f"INSERT INTO transfer_items ({it_cols}) SELECT {it_cols} FROM v4_items",
        "DROP TABLE v4_requests",
        "DROP TABLE v4_transfers",
        "DROP TABLE v4_items",
        "CREATE INDEX transfers_status ON transfers (status, identity)",
        "CREATE INDEX requests_state ON requests (state, direction)",
        "CREATE INDEX requests_key ON requests (request_key)",
        "CREATE INDEX items_transfer ON transfer_items (transfer_id)",
        "CREATE INDEX items_request ON transfer_items (request_id)",
    )


_V4 = _rebuild_v4()

MIGRATIONS: Tuple[Tuple[str, ...], ...] = (_V1, _V2, _V3, _V4)
SCHEMA_VERSION = len(MIGRATIONS)
