"""The ``requests`` table: one staging request per job and direction, whose
every state change goes through ``states.check_transition``.

Stdlib only, Python 3.6+.
"""

from typing import Any, Iterable, List, Optional, Union

from ..states import Direction, IllegalTransition, Item, check_transition
from .connection import Connection
from .rows import RequestRow, _in_clause, _now, _or, _row, _words
from .schema import DIRECTIONS, _q

_REQUEST_MUTABLE = frozenset({
    "raw", "normalized", "request_key", "identity", "state", "message",
    "action", "attempts", "next_attempt",
})


class RequestsTable(Connection):
    """Staging requests and their states."""

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

    def settled_request_ids(self, states: Iterable[str]) -> List[int]:
        """Requests in one of ``states`` none of whose items is pending any more
        (their own state may lag behind after a crash)."""
        words = list(states)
        return [int(r[0]) for r in self._query(
            "SELECT r.request_id FROM requests r WHERE " + _in_clause("r.state", words) +
            " AND EXISTS (SELECT 1 FROM transfer_items i WHERE i.request_id = r.request_id)"
            " AND NOT EXISTS (SELECT 1 FROM transfer_items i WHERE i.request_id = r.request_id"
            f" AND i.outcome = {_q(Item.PENDING)}) ORDER BY r.request_id", words)]

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
