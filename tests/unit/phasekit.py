"""An in-memory site for the agent's phase unit tests: the in-memory PBS fake,
an in-memory transfer backend (backend.py's interface), a real SQLite journal
in tmp_path and a hand-driven clock.  No HTTP, no subprocess, no sleep."""
from __future__ import annotations

import collections
import itertools
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from pbs_globus_staging import siteconfig
from pbs_globus_staging.backend import (Outcome, SkippedError, SubmitResult, TaskReport,
                                        TransferSpec)
from pbs_globus_staging.journal import Journal
from pbs_globus_staging.pbsctl import PbsCommands
from pbs_globus_staging.phases import poll, settle, submit
from pbs_globus_staging.phases.context import AlertSink, Context, Views

try:  # the doubles' own package, once the sim split has landed
    from pbs_globus_staging_sim.fakepbs import FakePbs
except ImportError:  # pragma: no cover - before it
    from pbs_globus_staging_sim.fakepbs import FakePbs

SITE = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
REMOTE = "08925f04-569f-11e7-bef8-22000b9a448b"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


class FakeTask:
    def __init__(self, task_id: str, identity: str, spec: Optional[TransferSpec]) -> None:
        self.task_id = task_id
        self.identity = identity
        self.spec = spec
        self.outcome = Outcome.RUNNING
        self.status = "ACTIVE"
        self.files = len(spec.items) if spec else 1
        self.files_transferred = 0
        self.bytes_transferred = 0
        self.faults = 0
        self.fatal_code: Optional[str] = None
        self.message = ""
        self.action = ""
        self.nice_status: Optional[str] = "OK"
        self.fault: Optional[Tuple[str, str]] = None     # what fatal_fault answers
        self.skipped: List[SkippedError] = []
        self.canceled = False

    def report(self) -> TaskReport:
        return TaskReport(task_id=self.task_id, outcome=self.outcome, status=self.status,
                          nice_status=self.nice_status, files=self.files,
                          files_transferred=self.files_transferred,
                          bytes_transferred=self.bytes_transferred, faults=self.faults,
                          fatal_code=self.fatal_code, message=self.message,
                          action=self.action,
                          skipped_errors=len(self.skipped) if self.outcome == Outcome.DONE
                          else None)


class FakeBackend:
    """backend.TransferBackend in memory.  ``fail_next[name] = exc`` makes the
    next call of that method raise ``exc``."""

    def __init__(self) -> None:
        self.calls: collections.Counter = collections.Counter()
        self.tasks: Dict[str, FakeTask] = {}
        self.log: List[Tuple[str, str]] = []          # (method, task or identity)
        self.fail_next: Dict[str, Exception] = {}
        self._ids = itertools.count(1)
        self._by_submission: Dict[str, str] = {}

    def _call(self, name: str, identity: str, what: str = "") -> None:
        self.calls[identity] += 1
        self.log.append((name, what or identity))
        exc = self.fail_next.pop(name, None)
        if exc is not None:
            raise exc

    def new_submission_id(self, identity: str) -> str:
        self._call("new_submission_id", identity)
        return f"sub-{next(self._ids)}"

    def submit(self, identity: str, spec: TransferSpec) -> SubmitResult:
        self._call("submit", identity)
        if spec.submission_id in self._by_submission:
            return SubmitResult(task_id=self._by_submission[spec.submission_id], duplicate=True)
        task_id = f"task-{next(self._ids):04d}"
        self.tasks[task_id] = FakeTask(task_id, identity, spec)
        self._by_submission[spec.submission_id] = task_id
        return SubmitResult(task_id=task_id)

    def poll(self, identity: str, task_ids: Sequence[str]) -> Dict[str, TaskReport]:
        self._call("poll", identity)
        return {t: self.tasks[t].report() for t in task_ids if t in self.tasks}

    def get_task(self, identity: str, task_id: str) -> TaskReport:
        self._call("get_task", identity, task_id)
        from pbs_globus_staging.errors import FatalError
        if task_id not in self.tasks:
            raise FatalError(f"task {task_id} not found")
        return self.tasks[task_id].report()

    def cancel(self, identity: str, task_id: str) -> None:
        self._call("cancel", identity, task_id)
        task = self.tasks[task_id]
        task.canceled = True
        task.outcome, task.status, task.fatal_code = Outcome.FATAL, "FAILED", "CANCELED"

    def explain(self, identity: str, task_id: str) -> str:
        self._call("explain", identity, task_id)
        return ""

    def find_active_task(self, identity: str, spec: TransferSpec) -> Optional[str]:
        self._call("find_active_task", identity)
        return None

    def successful_paths(self, identity: str, task_id: str):
        self._call("successful_paths", identity, task_id)
        return []

    def skipped_errors(self, identity: str, task_id: str):
        self._call("skipped_errors", identity, task_id)
        return list(self.tasks[task_id].skipped)

    def fatal_fault(self, identity: str, task_id: str):
        self._call("fatal_fault", identity, task_id)
        return self.tasks[task_id].fault

    # ----------------------------------------------------------- driving
    def succeed(self, task_id: str) -> None:
        task = self.tasks[task_id]
        task.outcome, task.status = Outcome.DONE, "SUCCEEDED"
        task.files_transferred, task.bytes_transferred = task.files, 100 * task.files

    def fail(self, task_id: str, code: str = "FILE_NOT_FOUND",
             message: str = "no such file") -> None:
        task = self.tasks[task_id]
        task.outcome, task.status, task.fatal_code, task.message = \
            Outcome.FATAL, "FAILED", code, message

    def needs_user(self, task_id: str, message: str = "consent required",
                   action: str = "globus-staging login") -> None:
        task = self.tasks[task_id]
        task.outcome, task.status, task.message, task.action = \
            Outcome.WAITING_FOR_USER, "INACTIVE", message, action


