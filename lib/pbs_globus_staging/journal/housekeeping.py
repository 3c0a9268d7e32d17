"""Housekeeping: row counts, pruning old history, vacuum and integrity checks.

Stdlib only, Python 3.6+.
"""

from typing import Dict, List, Optional

from .connection import Connection, JournalError
from .rows import _now
from .schema import _FINISHED_SQL


class Housekeeping(Connection):
    """Counting, pruning, vacuuming and checking the file."""

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
