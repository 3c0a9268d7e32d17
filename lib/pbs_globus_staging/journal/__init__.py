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

The package, by part (``Journal`` is all of them):

==================  =========================================================
``schema``          the vocabularies as SQL, the migrations, ``SCHEMA_VERSION``
``connection``      open/create/migrate, ``transaction()``, durability, errors
``rows``            the row dataclasses, ``ItemSpec``, shared helpers
``jobs``            ``jobs`` and ``obits`` (the jobobit hook's one write)
``requests``        ``requests``: every state change checked by the transition table
``transfers``       ``transfers`` and ``transfer_items``
``history``         ``events``, ``alerts``, ``cycles``, ``meta``
``housekeeping``    counts, prune, vacuum, integrity check
==================  =========================================================
"""

import os
from typing import Optional, Union

from ..states import IllegalTransition
from .connection import HOOK_TIMEOUT, ConflictError, JournalError, SchemaError
from .history import HistoryTables
from .housekeeping import Housekeeping
from .jobs import JobsTable
from .requests import RequestsTable
from .rows import (AlertRow, CycleRow, EventRow, ItemRow, ItemSpec, JobRow, ObitRow, RequestRow,
                   TransferRow)
from .schema import (APPLICATION_ID, DIRECTIONS, FINISHED_STATUSES, ITEM_OUTCOMES, MIGRATIONS,
                     SCHEMA_VERSION, TRANSFER_STATUSES)
from .transfers import TransfersTable

__all__ = [
    "Journal", "JournalError", "ConflictError", "SchemaError",
    "JobRow", "RequestRow", "TransferRow", "ItemRow", "EventRow", "AlertRow",
    "ObitRow", "CycleRow", "ItemSpec",
    "TRANSFER_STATUSES", "FINISHED_STATUSES", "ITEM_OUTCOMES", "SCHEMA_VERSION",
    "write_obit", "IllegalTransition", "HOOK_TIMEOUT", "MIGRATIONS", "APPLICATION_ID",
    "DIRECTIONS",
]


class Journal(JobsTable, RequestsTable, TransfersTable, HistoryTables, Housekeeping):
    """One open connection to the journal file.

    Not shared between threads, and not usable in a forked child: open one per
    process (an event hook opens one per run and closes it).  Open it with
    ``Journal.open(path)``.
    """


def write_obit(path: Union[str, os.PathLike], job_id: str, exit_status: Optional[int], *,
               at: Optional[float] = None, timeout: float = HOOK_TIMEOUT) -> None:
    """Open, record one obit, close: all the jobobit hook needs.  Returns or
    raises (``RetryableError`` when locked) within about ``timeout`` seconds."""
    journal = Journal.open(path, timeout=timeout)
    try:
        journal.record_obit(job_id, exit_status, at=at)
    finally:
        journal.close()