class Site:
    """The phases' context on an in-memory site, plus the loop's state objects."""

    def __init__(self, tmp_path: Path, **agent: object) -> None:
        self.root = Path(tmp_path)
        self.fs = self.root / "site-fs"
        self.clock = Clock()
        self.fake = FakePbs(clock=self.clock)
        self.pbs = PbsCommands(pbs_exec="/fake", conf={}, runner=self.fake)
        self.backend = FakeBackend()
        self.journal = Journal.open(self.root / "journal.sqlite")
        settings = {"batch_window": 0.0, "fatal_fault_window": 60.0, "orphan_grace": 300.0,
                    "retry_delay": 10.0, "stageout_retries": 2}
        settings.update(agent)
        self.config = siteconfig.from_dict({
            "site": {"collection": SITE, "name": "Unit HPC", "roots": [f"{self.fs}/{{user}}/"],
                     "collection_root": f"{self.fs}/"},
            "collections": {"theta-dtn": REMOTE},
            "credentials": {"mode": "user", "client_id": "5e1c0d2a-7b3f-4e8a-9c6d-2f1e0a9b8c7d",
                            "token_dir": str(self.root / "tokens" / "{user}")},
            "agent": settings,
            "journal": {"path": str(self.root / "journal.sqlite")},
        }, source="unit-site")
        self.alerts: List[dict] = []
        self.ctx = Context(config=self.config, journal=self.journal, pbs=self.pbs,
                           backend=self.backend, clock=self.clock,
                           alerts=AlertSink(self.alerts.extend))
        self.ctx.run.api_start = self.clock()
        self.views = Views()
        self.submitting = submit.SubmitState()
        self.polling = poll.PollState()
        self.settling = settle.SettleState(progress_left=100)

    def close(self) -> None:
        self.journal.close()

    # ------------------------------------------------------------ jobs
    def stagein(self, user: str, name: str, *, options: str = "") -> str:
        (self.fs / user).mkdir(parents=True, exist_ok=True)
        return f"{self.fs}/{user}/{name}@theta-dtn:/{user}/{name}{options}"

    def stageout(self, user: str, name: str, *, options: str = "") -> str:
        (self.fs / user).mkdir(parents=True, exist_ok=True)
        return f"{self.fs}/{user}/{name}@theta-dtn:/{user}/out/{name}{options}"

    def qsub(self, user: str = "alice", *, stagein: Optional[str] = None,
             stageout: Optional[str] = None, **kw: object) -> str:
        return self.fake.add_job(user, stagein=stagein, stageout=stageout, **kw)

    def job(self, job_id: str) -> dict:
        return self.fake.jobs.get(job_id) or self.fake.history[job_id]

    def request(self, job_id: str, direction: str = "in"):
        return next(r for r in self.journal.requests_for_job(job_id)
                    if r.direction == direction)

    def transfers(self, job_id: str, direction: str = "in"):
        return self.journal.transfers_for_request(self.request(job_id, direction).request_id)

    def kinds(self, job_id: str) -> List[str]:
        return [e.kind for e in self.journal.events(job_id)]

    def alert_kinds(self) -> List[str]:
        self.ctx.alerts.flush()
        return [a["kind"] for a in self.alerts]

    def finish(self, job_id: str, exit_status: int = 0) -> None:
        """The job ran and ended: PBS shows it F with its exit status."""
        attrs = self.fake.jobs.pop(job_id)
        attrs.update(job_state="F", substate=92, Exit_status=exit_status, Hold_Types="n")
        self.fake.history[job_id] = attrs


# ---------------------------------------------------------------- fixtures
# Imported by each test module (``from phasekit import no_sleep, site``): nothing
# sleeps, nothing leaves the process.
import time as _time  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    def refuse(seconds):
        raise AssertionError(f"time.sleep({seconds}) in a unit test: drive the clock instead")
    monkeypatch.setattr(_time, "sleep", refuse)


@pytest.fixture
def site(tmp_path):
    s = Site(tmp_path)
    yield s
    s.close()


@pytest.fixture
def make_site(tmp_path):
    made = []

    def make(**agent):
        s = Site(tmp_path / f"site{len(made)}", **agent)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()
