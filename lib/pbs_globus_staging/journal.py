"""The journal: a small SQLite file that remembers what outlives a PBS job.

Stdlib only, Python 3.6+: the jobobit event hook writes one row through it
inside ``pbs_server``; the agent and the CLI use all of it.

PBS is the source of truth for jobs and Globus for transfers.  The journal
keeps what neither does for us: the staging *requests* (one job's stage-in or
stage-out), the Globus *transfers* we made for them -- with the submission id
persisted *before* the submit call, so a crash or a lost queue never starts a
transfer twice -- the *items* that link a transfer to the requests it serves
(one transfer may serve many jobs, one job may wait on several transfers),
per-job event history, alert state, exit statuses from the jobobit hook and
per-cycle statistics.

Concurrency: several processes (event hooks, the agent, the CLI) open the same
file.  The file is in WAL mode, so readers never wait for the writer; every
write is one ``BEGIN IMMEDIATE`` transaction, which takes the write lock up
front (no deadlock-prone read-to-write upgrade) and waits at most ``timeout``
seconds for it.  A lock that is not had in time raises
``errors.RetryableError`` -- never a raw ``sqlite3`` error -- so a cycle gives
up cleanly and a hook (``timeout=0.5``) never stalls ``pbs_server``.  Hence
the one rule for callers: never make a network or PBS call inside
``transaction()`` -- every other process waits for it to end.

Durability: ``synchronous=NORMAL``.  In WAL mode a commit appends to the WAL
file and returns; the WAL is fsynced at each checkpoint.  That is
crash-consistent always (a killed process, an alarm in a hook, a power cut
never leave a half-written transaction or a corrupt file) and durable against
any *process* crash, because a committed transaction is in the kernel's page
cache.  Only an OS crash or power cut can lose the last few commits -- they roll
back as a whole.  For nearly everything the journal holds that is harmless: the
next cycle re-reads PBS and Globus and writes it again.  The exception is a
submission id, which must be on disk before the submit call goes out, or a
rolled-back journal would let the agent submit the same data again under a new
id.  So a transaction that writes a submission id (``create_transfer`` with one,
``set_submission_id``, or any ``transaction(durable=True)``) fsyncs the WAL file
after its commit -- exactly what ``synchronous=FULL`` does for every commit,
paid only where it matters (one fdatasync per submitted transfer, not one per
obit or event).
"""

import contextlib
from ._py36 import dataclasses
import errno
import json
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import (Any, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Tuple, Type, TypeVar, Union)

from . import errors
from .states import (FINISHED_TRANSFER, Direction, IllegalTransition, Item, Request,
                     Transfer, check_transition)

__all__ = [
    "Journal", "JournalError", "ConflictError", "SchemaError",
    "JobRow", "RequestRow", "TransferRow", "ItemRow", "EventRow", "AlertRow",
    "ObitRow", "CycleRow", "ItemSpec",
    "TRANSFER_STATUSES", "FINISHED_STATUSES", "ITEM_OUTCOMES", "SCHEMA_VERSION",
    "write_obit", "IllegalTransition",
]

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

HOOK_TIMEOUT = 0.5   # what an event hook should pass: pbs_server must never stall


class JournalError(errors.StagingError):
    """The journal cannot be used as asked (corrupt, not ours, opened read-only,
    a misuse).  Not cured by waiting: a person has to look."""


class SchemaError(JournalError):
    """The file's schema is not one this program can use (newer, or foreign)."""


class ConflictError(JournalError, ValueError):
    """A write would break a uniqueness rule (a submission or task id already
    belongs to another transfer, or would change once set)."""


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
# (tests/test_journal.py compares the live constraints with the enums).
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


# ---------------------------------------------------------------------------
# Rows


@dataclasses.dataclass(frozen=True)
class JobRow:
    job_id: str
    owner: str
    queue: Optional[str]
    array_parent: Optional[str]
    priority: Optional[int]
    qtime: Optional[float]
    first_seen: Optional[float]
    last_seen: Optional[float]
    gone_since: Optional[float]
    exit_status: Optional[int]
    obit_time: Optional[float]
    stage_state: Optional[str]
    comment: Optional[str]


@dataclasses.dataclass(frozen=True)
class RequestRow:
    request_id: int
    job_id: str
    direction: str
    owner: str
    identity: str
    raw: str
    normalized: str
    request_key: str
    state: str
    message: Optional[str]
    action: Optional[str]
    attempts: int
    next_attempt: Optional[float]
    created: Optional[float]
    updated: Optional[float]


@dataclasses.dataclass(frozen=True)
class TransferRow:
    transfer_id: int
    identity: str
    direction: Optional[str]
    source_collection: Optional[str]
    destination_collection: Optional[str]
    options: Dict[str, Any]          # decoded JSON; {} when none
    label: Optional[str]
    deadline: Optional[str]
    submission_id: Optional[str]
    task_id: Optional[str]
    grafted: bool
    status: str
    nice_status: Optional[str]
    files: Optional[int]
    files_transferred: Optional[int]
    files_skipped: Optional[int]
    bytes_transferred: Optional[int]
    bytes_per_second: Optional[float]
    faults: Optional[int]
    fault_since: Optional[float]
    fatal_code: Optional[str]
    message: Optional[str]
    created: Optional[float]
    submitted: Optional[float]
    completed: Optional[float]
    last_polled: Optional[float]
    last_progress: Optional[float]
    orphaned_since: Optional[float]
    cancel_requested: Optional[float]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclasses.dataclass(frozen=True)
class ItemRow:
    item_id: int
    transfer_id: int
    request_id: Optional[int]
    source_path: str
    destination_path: str
    recursive: bool
    outcome: str
    message: Optional[str]


@dataclasses.dataclass(frozen=True)
class EventRow:
    event_id: int
    time: float
    job_id: Optional[str]
    request_id: Optional[int]
    transfer_id: Optional[int]
    kind: str
    message: Optional[str]
    data: Optional[Any]              # decoded JSON


@dataclasses.dataclass(frozen=True)
class AlertRow:
    rule: str
    key: str
    first_sent: Optional[float]
    last_sent: Optional[float]
    count: int


@dataclasses.dataclass(frozen=True)
class ObitRow:
    job_id: str
    exit_status: Optional[int]
    time: Optional[float]
    owner: Optional[str] = None
    project: Optional[str] = None
    stageout: Optional[str] = None      # the job's stageout_globus as it ended


@dataclasses.dataclass(frozen=True)
class CycleRow:
    cycle_id: int
    started: float
    finished: Optional[float]
    ok: Optional[bool]
    error: Optional[str]
    globus_calls: Optional[int]
    pbs_calls: Optional[int]
    cpu_seconds: Optional[float]
    jobs: Optional[int]
    transfers: Optional[int]


@dataclasses.dataclass(frozen=True)
class ItemSpec:
    """One item to add to a transfer, and the request that needs it (None for
    an item no job asked for, e.g. the items of a grafted task)."""

    request_id: Optional[int]
    source_path: str
    destination_path: str
    recursive: bool = False


_R = TypeVar("_R")


def _decode_json(text: Optional[str]) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text       # written by hand or by a newer tool: show it, don't crash


