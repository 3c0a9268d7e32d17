"""Journal costs on this machine: the jobobit hook's path (open, one obit,
close), the agent's per-cycle batches at 10,000 jobs, and submission commits
(durable) against ordinary ones.

    .venv/bin/python bench/bench_journal.py

Prints medians; exits 1 only if a budget the design relies on is blown by far
(the hook's obit must stay far below its 0.5 s lock timeout, a 10,000-job
cycle's bookkeeping well under a second).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from pbs_globus_staging.journal import ItemSpec, Journal, write_obit

JOBS = 10_000


def _median(fn, repeat: int) -> float:
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "journal.db"
        Journal.open(path).close()
        results = {}
        results["hook: open + record_obit + close"] = _median(
            lambda i: write_obit(path, f"{i}.srv", 0), 200)

        j = Journal.open(path)
        rows = [{"job_id": f"{i}.srv", "owner": f"user{i % 100}", "queue": "workq",
                 "stage_state": "waiting"} for i in range(JOBS)]
        ids = [r["job_id"] for r in rows]
        results[f"upsert_jobs x{JOBS} (one transaction)"] = _median(
            lambda i: j.upsert_jobs(rows), 5)
        results[f"mark_job_seen x{JOBS} (one transaction)"] = _median(
            lambda i: j.mark_job_seen(ids), 5)
        results[f"jobs(job_ids=...) x{JOBS}"] = _median(lambda i: j.jobs(job_ids=ids), 5)
        results["add_event"] = _median(lambda i: j.add_event("1.srv", "poll", str(i)), 500)

        def transfer(i: int, durable: bool) -> None:
            with j.transaction():
                tid = j.create_transfer(identity="u", direction="in", source_collection="s",
                                        destination_collection="d",
                                        items=[ItemSpec(None, f"/s/{i}/{k}", f"/d/{i}/{k}")
                                               for k in range(10)])
                if durable:
                    j.set_submission_id(tid, f"sub-{i}")
                j.add_event("1.srv", "submit", transfer_id=tid)
        results["transfer + 10 items + event (no fsync)"] = _median(
            lambda i: transfer(i, False), 100)
        results["transfer + 10 items + submission id (fsync)"] = _median(
            lambda i: transfer(10_000 + i, True), 100)
        j.close()

    width = max(map(len, results))
    for name, seconds in results.items():
        print(f"{name:<{width}}  {seconds * 1000:8.2f} ms")
    budgets = {"hook: open + record_obit + close": 0.05,
               f"upsert_jobs x{JOBS} (one transaction)": 1.0,
               f"mark_job_seen x{JOBS} (one transaction)": 1.0}
    blown = [n for n, limit in budgets.items() if results[n] > limit]
    for n in blown:
        print(f"FAIL: {n} took {results[n]:.3f}s (budget {budgets[n]}s)", file=sys.stderr)
    return 1 if blown else 0


if __name__ == "__main__":
    sys.exit(main())
