"""The ``transfers`` and ``transfer_items`` tables: the Globus transfers made
for requests, and the items linking each transfer to the requests it serves.

Stdlib only, Python 3.6+.
"""

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from ..states import Direction, Item, Transfer
from .connection import ConflictError, Connection
from .schema import _FINISHED_SQL, DIRECTIONS, FINISHED_STATUSES, _q
from .rows import (ItemRow, ItemSpec, TransferRow, _check_outcome, _check_status, _dumps,
                   _in_clause, _item_spec, _now, _or, _row, _words)

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


class TransfersTable(Connection):
    """Transfers, their Globus ids, and their items' outcomes."""

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