_FIELDS: Dict[type, Tuple[str, ...]] = {}


def _row(cls: Type[_R], row: sqlite3.Row) -> _R:
    # dataclasses.fields() is slow enough to matter at 10,000 jobs a cycle.
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    values = {name: row[name] for name in names}
    if cls is TransferRow:
        values["options"] = _decode_json(values["options"]) or {}
        values["grafted"] = bool(values["grafted"])
    elif cls is ItemRow:
        values["recursive"] = bool(values["recursive"])
    elif cls is EventRow:
        values["data"] = _decode_json(values["data"])
    elif cls is CycleRow and values["ok"] is not None:
        values["ok"] = bool(values["ok"])
    return cls(**values)  # type: ignore[call-arg]


def _dumps(value: Any) -> Optional[str]:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _now(now: Optional[float]) -> float:
    return time.time() if now is None else float(now)


def _words(value: Union[None, str, Iterable[str]]) -> Optional[Tuple[str, ...]]:
    """A filter value: one word or several."""
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _in_clause(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({','.join('?' * len(values))})"


# Columns update_transfer may change.  submission_id and task_id have their own
# setters (durability, conflict rules); identity/direction/collections/created
# describe what was submitted and never change.
_TRANSFER_MUTABLE = frozenset({
    "status", "nice_status", "files", "files_transferred", "files_skipped",
    "bytes_transferred", "bytes_per_second", "faults", "fault_since",
    "fatal_code", "message", "submitted", "completed", "last_polled",
    "last_progress", "orphaned_since", "cancel_requested", "label", "deadline",
    "options", "grafted",
})
_REQUEST_MUTABLE = frozenset({
    "raw", "normalized", "request_key", "identity", "state", "message",
    "action", "attempts", "next_attempt",
})
_JOB_FIELDS = ("owner", "queue", "array_parent", "priority", "qtime",
               "exit_status", "obit_time", "stage_state", "comment")

# errno values from opening the file that a later attempt may not meet again.
_TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EROFS, errno.EIO, errno.EAGAIN, errno.EBUSY,
    errno.EINTR, errno.ENFILE, errno.EMFILE,
    getattr(errno, "EDQUOT", errno.ENOSPC), getattr(errno, "ESTALE", errno.EIO),
})


# ---------------------------------------------------------------------------


