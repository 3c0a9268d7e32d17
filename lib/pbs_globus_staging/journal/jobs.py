"""The ``jobs`` and ``obits`` tables: what PBS told us about each job.

Stdlib only, Python 3.6+.
"""

from typing import Any, Iterable, List, Mapping, Optional, Tuple, Union

from ..states import Direction
from .connection import Connection
from .rows import JobRow, ObitRow, _in_clause, _now, _row, _words

_JOB_FIELDS = ("owner", "queue", "array_parent", "priority", "qtime",
               "exit_status", "obit_time", "stage_state", "comment")


class JobsTable(Connection):
    """Jobs seen in PBS, when they left it, and their exit statuses (jobobit)."""

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
