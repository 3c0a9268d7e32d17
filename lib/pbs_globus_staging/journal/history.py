"""What the journal remembers beside jobs and transfers: per-job event
history, alert state, per-cycle statistics and meta values.

Stdlib only, Python 3.6+.
"""

from typing import Any, Iterable, List, Optional, Union

from .connection import Connection
from .rows import AlertRow, CycleRow, EventRow, _dumps, _in_clause, _now, _row, _words


class HistoryTables(Connection):
    """Events, alerts, cycles and meta."""

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

    def alerts_for_job(self, job_id: str) -> List[AlertRow]:
        """The alerts recorded about one job (ledger keys start ``JOB:``)."""
        like = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
        return [_row(AlertRow, r) for r in self._query(
            "SELECT * FROM alerts WHERE key LIKE ? ESCAPE '\\' ORDER BY first_sent", (like,))]

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
