"""Run one agent cycle and ``SIGKILL`` it right after its N-th side effect.

A side effect is anything that leaves a trace outside the process: a PBS
command, a Globus API call, a journal commit.  Killing the agent right after
each one in turn -- the worst moment: the effect happened, nothing after it
did -- shows that the next run repairs every gap (no second transfer, no
early release, no lost job).  Test-only: the production agent has no hooks
for this; the wrappers are installed here, around it.

    python -m pbs_globus_staging_sim.crashpoint --config site.yaml \
        --counter steps.json --crash-at 7 [--budget 1]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from pathlib import Path
from typing import List, Optional

_BACKEND_CALLS = ("new_submission_id", "submit", "poll", "get_task", "cancel", "explain",
                  "successful_paths", "find_active_task", "skipped_errors", "fatal_fault")


class _Counter:
    def __init__(self, path: Path, crash_at: int) -> None:
        self.path = path
        self.crash_at = crash_at
        if path.exists():
            self.state = json.loads(path.read_text())
        else:
            self.state = {"steps": 0, "crashed_at": None, "labels": []}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.path)

    def step(self, label: str) -> None:
        self.state["steps"] += 1
        self.state["labels"].append(label)
        if self.state["crashed_at"] is None and self.state["steps"] == self.crash_at:
            self.state["crashed_at"] = label
            self.save()
            os.kill(os.getpid(), signal.SIGKILL)


def _install(counter: _Counter) -> None:
    from pbs_globus_staging import globus_backend, journal, pbsctl

    run = pbsctl.PbsCommands.run

    @functools.wraps(run)
    def pbs_run(self, name, args, **kw):
        result = run(self, name, args, **kw)
        counter.step(f"pbs:{name}")
        return result

    pbsctl.PbsCommands.run = pbs_run

    for meth in _BACKEND_CALLS:
        orig = getattr(globus_backend.GlobusBackend, meth)

        def wrapper(self, *a, _orig=orig, _name=meth, **kw):
            result = _orig(self, *a, **kw)
            counter.step(f"globus:{_name}")
            return result

        setattr(globus_backend.GlobusBackend, meth, wrapper)

    exec_ = journal.Journal._exec

    def journal_exec(self, sql, *a, **kw):
        result = exec_(self, sql, *a, **kw)
        if isinstance(sql, str) and sql.strip().upper() == "COMMIT":
            counter.step("journal:commit")
        return result

    journal.Journal._exec = journal_exec


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="crashpoint")
    p.add_argument("--config", required=True)
    p.add_argument("--counter", required=True, type=Path)
    p.add_argument("--crash-at", type=int, default=0, help="0: never")
    p.add_argument("--budget", type=float, default=1.0)
    args = p.parse_args(argv)
    counter = _Counter(args.counter, args.crash_at)
    _install(counter)
    from pbs_globus_staging.cli import main as cli_main
    try:
        return cli_main(["--config", args.config, "agent", "--once", "--budget", str(args.budget)])
    finally:
        counter.save()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
