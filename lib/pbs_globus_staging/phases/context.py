"""What every phase of the agent is given: the ``Context`` (journal, PBS
control, backend, settings, alert sink, log, the run's clock and budget) and
the small shared helpers that only read it.

Nothing here decides (decisions: ``decide``); the phases apply.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from typing import Callable, Dict, List, Mapping, Optional

from .. import siteconfig
from ..decide import JobView
from ..errors import RequestError, RetryableError, StagingError
from .. import events
from ..events import History

log = logging.getLogger("pbs_globus_staging.agent")
_AGENT_DEFAULTS = siteconfig.AgentSettings()


def action_log(kind: str, **fields: object) -> None:
    """One structured line per action: ``action=release job=12.srv ...``."""
    parts = [f"action={kind}"]
    for key, value in fields.items():
        if value is None or value == "":
            continue
        text = str(value).replace("\n", " ")
        if " " in text or "=" in text:
            text = json.dumps(text)
        parts.append(f"{key}={text}")
    log.info(" ".join(parts))


@dataclasses.dataclass
class CycleStats:
    started: float = 0.0
    finished: float = 0.0
    passes: int = 0
    polls: int = 0
    submitted: int = 0
    released: int = 0
    failed: int = 0
    pbs_calls: int = 0
    globus_calls: int = 0
    errors: List[str] = dataclasses.field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclasses.dataclass
class RunState:
    """One run's bounds and figures (owned by the loop, reset per run)."""

    stats: CycleStats = dataclasses.field(default_factory=CycleStats)
    deadline: float = float("inf")        # stop starting new work after this
    api_start: float = 0.0                # for the per-identity API rate
    api_base: Dict[str, int] = dataclasses.field(default_factory=dict)
    served: bool = False                  # a serving agent (agent --serve)


@dataclasses.dataclass
class Views:
    """The last PBS read (phase intake): the jobs with a staging request, and
    each waiting job's place in its queue (stage-ahead).  Phases that change
    a job through PBS update its view here."""

    jobs: Dict[str, JobView] = dataclasses.field(default_factory=dict)
    queue_rank: Dict[str, int] = dataclasses.field(default_factory=dict)

    def get(self, job_id: str) -> Optional[JobView]:
        return self.jobs.get(job_id)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self.jobs


class AlertSink:
    """Staging events gathered during a run, handed to the alert engine."""

    def __init__(self, deliver: Optional[Callable[[List[dict]], None]]) -> None:
        self.deliver = deliver
        self.events: List[dict] = []

    @property
    def on(self) -> bool:
        return self.deliver is not None

    def flush(self) -> None:
        if self.deliver is None or not self.events:
            return
        events, self.events = self.events, []
        try:
            self.deliver(events)
        except Exception as exc:  # alerts must never stop the agent
            log.warning("alert delivery failed: %s", exc)


class Context:
    """The agent's collaborators, passed to every phase explicitly."""

    def __init__(self, *, config: object, journal: object, pbs: object, backend: object,
                 clock: Callable[[], float], alerts: AlertSink) -> None:
        self.cfg = config
        self.journal = journal
        self.pbs = pbs
        self.backend = backend
        self.clock = clock
        self.alerts = alerts
        self.log = log
        self.run = RunState()
        self._options: Dict[str, object] = {}

    # ------------------------------------------------------------- settings
    def setting(self, name: str) -> object:
        # Every default lives once, in siteconfig.AgentSettings; a name not there fails.
        return getattr(getattr(self.cfg, "agent", None), name, getattr(_AGENT_DEFAULTS, name))

    def identity_for(self, owner: str) -> str:
        mode = getattr(getattr(self.cfg, "credentials", None), "mode", "user")
        return "site" if mode == "client" else owner

    @property
    def stats(self) -> CycleStats:
        return self.run.stats

    def out_of_time(self) -> bool:
        """Leave the rest for the next run rather than overrun the hook's alarm."""
        return self.clock() > self.run.deadline

    def options(self, normalized: str, direction: str) -> object:
        """A registered request's options (parsed once per agent)."""
        key = direction + normalized
        if key not in self._options:
            from .. import request
            try:
                self._options[key] = request.parse(normalized, direction=direction).options
            except RequestError:
                self._options[key] = None
        return self._options[key]

    # --------------------------------------------------------------- alerts
    def alert(self, kind: str, view: Optional[JobView], **fields: object) -> None:
        if not self.alerts.on:
            return
        event = {"kind": kind, "time": self.clock()}
        if view is not None:
            event.update(job_id=view.job_id, owner=view.owner, queue=view.queue,
                         project=view.project, mail_points=view.mail_points,
                         mail_users=list(view.mail_users))
        event.update({k: v for k, v in fields.items() if v is not None})
        self.alerts.events.append(event)

    # ---------------------------------------------------------------- guard
    @contextlib.contextmanager
    def guard(self, job_id: str):
        """One job's trouble must not stop the cycle for every other job: an
        unexpected error is logged and recorded against that job, and the next
        cycle tries again.  An outage (RetryableError) still stops the run."""
        try:
            yield
        except RetryableError:
            raise
        except Exception as exc:  # noqa: BLE001 -- isolate, record, carry on
            log.exception("error while handling %s", job_id)
            self.stats.errors.append(f"{job_id}: {type(exc).__name__}: {exc}")
            try:
                self.journal.add_event(job_id, History.AGENT_ERROR,
                                       f"internal error, retried next cycle: "
                                       f"{type(exc).__name__}: {exc}"[:500])
            except StagingError:
                pass


def request_ids(ctx: Context, transfer_id: int) -> List[int]:
    """The requests a transfer serves, in the order their items were added."""
    seen: Dict[int, None] = {}
    for item in ctx.journal.items_for_transfer(transfer_id):
        if item.request_id is not None:
            seen.setdefault(item.request_id, None)
    return list(seen)


def request_for(ctx: Context, job_id: str, direction: str) -> Optional[object]:
    for row in ctx.journal.requests_for_job(job_id):
        if row.direction == direction:
            return row
    return None


def total_calls(backend: object) -> int:
    calls = getattr(backend, "calls", 0)
    if isinstance(calls, Mapping):
        return int(sum(calls.values()))
    try:
        return int(calls)
    except (TypeError, ValueError):
        return 0


def now_text(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t)))
