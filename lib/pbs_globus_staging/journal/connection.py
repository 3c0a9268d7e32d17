"""One connection to the journal file: opening (create, WAL, migrate),
transactions, durability and the statement helpers the table parts use.

Stdlib only, Python 3.6+.  See the package docstring for the concurrency and
durability design.
"""

import contextlib
import errno
import os
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Union

from .. import errors
from . import schema

HOOK_TIMEOUT = 0.5   # what an event hook should pass: pbs_server must never stall


class JournalError(errors.StagingError):
    """The journal cannot be used as asked (corrupt, not ours, opened read-only,
    a misuse).  Not cured by waiting: a person has to look."""


class SchemaError(JournalError):
    """The file's schema is not one this program can use (newer, or foreign)."""


class ConflictError(JournalError, ValueError):
    """A write would break a uniqueness rule (a submission or task id already
    belongs to another transfer, or would change once set)."""


# errno values from opening the file that a later attempt may not meet again.
_TRANSIENT_ERRNOS = frozenset({
    errno.ENOSPC, errno.EROFS, errno.EIO, errno.EAGAIN, errno.EBUSY,
    errno.EINTR, errno.ENFILE, errno.EMFILE,
    getattr(errno, "EDQUOT", errno.ENOSPC), getattr(errno, "ESTALE", errno.EIO),
})


# ---------------------------------------------------------------------------


class Connection:
    """An open connection to the journal and its transaction machinery; the
    table parts (``jobs``, ``requests``, ``transfers``, ``history``,
    ``housekeeping``) add the queries.  Use ``Journal``, which is all of them."""


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
             readonly: bool = False) -> "Connection":
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
        if app_id not in (0, schema.APPLICATION_ID):
            raise SchemaError(f"{self.path} is not a pbs-globus-staging journal "
                              f"(application_id {app_id:#x}); point the journal setting elsewhere")
        if version == 0 and tables:
            raise SchemaError(f"{self.path} is an SQLite file with other tables, not a "
                              "pbs-globus-staging journal; point the journal setting elsewhere")
        if version > schema.SCHEMA_VERSION:
            raise SchemaError(
                f"journal {self.path} has schema version {version}, newer than this "
                f"program's {schema.SCHEMA_VERSION}; upgrade pbs-globus-staging on this host "
                "(the file was left untouched)")
        if self.readonly:
            if version < schema.SCHEMA_VERSION:
                raise SchemaError(
                    f"journal {self.path} has schema version {version}, older than this "
                    f"program's {schema.SCHEMA_VERSION}; it is migrated on the next read-write "
                    "open (e.g. the next agent cycle)")
            return
        mode = self._switch_to_wal()
        if mode.lower() != "wal":
            raise JournalError(f"journal {self.path}: cannot use WAL mode (got {mode!r}); "
                               "put the journal on a local filesystem")
        if version < schema.SCHEMA_VERSION:
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
                if version >= schema.SCHEMA_VERSION:
                    return
                if version == 0:
                    tables = self._conn.execute(
                        "SELECT count(*) FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
                    ).fetchone()[0]
                    if tables:
                        raise SchemaError(
                            f"{self.path} is an SQLite file with other tables, not a "
                            "pbs-globus-staging journal; point the journal setting elsewhere")
                for statement in schema.MIGRATIONS[version]:
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

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Journal {self.path}{' (read-only)' if self.readonly else ''}>"

    # -- transactions and statement helpers ------------------------------------

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator["Connection"]:
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