class Journal:
    """One open connection to the journal file.

    Not shared between threads, and not usable in a forked child: open one per
    process (an event hook opens one per run and closes it).
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *,
                 timeout: float, readonly: bool) -> None:
        # Use Journal.open(); this only wires an already prepared connection.
        self._conn = conn
        self.path = path
        self.timeout = timeout
        self.readonly = readonly
        self._pid = os.getpid()
        self._depth = 0
        self._sync_on_commit = False

    # -- opening -------------------------------------------------------------

    @classmethod
    def open(cls, path: Union[str, os.PathLike], *, timeout: float = 5.0,
             readonly: bool = False) -> "Journal":
        """Open (creating and migrating as needed) the journal at ``path``.

        ``timeout`` bounds every wait for another process's lock; event hooks
        pass ``HOOK_TIMEOUT``.  ``readonly`` never creates, migrates or writes.
        Raises ``RetryableError`` (locked, disk full, read-only filesystem),
        ``SchemaError`` (newer or foreign file) or ``JournalError``.
        """
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise ValueError(f"journal timeout must be a number of seconds >= 0, not {timeout!r}")
        path = Path(os.fspath(path)).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if readonly:
            conn = cls._connect_readonly(path, timeout)
        else:
            cls._create_file(path)
            conn = cls._connect(path, timeout)
        journal = cls(conn, path, timeout=timeout, readonly=readonly)
        try:
            journal._prepare()
        except BaseException:
            conn.close()
            raise
        return journal

    @staticmethod
    def _create_file(path: Path) -> None:
        parent = path.parent
        try:
            if not parent.is_dir():
                # Create what is missing; the directories we make are ours alone.
                missing = []
                p = parent
                while not p.exists():
                    missing.append(p)
                    p = p.parent
                for d in reversed(missing):
                    try:
                        os.mkdir(d, 0o700)
                    except FileExistsError:
                        continue       # another process made it meanwhile
                    os.chmod(d, 0o700)  # exact mode whatever the umask
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return
            try:
                os.fchmod(fd, 0o600)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _os_error(path, "create", exc) from None

    @staticmethod
    def _connect(path: Path, timeout: float) -> sqlite3.Connection:
        try:
            # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves
            # instead of the module's implicit deferred transactions.
            conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise _translate(exc, path, timeout, "open") from None
        conn.row_factory = sqlite3.Row
        return conn

    @staticmethod
    def _connect_readonly(path: Path, timeout: float) -> sqlite3.Connection:
        if not path.exists():
            raise JournalError(f"no journal at {path} (the agent creates it on its first cycle)")
        uri = "file:" + urllib.parse.quote(str(path)) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise _translate(exc, path, timeout, "open") from None
        conn.row_factory = sqlite3.Row
        return conn

    def _prepare(self) -> None:
        conn = self._conn
        with self._translating("open"):
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")   # see module docstring
            # Keep the WAL from staying huge after a burst (e.g. 10,000 new jobs).
            conn.execute("PRAGMA journal_size_limit = 16777216")
            if self.readonly:
                conn.execute("PRAGMA query_only = ON")
            # One snapshot, so a file another process is creating right now
            # is seen either before or after its first migration, never between.
            conn.execute("BEGIN")
            try:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master"
                                      " WHERE name NOT LIKE 'sqlite_%'").fetchone()[0]
            finally:
                conn.execute("COMMIT")
        if app_id not in (0, APPLICATION_ID):
            raise SchemaError(f"{self.path} is not a pbs-globus-staging journal "
                              f"(application_id {app_id:#x}); point the journal setting elsewhere")
        if version == 0 and tables:
            raise SchemaError(f"{self.path} is an SQLite file with other tables, not a "
                              "pbs-globus-staging journal; point the journal setting elsewhere")
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"journal {self.path} has schema version {version}, newer than this "
                f"program's {SCHEMA_VERSION}; upgrade pbs-globus-staging on this host "
                "(the file was left untouched)")
        if self.readonly:
            if version < SCHEMA_VERSION:
                raise SchemaError(
                    f"journal {self.path} has schema version {version}, older than this "
                    f"program's {SCHEMA_VERSION}; it is migrated on the next read-write "
                    "open (e.g. the next agent cycle)")
            return
        mode = self._switch_to_wal()
        if mode.lower() != "wal":
            raise JournalError(f"journal {self.path}: cannot use WAL mode (got {mode!r}); "
                               "put the journal on a local filesystem")
        if version < SCHEMA_VERSION:
            self._migrate()

    def _switch_to_wal(self) -> str:
        # Switching a new file to WAL needs an exclusive lock, and SQLite
        # answers "locked" at once, without its busy handler, when a process
        # creating the same file holds any lock.  So wait here, within timeout.
        deadline = time.monotonic() + self.timeout
        pause = 0.002
        while True:
            try:
                mode = self._conn.execute("PRAGMA journal_mode").fetchone()[0]
                if mode.lower() != "wal":
                    mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                return str(mode)
            except sqlite3.OperationalError as exc:
                low = str(exc).lower()
                if ("locked" not in low and "busy" not in low) or time.monotonic() >= deadline:
                    raise _translate(exc, self.path, self.timeout, "open") from None
            except sqlite3.Error as exc:
                raise _translate(exc, self.path, self.timeout, "open") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _migrate(self) -> None:
        while True:
            with self.transaction():
                # Re-read under the write lock: another process may have
                # created or migrated the file since we first looked.
                version = self._conn.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    return
                if version == 0:
                    tables = self._conn.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                    ).fetchone()[0]
                    if tables:
                        raise SchemaError(
                            f"{self.path} is an SQLite file with other tables, not a "
                            "pbs-globus-staging journal; point the journal setting elsewhere")
                for statement in MIGRATIONS[version]:
                    self._exec(statement)
                # PRAGMA takes no parameters; the value is our own int.
                self._exec(f"PRAGMA user_version = {version + 1:d}")

    @property
    def schema_version(self) -> int:
        return self._query1("PRAGMA user_version")[0]

    def close(self) -> None:
        if self._pid != os.getpid():
            return   # a forked child must not touch its parent's SQLite state
        self._conn.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {self.path}{' (read-only)' if self.readonly else ''}>"

    # -- transactions and statement helpers ------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator["Journal"]:
        """One write transaction (``BEGIN IMMEDIATE``); commits on success,
        rolls back on any exception (KeyboardInterrupt from a hook alarm too).

        Nested use joins the outer transaction through a savepoint, so an inner
        failure the caller catches undoes only the inner part.  ``durable``
        makes the commit survive a power cut (see the module docstring); an
        inner durable block makes the whole outer commit durable.
        """
        self._check_usable(write=True)
        if self._depth:
            name = f"sp{self._depth}"
            self._exec(f"SAVEPOINT {name}")
            self._depth += 1
            if durable:
                self._sync_on_commit = True
            try:
                yield self
            except BaseException:
                self._depth -= 1
                try:
                    self._exec(f"ROLLBACK TO {name}")
                    self._exec(f"RELEASE {name}")
                except errors.StagingError:
                    pass   # SQLite already rolled the whole transaction back
                raise
            self._depth -= 1
            self._exec(f"RELEASE {name}")
            return
        if self._conn.in_transaction:
            # Left open by an interrupt (a hook alarm) between BEGIN and here.
            self._rollback()
        self._exec("BEGIN IMMEDIATE")
        self._depth = 1
        self._sync_on_commit = durable
        try:
            yield self
        except BaseException:
            self._depth = 0
            self._rollback()
            raise
        self._depth = 0
        try:
            self._exec("COMMIT")
        except BaseException:
            self._rollback()
            raise
        if self._sync_on_commit:
            self._sync_on_commit = False
            self._fsync_wal()

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            # SQLite has already rolled back (e.g. after SQLITE_FULL); nothing to undo.
            pass

    def _fsync_wal(self) -> None:
        """Make the commit just made survive a power cut: what synchronous=FULL
        would have done.  If the WAL is gone, a checkpoint has already moved
        (and synced) its frames into the database file."""
        wal = f"{self.path}-wal"
        try:
            fd = os.open(wal, os.O_RDONLY)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error(Path(wal), "sync", exc) from None
        try:
            getattr(os, "fdatasync", os.fsync)(fd)
        except OSError as exc:
            raise _os_error(Path(wal), "sync", exc) from None
        finally:
            os.close(fd)

    def _check_usable(self, *, write: bool = False) -> None:
        if self._pid != os.getpid():
            raise JournalError("journal connection used in a forked child; open a new one")
        if write and self.readonly:
            raise JournalError(f"journal {self.path} was opened read-only")

    @contextlib.contextmanager
    def _translating(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self.path, self.timeout, what) from None

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self._translating("write" if self._depth else "read"):
            return self._conn.execute(sql, params)

    def _execmany(self, sql: str, rows: Iterable[Sequence[Any]]) -> sqlite3.Cursor:
        with self._translating("write"):
            return self._conn.executemany(sql, rows)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> List[sqlite3.Row]:
        self._check_usable()
        with self._translating("read"):
            return self._conn.execute(sql, params).fetchall()

    def _query1(self, sql: str, params: Sequence[Any] = ()) -> Optional[sqlite3.Row]:
        self._check_usable()
        with self._translating("read"):
            return self._conn.execute(sql, params).fetchone()

    # -- jobs ----------------------------------------------------------------

    _UPSERT_JOB = (
        "INSERT INTO jobs (job_id, owner, queue, array_parent, priority, qtime,"
        " exit_status, obit_time, stage_state, comment, first_seen, last_seen)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (job_id) DO UPDATE SET"
        " owner = excluded.owner,"
        " queue = COALESCE(excluded.queue, queue),"
        " array_parent = COALESCE(excluded.array_parent, array_parent),"
        " priority = COALESCE(excluded.priority, priority),"
        " qtime = COALESCE(excluded.qtime, qtime),"
        " exit_status = COALESCE(excluded.exit_status, exit_status),"
        " obit_time = COALESCE(excluded.obit_time, obit_time),"
        " stage_state = COALESCE(excluded.stage_state, stage_state),"
        " comment = COALESCE(excluded.comment, comment),"
        " last_seen = excluded.last_seen,"
        " gone_since = NULL")

    @staticmethod
    def _job_params(row: Mapping[str, Any], now: float) -> Tuple[Any, ...]:
        unknown = set(row) - set(_JOB_FIELDS) - {"job_id"}
        if unknown:
            raise ValueError(f"unknown job field(s) {', '.join(sorted(unknown))}; "
                             f"expected job_id and any of {', '.join(_JOB_FIELDS)}")
        if not row.get("job_id") or not row.get("owner"):
            raise ValueError(f"a job needs a job_id and an owner, got {dict(row)!r}")
        return (row["job_id"],) + tuple(row.get(f) for f in _JOB_FIELDS) + (now, now)

    def upsert_job(self, job_id: str, *, owner: str, queue: Optional[str] = None,
                   array_parent: Optional[str] = None, priority: Optional[int] = None,
                   qtime: Optional[float] = None, exit_status: Optional[int] = None,
                   obit_time: Optional[float] = None, stage_state: Optional[str] = None,
                   comment: Optional[str] = None, now: Optional[float] = None) -> None:
        """Insert or refresh a job seen in PBS.  A field passed as None keeps
        its stored value; the job counts as seen (``last_seen = now``, not gone)."""
        self.upsert_jobs([dict(job_id=job_id, owner=owner, queue=queue,
                               array_parent=array_parent, priority=priority, qtime=qtime,
                               exit_status=exit_status, obit_time=obit_time,
                               stage_state=stage_state, comment=comment)], now=now)

    def upsert_jobs(self, rows: Iterable[Mapping[str, Any]], *,
                    now: Optional[float] = None) -> int:
        """``upsert_job`` for many jobs in one transaction; returns the count."""
        t = _now(now)
        params = [self._job_params(r, t) for r in rows]
        with self.transaction():
            self._execmany(self._UPSERT_JOB, params)
        return len(params)

    def get_job(self, job_id: str) -> Optional[JobRow]:
        row = self._query1("SELECT * FROM jobs WHERE job_id = ?", (job_id,))
        return _row(JobRow, row) if row else None

    def jobs(self, *, owner: Optional[str] = None,
             stage_state: Union[None, str, Iterable[str]] = None,
             present: Optional[bool] = None, array_parent: Optional[str] = None,
             job_ids: Optional[Iterable[str]] = None) -> List[JobRow]:
        """Jobs matching every filter given.  ``present=True``: not marked gone."""
        where, params = [], []  # type: List[str], List[Any]
        if owner is not None:
            where.append("owner = ?")
            params.append(owner)
        states = _words(stage_state)
        if states is not None:
            where.append(_in_clause("stage_state", states))
            params.extend(states)
        if present is not None:
            where.append("gone_since IS NULL" if present else "gone_since IS NOT NULL")
        if array_parent is not None:
            where.append("array_parent = ?")
            params.append(array_parent)
        ids: Optional[List[str]] = None
        if job_ids is not None:
            ids = list(dict.fromkeys(job_ids))
            if not ids:
                return []
        sql = "SELECT * FROM jobs"
        out: List[JobRow] = []
        # Old SQLite allows 999 parameters per statement: ask in chunks.
        for start in range(0, len(ids) if ids is not None else 1, 500):
            clauses, chunk_params = list(where), list(params)
            if ids is not None:
                chunk = ids[start:start + 500]
                clauses.append(_in_clause("job_id", chunk))
                chunk_params.extend(chunk)
            text = sql + (" WHERE " + " AND ".join(clauses) if clauses else "")
            out.extend(_row(JobRow, r) for r in self._query(text, chunk_params))
        out.sort(key=lambda j: j.job_id)
        return out

    def mark_job_seen(self, job_ids: Iterable[str], *, now: Optional[float] = None) -> int:
        """The jobs PBS still lists this cycle: ``last_seen = now``, not gone.
        Unknown ids are ignored.  Returns how many jobs were updated."""
        t = _now(now)
        params = [(t, j) for j in job_ids]
        with self.transaction():
            cur = self._execmany(
                "UPDATE jobs SET last_seen = ?, gone_since = NULL WHERE job_id = ?", params)
        return cur.rowcount

    def mark_gone(self, job_id: Union[str, Iterable[str]], *,
                  now: Optional[float] = None) -> int:
        """PBS no longer lists the job(s): remember since when (first time only)."""
        ids = [job_id] if isinstance(job_id, str) else list(job_id)
        t = _now(now)
        with self.transaction():
            cur = self._execmany(
                "UPDATE jobs SET gone_since = COALESCE(gone_since, ?) WHERE job_id = ?",
                [(t, j) for j in ids])
        return cur.rowcount

    # -- requests --------------------------------------------------------------

    def add_request(self, *, job_id: str, direction: str, owner: str, identity: str,
                    raw: str, normalized: str, request_key: str, state: str,
                    message: Optional[str] = None, action: Optional[str] = None,
                    now: Optional[float] = None) -> int:
        """Record a job's stage-in or stage-out request; idempotent on
        (job_id, direction): when one exists its id is returned unchanged."""
        if direction not in DIRECTIONS:
            raise ValueError(f"request direction must be {_or(Direction)}, not {direction!r}")
        check_transition(None, state)
        t = _now(now)
        with self.transaction():
            self._exec(
                "INSERT INTO requests (job_id, direction, owner, identity, raw, normalized,"
                " request_key, state, message, action, created, updated)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (job_id, direction) DO NOTHING",
                (job_id, direction, owner, identity, raw, normalized, request_key,
                 state, message, action, t, t))
            row = self._query1("SELECT request_id FROM requests WHERE job_id = ? AND direction = ?",
                               (job_id, direction))
        assert row is not None
        return int(row[0])

    def get_request(self, request_id: int) -> Optional[RequestRow]:
        row = self._query1("SELECT * FROM requests WHERE request_id = ?", (request_id,))
        return _row(RequestRow, row) if row else None

    def requests_for_job(self, job_id: str) -> List[RequestRow]:
        return [_row(RequestRow, r) for r in self._query(
            "SELECT * FROM requests WHERE job_id = ? ORDER BY direction", (job_id,))]

    def requests(self, *, state: Union[None, str, Iterable[str]] = None,
                 direction: Optional[str] = None, owner: Optional[str] = None,
                 identity: Optional[str] = None, due: Optional[float] = None
                 ) -> List[RequestRow]:
        """Requests matching every filter given.  ``due=t``: only those whose
        ``next_attempt`` is unset or not after ``t`` (retry backoff)."""
        where, params = [], []  # type: List[str], List[Any]
        states = _words(state)
        if states is not None:
            where.append(_in_clause("state", states))
            params.extend(states)
        for column, value in (("direction", direction), ("owner", owner), ("identity", identity)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if due is not None:
            where.append("(next_attempt IS NULL OR next_attempt <= ?)")
            params.append(due)
        sql = "SELECT * FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_row(RequestRow, r) for r in self._query(sql + " ORDER BY request_id", params)]

    def find_requests_by_key(self, request_key: str) -> List[RequestRow]:
        """Requests with the same normalized content key (candidates for
        sharing one transfer)."""
        return [_row(RequestRow, r) for r in self._query(
            "SELECT * FROM requests WHERE request_key = ? ORDER BY request_id", (request_key,))]

    def set_request_state(self, request_id: int, state: str, *,
                          message: Optional[str] = None, action: Optional[str] = None,
                          next_attempt: Optional[float] = None, count_attempt: bool = False,
                          now: Optional[float] = None) -> None:
        """Move a request to ``state``.  ``message``/``action``/``next_attempt``
        are replaced (None clears them: they describe the current state only);
        ``count_attempt`` adds one to ``attempts``.  A move that
        ``states.REQUEST_TRANSITIONS`` does not allow raises ``IllegalTransition``
        (and writes nothing)."""
        with self.transaction():
            self._check_request_move(request_id, state)
            cur = self._exec(
                "UPDATE requests SET state = ?, message = ?, action = ?, next_attempt = ?,"
                " attempts = attempts + ?, updated = ? WHERE request_id = ?",
                (state, message, action, next_attempt, 1 if count_attempt else 0,
                 _now(now), request_id))
            if cur.rowcount != 1:
                raise KeyError(f"no request {request_id} in the journal")

    def update_request(self, request_id: int, *, now: Optional[float] = None,
                       **fields: Any) -> None:
        """Change whitelisted request columns (e.g. after ``qalter`` edits a
        request that is still waiting)."""
        bad = set(fields) - _REQUEST_MUTABLE
        if bad:
            raise ValueError(f"cannot update request column(s) {', '.join(sorted(bad))}; "
                             f"allowed: {', '.join(sorted(_REQUEST_MUTABLE))}")
        if not fields:
            return
        cols = sorted(fields)
        sql = ("UPDATE requests SET " + ", ".join(f"{c} = ?" for c in cols)
               + ", updated = ? WHERE request_id = ?")
        with self.transaction():
            if "state" in fields:
                self._check_request_move(request_id, fields["state"])
            cur = self._exec(sql, [fields[c] for c in cols] + [_now(now), request_id])
            if cur.rowcount != 1:
                raise KeyError(f"no request {request_id} in the journal")

    def _check_request_move(self, request_id: int, state: str) -> None:
        row = self._query1("SELECT state FROM requests WHERE request_id = ?", (request_id,))
        if row is None:
            raise KeyError(f"no request {request_id} in the journal")
        try:
            check_transition(row[0], state)
        except IllegalTransition as exc:
            raise IllegalTransition(f"request {request_id}: {exc}") from None

    # -- transfers -------------------------------------------------------------

    def create_transfer(self, *, identity: str, direction: Optional[str],
                        source_collection: Optional[str], destination_collection: Optional[str],
                        options: Optional[Mapping[str, Any]] = None, label: Optional[str] = None,
                        deadline: Optional[str] = None, submission_id: Optional[str] = None,
                        task_id: Optional[str] = None, grafted: bool = False,
                        status: str = Transfer.NEW, items: Iterable[Union[ItemSpec, Mapping[str, Any]]] = (),
                        now: Optional[float] = None) -> int:
        """Record a transfer (and its items) in one transaction; returns its id.

        With a ``submission_id`` the commit is durable: the id is on disk
        before the caller submits.
        """
        if direction is not None and direction not in DIRECTIONS:
            raise ValueError(f"transfer direction must be {_or(Direction)}, not {direction!r}")
        _check_status(status)
        t = _now(now)
        with self.transaction(durable=submission_id is not None):
            for column, value in (("submission_id", submission_id), ("task_id", task_id)):
                if value is not None:
                    self._check_unused(column, value, None)
            cur = self._exec(
                "INSERT INTO transfers (identity, direction, source_collection,"
                " destination_collection, options, label, deadline, submission_id, task_id,"
                " grafted, status, created, submitted) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (identity, direction, source_collection, destination_collection,
                 _dumps(dict(options)) if options else None, label, deadline, submission_id,
                 task_id, 1 if grafted else 0, status, t, t if task_id else None))
            transfer_id = int(cur.lastrowid)
            self.add_items(transfer_id, items)
        return transfer_id

    def add_items(self, transfer_id: int,
                  items: Iterable[Union[ItemSpec, Mapping[str, Any]]]) -> List[int]:
        """Add items to a transfer; returns their ids in order."""
        specs = [_item_spec(i) for i in items]
        ids = []
        with self.transaction():
            for s in specs:
                cur = self._exec(
                    "INSERT INTO transfer_items (transfer_id, request_id, source_path,"
                    " destination_path, recursive) VALUES (?,?,?,?,?)",
                    (transfer_id, s.request_id, s.source_path, s.destination_path,
                     1 if s.recursive else 0))
                ids.append(int(cur.lastrowid))
        return ids

    def _check_unused(self, column: str, value: str, transfer_id: Optional[int]) -> None:
        row = self._query1(f"SELECT transfer_id FROM transfers WHERE {column} = ?", (value,))
        if row is not None and row[0] != transfer_id:
            raise ConflictError(f"{column} {value} already belongs to transfer {row[0]}")

    def _set_once(self, transfer_id: int, column: str, value: str, extra: str = "",
                  extra_params: Sequence[Any] = ()) -> None:
        current = self._query1(f"SELECT {column} FROM transfers WHERE transfer_id = ?",
                               (transfer_id,))
        if current is None:
            raise KeyError(f"no transfer {transfer_id} in the journal")
        if current[0] == value:
            return
        if current[0] is not None:
            raise ConflictError(f"transfer {transfer_id} already has {column} {current[0]}; "
                                f"it never changes once set (refusing {value})")
        self._check_unused(column, value, transfer_id)
        self._exec(f"UPDATE transfers SET {column} = ?{extra} WHERE transfer_id = ?",
                   (value, *extra_params, transfer_id))

    def set_submission_id(self, transfer_id: int, submission_id: str) -> None:
        """Persist (durably) the id the submit call will carry.  Setting the
        same id again is a no-op; a different one is a ConflictError."""
        if not submission_id:
            raise ValueError("submission_id must be a non-empty string")
        with self.transaction(durable=True):
            self._set_once(transfer_id, "submission_id", submission_id)

    def set_task_id(self, transfer_id: int, task_id: str, *, now: Optional[float] = None) -> None:
        """Record the Globus task id (and, first time, when it was submitted)."""
        if not task_id:
            raise ValueError("task_id must be a non-empty string")
        with self.transaction():
            self._set_once(transfer_id, "task_id", task_id,
                           ", submitted = COALESCE(submitted, ?)", (_now(now),))

    def update_transfer(self, transfer_id: int, *, now: Optional[float] = None,
                        **fields: Any) -> None:
        """Change whitelisted transfer columns.  A status that finishes the
        transfer also sets ``completed`` (to ``now``) unless given or set."""
        bad = set(fields) - _TRANSFER_MUTABLE
        if bad:
            raise ValueError(f"cannot update transfer column(s) {', '.join(sorted(bad))}; "
                             f"allowed: {', '.join(sorted(_TRANSFER_MUTABLE))}")
        if "status" in fields:
            _check_status(fields["status"])
        if "options" in fields:
            fields["options"] = _dumps(fields["options"]) if fields["options"] else None
        if "grafted" in fields:
            fields["grafted"] = 1 if fields["grafted"] else 0
        if not fields:
            return
        cols = sorted(fields)
        sets = [f"{c} = ?" for c in cols]
        params = [fields[c] for c in cols]
        if fields.get("status") in FINISHED_STATUSES and "completed" not in fields:
            sets.append("completed = COALESCE(completed, ?)")
            params.append(_now(now))
        with self.transaction():
            cur = self._exec(f"UPDATE transfers SET {', '.join(sets)} WHERE transfer_id = ?",
                             params + [transfer_id])
            if cur.rowcount != 1:
                raise KeyError(f"no transfer {transfer_id} in the journal")

    def get_transfer(self, transfer_id: int) -> Optional[TransferRow]:
        row = self._query1("SELECT * FROM transfers WHERE transfer_id = ?", (transfer_id,))
        return _row(TransferRow, row) if row else None

    def transfer_by_task_id(self, task_id: str) -> Optional[TransferRow]:
        row = self._query1("SELECT * FROM transfers WHERE task_id = ?", (task_id,))
        return _row(TransferRow, row) if row else None

    def transfer_by_submission_id(self, submission_id: str) -> Optional[TransferRow]:
        row = self._query1("SELECT * FROM transfers WHERE submission_id = ?", (submission_id,))
        return _row(TransferRow, row) if row else None

    def transfers(self, *, status: Union[None, str, Iterable[str]] = None,
                  identity: Optional[str] = None, direction: Optional[str] = None
                  ) -> List[TransferRow]:
        where, params = [], []  # type: List[str], List[Any]
        statuses = _words(status)
        if statuses is not None:
            for s in statuses:
                _check_status(s)
            where.append(_in_clause("status", statuses))
            params.extend(statuses)
        for column, value in (("identity", identity), ("direction", direction)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        sql = "SELECT * FROM transfers"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_row(TransferRow, r) for r in self._query(sql + " ORDER BY transfer_id", params)]

    def transfers_for_request(self, request_id: int) -> List[TransferRow]:
        """The transfers a request waits on (through its items)."""
        return [_row(TransferRow, r) for r in self._query(
            "SELECT * FROM transfers WHERE transfer_id IN"
            " (SELECT transfer_id FROM transfer_items WHERE request_id = ?)"
            " ORDER BY transfer_id", (request_id,))]

    def unsettled_transfer_ids(self) -> List[int]:
        """Finished transfers with items still marked pending: what an agent
        killed between recording a task's end and settling its items left."""
        return [int(r[0]) for r in self._query(
            "SELECT DISTINCT t.transfer_id FROM transfers t"
            " JOIN transfer_items i ON i.transfer_id = t.transfer_id"
            f" WHERE t.status IN {_FINISHED_SQL} AND i.outcome = {_q(Item.PENDING)}"
            " ORDER BY t.transfer_id", ())]

    def settled_request_ids(self, states: Iterable[str]) -> List[int]:
        """Requests in one of ``states`` none of whose items is pending any more
        (their own state may lag behind after a crash)."""
        words = list(states)
        return [int(r[0]) for r in self._query(
            "SELECT r.request_id FROM requests r WHERE " + _in_clause("r.state", words) +
            " AND EXISTS (SELECT 1 FROM transfer_items i WHERE i.request_id = r.request_id)"
            " AND NOT EXISTS (SELECT 1 FROM transfer_items i WHERE i.request_id = r.request_id"
            f" AND i.outcome = {_q(Item.PENDING)}) ORDER BY r.request_id", words)]

    def retire_failed_items(self, request_id: int) -> int:
        """Detach a request from the items that failed it, before a retry: the
        transfer rows stay (history: task ids, messages), the request starts
        afresh.  Rows are deleted, not pointed at NULL, since settling a
        transfer reads each item's request."""
        with self.transaction():
            cur = self._exec("DELETE FROM transfer_items"
                             " WHERE request_id = ? AND outcome = ?", (request_id, Item.FAILED))
        return cur.rowcount

    def drop_request_items(self, request_id: int,
                           transfer_ids: Optional[Iterable[int]] = None) -> List[int]:
        """Detach a request from (some of) its transfers; returns their ids."""
        wanted = None if transfer_ids is None else set(transfer_ids)
        tids = sorted({i.transfer_id for i in self.items_for_request(request_id)
                       if wanted is None or i.transfer_id in wanted})
        with self.transaction():
            for tid in tids:
                self._exec("DELETE FROM transfer_items WHERE request_id = ? AND transfer_id = ?",
                           (request_id, tid))
        return tids

    def alerts_for_job(self, job_id: str) -> List[AlertRow]:
        """The alerts recorded about one job (ledger keys start ``JOB:``)."""
        like = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
        return [_row(AlertRow, r) for r in self._query(
            "SELECT * FROM alerts WHERE key LIKE ? ESCAPE '\\' ORDER BY first_sent", (like,))]

    def mark_settled_jobs_gone(self, *, seen_before: float, final_states: Iterable[str],
                               now: Optional[float] = None) -> int:
        """Jobs PBS no longer lists whose requests are all settled: they are
        history now (``prune`` removes them after the retention time)."""
        words = list(final_states)
        with self.transaction():
            cur = self._exec(
                "UPDATE jobs SET gone_since = ? WHERE gone_since IS NULL"
                " AND (last_seen IS NULL OR last_seen < ?)"
                " AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.job_id = jobs.job_id AND NOT "
                + _in_clause("r.state", words) + ")", [_now(now), seen_before] + words)
        return cur.rowcount

    def requests_of_unseen_jobs(self, *, states: Iterable[str], direction: str,
                                seen_before: float) -> List[RequestRow]:
        """Requests in ``states`` whose job PBS did not list at ``seen_before``
        (``mark_job_seen``) and that are not yet known to be gone."""
        words = list(states)
        return [_row(RequestRow, r) for r in self._query(
            "SELECT r.* FROM requests r JOIN jobs jb ON jb.job_id = r.job_id WHERE "
            + _in_clause("r.state", words) + " AND r.direction = ?"
            " AND (jb.last_seen IS NULL OR jb.last_seen < ?) AND jb.gone_since IS NULL"
            " ORDER BY r.request_id", words + [direction, seen_before])]

    def requests_for_jobs(self, job_ids: Iterable[str]) -> List[RequestRow]:
        """The requests of many jobs in a few queries (the agent's per-cycle view)."""
        ids = list(job_ids)
        out: List[RequestRow] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            out.extend(_row(RequestRow, r) for r in self._query(
                "SELECT * FROM requests WHERE " + _in_clause("job_id", chunk), chunk))
        return out

    def transfers_by_request(self, request_ids: Iterable[int]
                             ) -> Dict[int, List[TransferRow]]:
        """request_id -> the transfers it waits on, for many requests at once."""
        ids = list(request_ids)
        out: Dict[int, List[TransferRow]] = {rid: [] for rid in ids}
        cache: Dict[int, TransferRow] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in self._query(
                    "SELECT DISTINCT i.request_id AS _rid, t.* FROM transfer_items i"
                    " JOIN transfers t ON t.transfer_id = i.transfer_id WHERE "
                    + _in_clause("i.request_id", chunk) + " ORDER BY t.transfer_id", chunk):
                tid = r["transfer_id"]
                if tid not in cache:
                    cache[tid] = _row(TransferRow, r)
                out[r["_rid"]].append(cache[tid])
        return out

    def items_for_request(self, request_id: int) -> List[ItemRow]:
        return [_row(ItemRow, r) for r in self._query(
            "SELECT * FROM transfer_items WHERE request_id = ? ORDER BY item_id", (request_id,))]

    def items_for_transfer(self, transfer_id: int) -> List[ItemRow]:
        return [_row(ItemRow, r) for r in self._query(
            "SELECT * FROM transfer_items WHERE transfer_id = ? ORDER BY item_id", (transfer_id,))]

    def set_item_outcome(self, item_id: int, outcome: str, *,
                         message: Optional[str] = None) -> None:
        _check_outcome(outcome)
        with self.transaction():
            cur = self._exec("UPDATE transfer_items SET outcome = ?, message = ? WHERE item_id = ?",
                             (outcome, message, item_id))
            if cur.rowcount != 1:
                raise KeyError(f"no transfer item {item_id} in the journal")

    def set_transfer_outcome(self, transfer_id: int, outcome: str, *,
                             message: Optional[str] = None) -> int:
        """Set the outcome of every still-pending item of a transfer (a task
        succeeds or fails as a whole); returns how many items changed."""
        _check_outcome(outcome)
        with self.transaction():
            cur = self._exec(
                "UPDATE transfer_items SET outcome = ?, message = ?"
                " WHERE transfer_id = ? AND outcome = ?",
                (outcome, message, transfer_id, Item.PENDING))
        return cur.rowcount

    def request_satisfied(self, request_id: int) -> Optional[bool]:
        """True when all the request's items succeeded, False when any failed,
        None while some are pending or none exist yet."""
        row = self._query1(
            "SELECT count(*), sum(outcome = ?), sum(outcome = ?)"
            " FROM transfer_items WHERE request_id = ?", (Item.SUCCEEDED, Item.FAILED, request_id))
        total, ok, failed = row[0], row[1] or 0, row[2] or 0
        if failed:
            return False
        if total and ok == total:
            return True
        return None

    # -- events ------------------------------------------------------------------

    def add_event(self, job_id: Optional[str], kind: str, message: Optional[str] = None, *,
                  request_id: Optional[int] = None, transfer_id: Optional[int] = None,
                  data: Any = None, at: Optional[float] = None) -> int:
        if not kind:
            raise ValueError("an event needs a kind")
        with self.transaction():
            cur = self._exec(
                "INSERT INTO events (time, job_id, request_id, transfer_id, kind, message, data)"
                " VALUES (?,?,?,?,?,?,?)",
                (_now(at), job_id, request_id, transfer_id, kind, message, _dumps(data)))
        return int(cur.lastrowid)

    def events(self, job_id: Optional[str] = None, *, transfer_id: Optional[int] = None,
               kind: Union[None, str, Iterable[str]] = None, since: Optional[float] = None,
               limit: Optional[int] = None) -> List[EventRow]:
        """Events in the order written, filtered; ``limit`` keeps the newest."""
        where, params = [], []  # type: List[str], List[Any]
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
        if transfer_id is not None:
            where.append("transfer_id = ?")
            params.append(transfer_id)
        kinds = _words(kind)
        if kinds is not None:
            where.append(_in_clause("kind", kinds))
            params.extend(kinds)
        if since is not None:
            where.append("time >= ?")
            params.append(since)
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY event_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        rows = self._query(sql, params)
        rows.reverse()
        return [_row(EventRow, r) for r in rows]

    # -- alerts ------------------------------------------------------------------

    def alert_state(self, rule: str, key: str) -> Optional[AlertRow]:
        row = self._query1("SELECT * FROM alerts WHERE rule = ? AND key = ?", (rule, key))
        return _row(AlertRow, row) if row else None

    def mark_alert(self, rule: str, key: str, *, at: Optional[float] = None) -> AlertRow:
        """Record that an alert was sent (first time or again)."""
        t = _now(at)
        with self.transaction():
            self._exec(
                "INSERT INTO alerts (rule, key, first_sent, last_sent, count) VALUES (?,?,?,?,1)"
                " ON CONFLICT (rule, key) DO UPDATE SET last_sent = excluded.last_sent,"
                " count = count + 1", (rule, key, t, t))
            row = self._query1("SELECT * FROM alerts WHERE rule = ? AND key = ?", (rule, key))
        return _row(AlertRow, row)

    def clear_alert(self, rule: str, key: str) -> bool:
        """Forget an alert (its condition is over), so a recurrence alerts anew."""
        with self.transaction():
            cur = self._exec("DELETE FROM alerts WHERE rule = ? AND key = ?", (rule, key))
        return cur.rowcount > 0

    # -- obits (the jobobit hook) -------------------------------------------------

    def record_obit(self, job_id: str, exit_status: Optional[int], *,
                    at: Optional[float] = None, owner: Optional[str] = None,
                    project: Optional[str] = None, stageout: Optional[str] = None) -> None:
        """The jobobit hook's one write: small and fast.  A rerun job ends
        again, so the latest obit replaces the earlier one.  With a stage-out
        request the commit is durable (fsynced): it may be the only record of
        results still to be sent."""
        with self.transaction(durable=stageout is not None):
            self._exec("INSERT OR REPLACE INTO obits (job_id, exit_status, time, owner, project,"
                       " stageout) VALUES (?,?,?,?,?,?)",
                       (job_id, exit_status, _now(at), owner, project, stageout))

    def obits_without_stageout_request(self, limit: int = 1000) -> List[ObitRow]:
        """Ended jobs whose stage-out request the agent has not registered yet."""
        rows = self._query(
            "SELECT * FROM obits o WHERE o.stageout IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM requests r WHERE r.job_id = o.job_id AND r.direction = ?)"
            " ORDER BY o.time LIMIT ?", (Direction.OUT, int(limit)))
        return [_row(ObitRow, r) for r in rows]

    def obit(self, job_id: str) -> Optional[ObitRow]:
        row = self._query1("SELECT * FROM obits WHERE job_id = ?", (job_id,))
        return _row(ObitRow, row) if row else None

    def obits(self, *, since: Optional[float] = None) -> List[ObitRow]:
        if since is None:
            rows = self._query("SELECT * FROM obits ORDER BY time")
        else:
            rows = self._query("SELECT * FROM obits WHERE time >= ? ORDER BY time", (since,))
        return [_row(ObitRow, r) for r in rows]

    # -- cycles --------------------------------------------------------------------

    def start_cycle(self, *, now: Optional[float] = None) -> int:
        with self.transaction():
            cur = self._exec("INSERT INTO cycles (started) VALUES (?)", (_now(now),))
        return int(cur.lastrowid)

    def finish_cycle(self, cycle_id: int, *, ok: bool, error: Optional[str] = None,
                     globus_calls: int = 0, pbs_calls: int = 0, cpu_seconds: float = 0.0,
                     jobs: int = 0, transfers: int = 0, now: Optional[float] = None) -> None:
        with self.transaction():
            cur = self._exec(
                "UPDATE cycles SET finished = ?, ok = ?, error = ?, globus_calls = ?,"
                " pbs_calls = ?, cpu_seconds = ?, jobs = ?, transfers = ? WHERE cycle_id = ?",
                (_now(now), 1 if ok else 0, error, globus_calls, pbs_calls, cpu_seconds,
                 jobs, transfers, cycle_id))
            if cur.rowcount != 1:
                raise KeyError(f"no cycle {cycle_id} in the journal")

    def last_cycles(self, n: int = 10) -> List[CycleRow]:
        """The ``n`` most recent cycles, newest first."""
        return [_row(CycleRow, r) for r in self._query(
            "SELECT * FROM cycles ORDER BY cycle_id DESC LIMIT ?", (int(n),))]

    # -- meta ----------------------------------------------------------------------

    def get_meta(self, key: str, default: Optional[str] = None) -> Optional[str]:
        row = self._query1("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else default

    def set_meta(self, key: str, value: Optional[str]) -> None:
        """Set (or with None, delete) a meta value."""
        with self.transaction():
            if value is None:
                self._exec("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._exec("INSERT OR REPLACE INTO meta (key, value) VALUES (?,?)", (key, str(value)))

    # -- housekeeping ----------------------------------------------------------------

    def counts(self) -> Dict[str, int]:
        """Rows per table (for ``globus-staging status`` and tests)."""
        out = {}
        for table in ("jobs", "requests", "transfers", "transfer_items", "events",
                      "alerts", "obits", "cycles", "meta"):
            out[table] = self._query1(f"SELECT count(*) FROM {table}")[0]
        return out

    def prune(self, *, older_than_days: float, now: Optional[float] = None) -> Dict[str, int]:
        """Delete finished history older than ``older_than_days``.

        Removed: jobs gone from PBS before the cutoff, with their requests
        (unless an unfinished transfer still carries their items), obits and
        events; finished transfers completed before the cutoff that no remaining
        request needs, with their items; older cycles, alerts and unattached
        events.  Returns rows deleted per table.
        """
        if older_than_days < 0:
            raise ValueError(f"older_than_days must be >= 0, not {older_than_days!r}")
        cutoff = _now(now) - older_than_days * 86400.0
        finished = _FINISHED_SQL
        out: Dict[str, int] = {}
        with self.transaction():
            self._exec("CREATE TEMP TABLE IF NOT EXISTS prune_jobs (job_id TEXT PRIMARY KEY)")
            self._exec("DELETE FROM prune_jobs")
            self._exec("INSERT INTO prune_jobs SELECT job_id FROM jobs"
                       " WHERE gone_since IS NOT NULL AND gone_since < ?", (cutoff,))
            # A request stays while an unfinished transfer still lists its items.
            self._exec(
                "DELETE FROM prune_jobs WHERE job_id IN (SELECT r.job_id FROM requests r"
                " JOIN transfer_items i ON i.request_id = r.request_id"
                f" JOIN transfers t ON t.transfer_id = i.transfer_id WHERE t.status NOT IN {finished})")
            # Items of the doomed requests go with them; their transfers may stay.
            out["transfer_items"] = self._exec(
                "DELETE FROM transfer_items WHERE request_id IN (SELECT request_id FROM requests"
                " WHERE job_id IN (SELECT job_id FROM prune_jobs))").rowcount
            out["requests"] = self._exec(
                "DELETE FROM requests WHERE job_id IN (SELECT job_id FROM prune_jobs)").rowcount
            out["obits"] = self._exec(
                "DELETE FROM obits WHERE job_id IN (SELECT job_id FROM prune_jobs)"
                " OR (time < ? AND job_id NOT IN (SELECT job_id FROM jobs))", (cutoff,)).rowcount
            out["jobs"] = self._exec(
                "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM prune_jobs)").rowcount
            doomed = ("SELECT transfer_id FROM transfers t WHERE t.status IN " + finished +
                      " AND COALESCE(t.completed, t.created) < ? AND NOT EXISTS (SELECT 1 FROM"
                      " transfer_items i WHERE i.transfer_id = t.transfer_id AND i.request_id"
                      " IS NOT NULL)")
            out["transfer_items"] += self._exec(
                f"DELETE FROM transfer_items WHERE transfer_id IN ({doomed})", (cutoff,)).rowcount
            out["transfers"] = self._exec(
                f"DELETE FROM transfers WHERE transfer_id IN ({doomed})", (cutoff,)).rowcount
            out["events"] = self._exec(
                "DELETE FROM events WHERE job_id IN (SELECT job_id FROM prune_jobs)"
                " OR (time < ? AND (job_id IS NULL OR job_id NOT IN (SELECT job_id FROM jobs)))",
                (cutoff,)).rowcount
            out["cycles"] = self._exec("DELETE FROM cycles WHERE started < ?", (cutoff,)).rowcount
            out["alerts"] = self._exec(
                "DELETE FROM alerts WHERE COALESCE(last_sent, first_sent) < ?", (cutoff,)).rowcount
            self._exec("DELETE FROM prune_jobs")
        return out

    def vacuum(self) -> None:
        """Give the space of pruned rows back to the filesystem (takes the
        write lock for as long as the copy lasts: run it off-peak)."""
        self._check_usable(write=True)
        if self._depth:
            raise JournalError("vacuum() cannot run inside a transaction")
        with self._translating("write"):
            self._conn.execute("VACUUM")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity_check(self) -> List[str]:
        """SQLite's own check plus foreign keys; an empty list means healthy."""
        problems = [r[0] for r in self._query("PRAGMA integrity_check") if r[0] != "ok"]
        problems += [f"foreign key: {tuple(r)}" for r in self._query("PRAGMA foreign_key_check")]
        return problems


# ---------------------------------------------------------------------------


def write_obit(path: Union[str, os.PathLike], job_id: str, exit_status: Optional[int], *,
               at: Optional[float] = None, timeout: float = HOOK_TIMEOUT) -> None:
    """Open, record one obit, close: all the jobobit hook needs.  Returns or
    raises (``RetryableError`` when locked) within about ``timeout`` seconds."""
    journal = Journal.open(path, timeout=timeout)
    try:
        journal.record_obit(job_id, exit_status, at=at)
    finally:
        journal.close()


def _or(vocabulary: Iterable[str]) -> str:
    words = [repr(str(w)) for w in vocabulary]
    return " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " or " + words[-1]


def _check_status(status: str) -> None:
    if status not in TRANSFER_STATUSES:
        raise ValueError(f"transfer status must be one of {', '.join(TRANSFER_STATUSES)}, "
                         f"not {status!r}")


def _check_outcome(outcome: str) -> None:
    if outcome not in ITEM_OUTCOMES:
        raise ValueError(f"item outcome must be one of {', '.join(ITEM_OUTCOMES)}, not {outcome!r}")


def _item_spec(item: Union[ItemSpec, Mapping[str, Any]]) -> ItemSpec:
    if isinstance(item, ItemSpec):
        spec = item
    elif isinstance(item, Mapping):
        try:
            spec = ItemSpec(request_id=item.get("request_id"), source_path=item["source_path"],
                            destination_path=item["destination_path"],
                            recursive=bool(item.get("recursive", False)))
        except KeyError as exc:
            raise ValueError(f"a transfer item needs {exc.args[0]}; expected keys request_id, "
                             "source_path, destination_path, recursive") from None
    else:
        raise ValueError(f"a transfer item must be an ItemSpec or a mapping, not {type(item).__name__}")
    if not spec.source_path or not spec.destination_path:
        raise ValueError(f"a transfer item needs both paths, got {spec!r}")
    return spec


def _os_error(path: Path, what: str, exc: OSError) -> errors.StagingError:
    text = f"cannot {what} journal {path}: {exc.strerror or exc}"
    if exc.errno in _TRANSIENT_ERRNOS:
        return errors.RetryableError(text)
    return JournalError(text)


def _translate(exc: sqlite3.Error, path: Path, timeout: float, what: str) -> errors.StagingError:
    """Map an sqlite3 error to the project's families, naming the file."""
    text = str(exc)
    low = text.lower()
    if "locked" in low or "busy" in low:
        return errors.RetryableError(
            f"journal is locked: {path} (another process held it for more than {timeout:g}s)")
    if "disk is full" in low or "database or disk is full" in low:
        return errors.RetryableError(f"journal {path}: disk full ({text})")
    if "readonly" in low or "read-only" in low:
        return errors.RetryableError(f"journal {path} is not writable: {text} "
                                     "(read-only filesystem or file?)")
    if "disk i/o error" in low or "unable to open" in low:
        return errors.RetryableError(f"journal {path}: cannot {what}: {text}")
    if isinstance(exc, sqlite3.IntegrityError):
        if "unique" in low:
            return ConflictError(f"journal {path}: {text}")
        return JournalError(f"journal {path}: {text}")
    if "malformed" in low or "not a database" in low:
        return JournalError(f"journal {path} is damaged ({text}); move it aside and let the "
                            "agent start a new one, or restore a copy")
    return JournalError(f"journal {path}: {what} failed: {text}")
