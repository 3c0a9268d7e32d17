"""The staging agent: one ``run()`` reads PBS, the journal and Globus, decides,
and applies -- the only part that talks to Globus and the only part that
changes jobs.

A run is bounded by a time budget (the periodic hook's alarm).  Within it, a
full pass (PBS read, new requests, submissions, stage-outs, vanished jobs) is
followed by cheap Globus polls every ``poll_interval`` seconds, so a finished
stage-in frees its job within seconds instead of a hook period.  Every step is
idempotent and journalled first, so a run killed at any point (the alarm, a
crash, ``kill -9``) is repaired by the next one: no transfer is submitted
twice, no job is released early.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from . import decide, siteconfig, states
from .backend import (EndpointTrouble, Outcome, SubmitConflict, TaskReport, TransferBackend,
                      TransferItem, TransferSpec)
from .decide import JobView, RequestStatus
from .errors import FatalError, RequestError, RetryableError, StagingError, WaitingForUser
from .journal import ItemSpec
from .pbsctl import JobGone, PbsCommands

log = logging.getLogger("pbs_globus_staging.agent")
_AGENT_DEFAULTS = siteconfig.AgentSettings()

# Transfer rows (journal) by Globus status.
T_NEW, T_ACTIVE, T_INACTIVE = "new", "active", "inactive"
T_SUCCEEDED, T_FAILED, T_CANCELED = "succeeded", "failed", "canceled"
LIVE_TRANSFER = (T_NEW, T_ACTIVE, T_INACTIVE)
# A repeated stage-in is synced, not adopted: files whose checksums match are
# skipped (Globus sync_level "checksum": transfer only where they differ).
RESYNC_LEVEL = "checksum"

_OUTCOME_STATUS = {
    Outcome.DONE: T_SUCCEEDED, Outcome.FATAL: T_FAILED,
    Outcome.WAITING_FOR_USER: T_INACTIVE, Outcome.RUNNING: T_ACTIVE,
}


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


@dataclasses.dataclass(frozen=True)
class _Resolved:
    """A request parsed, expanded and checked against the site policy again."""

    items: Tuple[Tuple[str, str, str, str, bool], ...]   # (src_coll, src, dst_coll, dst, recursive)
    tasks: Tuple[str, ...]
    options: object
    normalized: str
    key: str


class Agent:
    def __init__(self, *, config: object, journal: object, pbs: PbsCommands,
                 backend: TransferBackend, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 alerts: Optional[Callable[[List[dict]], None]] = None) -> None:
        self.cfg = config
        self.journal = journal
        self.pbs = pbs
        self.backend = backend
        self.clock = clock
        self.sleep = sleep
        self.alerts = alerts
        self._events: List[dict] = []
        self._views: Dict[str, JobView] = {}
        self._options_cache: Dict[str, object] = {}
        self._queue_rank: Dict[str, int] = {}
        self._run_deadline = float("inf")
        self._pending_left = 0
        self._progress_left = 0
        self._api_start = clock()
        self.stats = CycleStats()
        self.should_stop: Callable[[], bool] = lambda: False   # a serving agent's signal
        self._api_base: Dict[str, int] = {}
        self._served = False
        # Transfers whose SUCCEEDED task document counted no skipped errors: their
        # items need no task_skipped_errors call (the count is Globus's own word).
        self._nothing_skipped: Set[int] = set()
        self._last_poll = 0.0

    # ------------------------------------------------------------------ config
    def _agent(self, name: str) -> object:
        # Every default lives once, in siteconfig.AgentSettings; a name not there fails.
        return getattr(getattr(self.cfg, "agent", None), name, getattr(_AGENT_DEFAULTS, name))

    def identity_for(self, owner: str) -> str:
        mode = getattr(getattr(self.cfg, "credentials", None), "mode", "user")
        return "site" if mode == "client" else owner

    # --------------------------------------------------------------------- run
    def run(self, *, budget: Optional[float] = None,
            waiter: Optional[Callable[[float], bool]] = None) -> CycleStats:
        """One bounded agent run: a full pass, then polls until the budget ends.

        With ``waiter`` (the serving agent, ``agent --serve``) the run lasts its
        whole budget whether or not anything is in flight, and sleeps in
        ``waiter(seconds)``, which returns early (True) when a hook wakes it:
        see ``_serve_loop``."""
        budget = float(budget if budget is not None else (self._agent("cycle_budget")
                                                        or siteconfig.STANDALONE_CYCLE_BUDGET))
        if waiter is not None:
            return self._run_served(budget, waiter)
        interval = float(self._agent("poll_interval"))
        rescan = max(interval, float(self._agent("rescan_interval")))
        cpu0 = time.process_time()
        start = self.clock()
        self.stats = CycleStats(started=start)
        self._api_start = start
        # Stop starting new work a little before the budget ends (a quarter of
        # it at most), leaving time to finish what is under way.
        self._run_deadline = start + budget - min(1.0, 0.25 * budget)
        cycle_id = None
        try:
            # A locked or full journal stops the run here, before any change.
            cycle_id = self.journal.start_cycle(now=start)
            self.full_pass()
            last_full = self.clock()
            end = start + budget
            while True:
                # Poll up to the very end of the budget (a shorter last sleep):
                # the gap until the next run is what bounds the release lag.
                left = end - self.clock() - 0.3
                if left <= 0.05 or not self._has_live_work():
                    break
                self.sleep(min(interval, left))
                if self.clock() - last_full >= rescan and not self._out_of_time():
                    self.full_pass()
                    last_full = self.clock()
                else:
                    self.poll_pass()
        except RetryableError as exc:
            self._stopped(exc)
        finally:
            self._finish_run(cycle_id, cpu0)
        return self.stats

    def _run_served(self, budget: float, waiter: Callable[[float], bool]) -> CycleStats:
        cpu0 = time.process_time()
        start = self.clock()
        self.stats = CycleStats(started=start)
        self._api_start = start
        # The backend's counts span the process's life; the rate applies per run.
        calls = getattr(self.backend, "calls", None)
        self._api_base = dict(calls) if isinstance(calls, Mapping) else {}
        pbs0, globus0 = self.pbs.calls, _total_calls(self.backend)
        self._served = True
        self._run_deadline = start + budget - min(1.0, 0.25 * budget)
        cycle_id = None
        try:
            cycle_id = self.journal.start_cycle(now=start)
            self._serve_loop(start + budget, waiter)
        except RetryableError as exc:
            self._stopped(exc)
        finally:
            self._finish_run(cycle_id, cpu0, pbs0=pbs0, globus0=globus0)
        return self.stats

    def _stopped(self, exc: RetryableError) -> None:
        self.stats.errors.append(str(exc))
        action_log("cycle_stopped", reason=str(exc))

    def _finish_run(self, cycle_id: Optional[int], cpu0: float, *, pbs0: int = 0,
                    globus0: int = 0) -> None:
        """Close a run's figures, alerts and journal record (also after an error).
        ``pbs0``/``globus0``: the process-wide counts at the run's start (a
        serving agent's backend and PBS client outlive its runs)."""
        self.stats.finished = self.clock()
        self.stats.cpu_seconds = time.process_time() - cpu0
        self.stats.pbs_calls = self.pbs.calls - pbs0
        self.stats.globus_calls = _total_calls(self.backend) - globus0
        self._health_alert()
        self._flush_alerts()
        if cycle_id is not None:
            self._journal_call(
                "finish_cycle", cycle_id, now=self.stats.finished, ok=self.stats.ok,
                error="; ".join(self.stats.errors)[:1000] or None,
                globus_calls=self.stats.globus_calls, pbs_calls=self.stats.pbs_calls,
                cpu_seconds=self.stats.cpu_seconds, jobs=len(self._views),
                transfers=self.stats.submitted)

    # After a wake-up, look at PBS this soon and again a little later: the
    # queuejob hook wakes us before pbs_server has enqueued the job.
    WAKE_LOOKS = (0.15, 0.6, 2.0)

    def _serve_loop(self, end: float, waiter: Callable[[float], bool]) -> None:
        """Event-driven within one served run: a full pass when a hook wakes
        us (qsub, job end) or every ``rescan_interval``; Globus polls paced by
        ``_poll_delay`` (fast only while a task may be about to end); between
        them, asleep in ``waiter``.  No busy loop: with nothing in flight and
        no wake-up it is one PBS read per ``rescan_interval``."""
        rescan = float(self._agent("rescan_interval"))
        self.full_pass()
        last_full = self.clock()
        looks: List[float] = []
        while True:
            now = self.clock()
            if now >= end - 0.05 or self.should_stop():
                return
            due_full = min([last_full + rescan] + looks)
            # From the last real poll: a full pass polls only if one is due.
            due_poll = self._last_poll + self._poll_delay(now)
            if now < min(due_full, due_poll):
                if waiter(max(0.0, min(due_full, due_poll, end) - now)):
                    woke = self.clock()
                    looks = sorted(set(looks) | {woke + d for d in self.WAKE_LOOKS})
                    self._flush_alerts()
                continue
            if now >= due_full:
                looks = [t for t in looks if t > now]
                self.full_pass()
                last_full = self.clock()
            else:
                self.poll_pass()
            self._flush_alerts()

    def _poll_delay(self, now: float) -> float:
        """Seconds until the next Globus poll: fast (``poll_fast``, 1 s: one
        task_list per identity, 5 % of Globus's 20 requests/s per user)
        while a task may end any moment -- just submitted, or near its
        expected end from its rate so far -- else ``poll_interval``, and
        slower still for tasks waiting on a person (INACTIVE)."""
        fast = float(self._agent("poll_fast"))
        normal = float(self._agent("poll_interval"))
        best = float("inf")
        for t in self.journal.transfers(status=(T_ACTIVE, T_INACTIVE)):
            if not t.task_id:
                continue
            if t.status == T_INACTIVE:
                best = min(best, max(normal, 30.0))
                continue
            age = now - (t.submitted or now)
            if age < 30 or self._near_end(t):
                return fast
            best = min(best, normal)
        if self._pending_left:
            best = min(best, normal)
        return best

    @staticmethod
    def _near_end(t: object) -> bool:
        files, done = t.files or 0, t.files_transferred or 0
        rate = t.bytes_per_second or 0.0
        if not files or not done or done >= files or rate <= 0:
            return False
        left = (files - done) * (t.bytes_transferred or 0) / done / rate
        return left < 10.0

    def _journal_call(self, name: str, *args: object, **kwargs: object) -> object:
        try:
            return getattr(self.journal, name)(*args, **kwargs)
        except (RetryableError, AttributeError, TypeError) as exc:
            log.warning("journal %s failed: %s", name, exc)
            return None

    def _has_live_work(self) -> bool:
        return bool(self._pending_left or
                    self.journal.transfers(status=(T_NEW, T_ACTIVE, T_INACTIVE)))

    # --------------------------------------------------------------- passes
    def _out_of_time(self) -> bool:
        """Leave the rest for the next run rather than overrun the hook's alarm."""
        return self.clock() > self._run_deadline

    def full_pass(self) -> None:
        """Everything a cycle does; safe to repeat at any point."""
        self.stats.passes += 1
        self._progress_left = int(self._agent("max_progress_comments"))
        now = self.clock()
        views = self._read_pbs()
        if views is not None:
            self._views = views
            self._register(views, now)
        self._register_obits(now)
        self._repair(now)
        self._plan_and_submit(now)
        changed = self._poll(now)
        self._settle(changed, now)
        if views is not None:
            self._apply_stagein(views.values())
            if self._stageouts(views, now):
                self._plan_and_submit(now)    # results leave now, not a pass later
            self._vanished(views, now)
        self._reap_orphans(now)
        self._conditions(now)
        if views is not None:
            self._housekeeping(now)

    def _housekeeping(self, now: float) -> None:
        """Settled jobs that left PBS become history; history older than
        ``history_days`` is pruned, once a day."""
        j = self.journal
        j.mark_settled_jobs_gone(seen_before=now, final_states=decide.FINAL, now=now)
        last = float(j.get_meta("last_prune") or 0)
        if now - last >= 86400 and not self._out_of_time():
            removed = j.prune(older_than_days=float(self._agent("history_days")), now=now)
            j.set_meta("last_prune", str(now))
            if any(removed.values()):
                action_log("prune", **{k: v for k, v in removed.items() if v})

    def _conditions(self, now: float) -> None:
        """Conditions that persist are reported every pass; the alert engine
        decides when to repeat (e.g. 'still waiting for your login' every 6 h)."""
        if self.alerts is None:
            return
        j = self.journal
        for req in j.requests(state=(decide.USER_ACTION,)):
            self._alert("user_action", self._views.get(req.job_id), job_id=req.job_id,
                        owner=req.owner, message=req.message or "", action=req.action or "",
                        key=f"{req.job_id}:user_action:{req.request_id}")
        down = j.get_meta("globus_down_since")
        if down:
            self._alert("globus_unreachable", None, key="globus_unreachable:" + down,
                        message="Globus has not answered since "
                                + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(down))))
        slow_after = float(self._agent("slow_after"))
        for t in j.transfers(status=(T_ACTIVE,)):
            since = t.last_progress or t.submitted
            if since and now - since >= slow_after:
                for rid in self._request_ids(t.transfer_id):
                    req = j.get_request(rid)
                    if req is None or req.state in decide.FINAL:
                        continue
                    self._alert("slow", self._views.get(req.job_id), job_id=req.job_id,
                                owner=req.owner, task_id=t.task_id or "",
                                key=f"{req.job_id}:slow:{t.task_id}",
                                message=f"no progress for {(now - since) / 60:.0f} minutes "
                                        f"({t.nice_status or 'no status'})")

    def poll_pass(self) -> None:
        """The cheap loop step: poll Globus; touch PBS only for what changed."""
        now = self.clock()
        self._progress_left = 0
        changed = self._poll(now)
        jobs = self._settle(changed, now)
        if self._pending_left and any(
                self.journal.get_transfer(t).status not in LIVE_TRANSFER for t in changed):
            self._plan_and_submit(now)   # a slot came free: fill it now
        if jobs:
            self._apply_stagein(self._views[j] for j in jobs if j in self._views)

    # ---------------------------------------------------------------- PBS read
    def _read_pbs(self) -> Optional[Dict[str, JobView]]:
        try:
            raw = self.pbs.jobs()
        except RetryableError as exc:
            # PBS (server or its database) is down: change nothing, say so,
            # keep tracking transfers; the next cycle picks up from here.
            self.stats.errors.append(str(exc))
            action_log("pbs_unreachable", reason=str(exc))
            return None
        views = {}
        ahead = int(self._agent("stage_ahead"))
        waiting: Dict[str, List[Tuple[int, float, str]]] = {}
        for job_id, attrs in raw.items():
            res = attrs.get("Resource_List") or {}
            if not isinstance(res, dict):
                continue
            if ahead and attrs.get("job_state") in ("Q", "H"):
                holds = str(attrs.get("Hold_Types") or "n").replace("n", "")
                if holds in ("", "s"):   # could run next (a user/operator hold cannot)
                    waiting.setdefault(str(attrs.get("queue") or ""), []).append(
                        (-int(attrs.get("Priority") or 0),
                         decide.parse_pbs_time(attrs.get("qtime")), job_id))
            if res.get(states.RES_STAGEIN) is None and res.get(states.RES_STAGEOUT) is None:
                continue
            views[job_id] = JobView.from_qstat(job_id, attrs)
        # Just-in-time staging: a job's place among the jobs of its queue that
        # could run next, by PBS priority then queue time.
        self._queue_rank = {}
        for jobs in waiting.values():
            for rank, (_p, _q, job_id) in enumerate(sorted(jobs)):
                self._queue_rank[job_id] = rank
        return views

    # ------------------------------------------------------------ registering
    def _resolve(self, raw: str, *, direction: str, owner: str,
                 project: Optional[str] = None) -> _Resolved:
        from . import hookcore, request
        res_name = states.RES_STAGEIN if direction == "in" else states.RES_STAGEOUT
        resolved = hookcore.validate(raw, direction=direction, user=owner, site=self.cfg,
                                     resource=res_name, project=project)
        req = resolved.request
        if self.identity_for(owner) == "site":
            # Globus acts as the site's one account here and would follow any
            # symlink the owner planted: check where each path really leads.
            from . import pathcheck, policy
            pathcheck.check_request(req, user=owner, roots=policy.allowed_roots(self.cfg, owner),
                                    resource=res_name)
        items = tuple((it.source_collection, it.source_path, it.destination_collection,
                       it.destination_path, bool(it.recursive)) for it in resolved.items)
        identity = self.identity_for(owner)
        return _Resolved(items=items, tasks=tuple(req.tasks), options=req.options,
                         normalized=request.render(req),
                         key=request.request_key(req, identity=identity))

    def _register(self, views: Mapping[str, JobView], now: float) -> None:
        j = self.journal
        known = {row.job_id: row for row in j.jobs(job_ids=list(views))} if views else {}
        existing = {(r.job_id, r.direction) for r in j.requests_for_jobs(views)} if views \
            else set()
        for view in views.values():
            row = known.get(view.job_id)
            if row is None:
                j.upsert_job(view.job_id, owner=view.owner, queue=view.queue,
                             priority=view.priority, qtime=view.qtime, now=now)
                j.add_event(view.job_id, "seen", f"job seen by the agent (state {view.state})",
                            at=now)
            if view.state in ("R", "E") and (row is None or row.stage_state != "running"):
                # The history outlives PBS's: note the run once, as PBS reports it.
                with j.transaction():
                    j.upsert_job(view.job_id, owner=view.owner, stage_state="running", now=now)
                    j.add_event(view.job_id, "job_started", "job is running", at=now)
        if views:
            j.mark_job_seen(list(views), now=now)
        for view in views.values():
            for direction, raw in (("in", view.stagein), ("out", view.stageout)):
                if raw is None:
                    continue
                if (view.job_id, direction) in existing:
                    continue
                self._add_request(view, direction, raw, now)

    def _register_obits(self, now: float) -> None:
        """Stage-outs the jobobit hook recorded for jobs this agent never saw
        alive (they ended between two looks at PBS): register them from the
        obit, which carries the request as the job ended."""
        j = self.journal
        for obit in j.obits_without_stageout_request():
            if not obit.owner:
                continue
            view = JobView(job_id=obit.job_id, owner=obit.owner, state="F",
                           stageout=obit.stageout, project=obit.project or "",
                           exit_status=obit.exit_status)
            with self._guard(obit.job_id):
                if j.get_job(obit.job_id) is None:
                    j.upsert_job(obit.job_id, owner=obit.owner, now=now)
                    j.add_event(obit.job_id, "seen", "job known from its end (jobobit): it "
                                "ran and ended between two looks of the agent", at=now)
                self._add_request(view, "out", str(obit.stageout), now)

    def _add_request(self, view: JobView, direction: str, raw: str, now: float) -> None:
        j = self.journal
        identity = self.identity_for(view.owner)
        try:
            res = self._resolve(raw, direction=direction, owner=view.owner,
                                project=view.project or None)
            # A stage-out waits for the job's end; _stageouts() makes it PENDING.
            first = decide.PENDING if direction == "in" else decide.WAITING_EXIT
            rid = j.add_request(job_id=view.job_id, direction=direction, owner=view.owner,
                                identity=identity, raw=raw, normalized=res.normalized,
                                request_key=res.key, state=first, now=now)
            j.add_event(view.job_id, f"stage{direction}_requested",
                        f"stage-{direction} request registered: {res.normalized}",
                        request_id=rid, at=now)
            if direction == "in" and res.items:
                # Scenario D and dedup: the same data for the same identity are
                # already on their way -- wait on that transfer, start nothing.
                self._adopt(j.get_request(rid), now)
        except StagingError as exc:
            # Checked at qsub, but the policy, an alias or a manifest may have
            # changed since: the request fails with the reason, never silently.
            rid = j.add_request(job_id=view.job_id, direction=direction, owner=view.owner,
                                identity=identity, raw=raw, normalized=raw,
                                request_key=f"invalid:{view.job_id}:{direction}",
                                state=decide.FAILED, now=now)
            self._transition(rid, view.job_id, decide.FAILED, kind=f"stage{direction}_failed",
                             text=str(exc), message=str(exc), now=now)
            self._alert(f"stage{direction}_failed", view, message=str(exc))

    # ------------------------------------------------------ planning/submitting
    def _options(self, normalized: str, direction: str) -> object:
        key = direction + normalized
        if key not in self._options_cache:
            from . import request
            try:
                self._options_cache[key] = request.parse(normalized, direction=direction).options
            except RequestError:
                self._options_cache[key] = None
        return self._options_cache[key]

    def _plan_and_submit(self, now: float) -> None:
        """Turn waiting requests into Globus tasks, in PBS priority order, as
        far as each identity's free task slots go; the rest keep their place."""
        j = self.journal
        pending = list(j.requests(state=(decide.PENDING,), due=now))
        self._pending_left = 0
        if pending:
            self._plan(pending, now)
        self._submit_new(now)

    def _plan(self, pending: List[object], now: float) -> None:
        def order(row: object) -> Tuple[int, float, int]:
            view = self._views.get(row.job_id)
            return (-(view.priority if view else 0), view.qtime if view else 0.0,
                    row.request_id)

        pending.sort(key=order)
        max_items = int(self._agent("batch_max_items"))
        free = self._free_slots({row.identity for row in pending})
        # Resolving a request costs a parse and a policy check: do it only for
        # the requests that can get a slot now (at 10,000 waiting jobs this is
        # most of a pass).
        capacity = {ident: slots * max_items for ident, slots in free.items()}
        items: List[decide.PendingItem] = []
        cut = False
        window = float(self._agent("batch_window"))
        for row in pending:
            if self._out_of_time():
                cut = True
                self._pending_left += 1
                continue
            view = self._views.get(row.job_id)
            queued = (view.qtime if view else 0.0) or (row.created or 0.0)
            if window and queued > now - window:
                # Let compatible requests of a sweep arrive and share one task.
                self._pending_left += 1
                continue
            graft = "task=" in row.raw
            if capacity.get(row.identity, 0) <= 0 and not graft:
                self._pending_left += 1
                continue
            with self._guard(row.job_id):
                self._plan_one(row, now, items, capacity)
        batches = decide.plan_batches(items, max_items=max_items, free_slots=free)
        if cut:
            # A group not seen whole would make a half-empty task: next run.
            batches = [b for b in batches if len(b.items) >= max_items]
        for batch in batches:
            batch = self._lock_requests(batch)
            if batch.items:
                self._create_transfer(batch, now)

    def _lock_requests(self, batch: decide.Batch) -> decide.Batch:
        """Mark each stage-in job 'staging-in' before its task is submitted: from
        then on the modifyjob hook refuses a qalter of the request, so what
        Globus moves is what the job asked for."""
        dropped: Set[int] = set()
        for rid in batch.request_ids:
            first = next(it for it in batch.items if it.request_id == rid)
            if not self._lock_job(first.job_id, rid):
                dropped.add(rid)
        if not dropped:
            return batch
        return dataclasses.replace(batch, items=tuple(it for it in batch.items
                                                      if it.request_id not in dropped))

    def _lock_job(self, job_id: str, request_id: int) -> bool:
        req = self.journal.get_request(request_id)
        if req is None or req.direction != "in":
            return True
        view = self._views.get(job_id)
        if view is None:
            return self._job_alive(job_id)
        if view.stage_state == states.STAGING_IN:
            return True
        return self._set_job_state(view, states.STAGING_IN)

    def _plan_one(self, row: object, now: float, items: list,
                  capacity: Dict[str, int]) -> None:
        view = self._views.get(row.job_id)
        ahead = int(self._agent("stage_ahead"))
        if ahead and row.direction == "in" and \
                self._queue_rank.get(row.job_id, ahead) >= ahead:
            return   # not near the front of its queue yet: keep scratch free
        if row.direction == "in" and view is None and not self._job_alive(row.job_id):
            return
        try:
            res = self._resolve(row.raw, direction=row.direction, owner=row.owner,
                                project=(view.project or None) if view else None)
        except StagingError as exc:
            self._fail_request(row, str(exc), now)
            return
        if res.tasks:
            if not self._lock_job(row.job_id, row.request_id):
                return
            self._graft(row, res, now)
        if not res.items or capacity.get(row.identity, 0) <= 0:
            return
        capacity[row.identity] = capacity.get(row.identity, 0) - len(res.items)
        opts_key = self._options_key(res.options)
        if row.direction == "in" and self._repeats_earlier(row):
            # The same data went to the same place before, for a job that may
            # have used, changed or removed them: copy again, but let Globus
            # skip every file whose checksum already matches -- a skipped file
            # is then positive evidence that it is in place (issue 10).
            # Alone in its task: a batch's per-item outcomes come from the list
            # of files moved, and a file skipped by the sync is not on it.
            fields = json.loads(opts_key)
            fields.setdefault("sync_level", RESYNC_LEVEL)
            fields["resync"] = row.request_id
            opts_key = json.dumps(fields, sort_keys=True)
        for (scoll, spath, dcoll, dpath, rec) in res.items:
            items.append(decide.PendingItem(
                request_id=row.request_id, job_id=row.job_id,
                priority=view.priority if view else 0, qtime=view.qtime if view else 0.0,
                identity=row.identity, source_collection=scoll,
                destination_collection=dcoll, options_key=opts_key, source_path=spath,
                destination_path=dpath, recursive=rec))

    def _repeats_earlier(self, row: object) -> bool:
        """Another request of this identity with the same key was transferred
        (its data may be in place: sync instead of a blind copy)."""
        j = self.journal
        for other in j.find_requests_by_key(row.request_key):
            if other.request_id == row.request_id or other.identity != row.identity:
                continue
            if any(t.status == T_SUCCEEDED for t in j.transfers_for_request(other.request_id)):
                return True
        return False

    def _job_alive(self, job_id: str) -> bool:
        return job_id in self._views

    def _options_key(self, options: object) -> str:
        if options is None:
            return "{}"
        fields: Dict[str, object] = {}
        for name in ("sync_level", "verify_checksum"):
            value = getattr(options, name, None)
            if value is not None:
                fields[name] = value
        deadline = getattr(options, "deadline", None)
        if deadline is not None:
            fields["deadline"] = deadline.form
        return json.dumps(fields, sort_keys=True)

    def _free_slots(self, identities: Iterable[str]) -> Dict[str, int]:
        """Only tasks holding a Globus slot count against max_tasks_per_identity:
        an INACTIVE task (one user's expired login) or a paused one must not
        hold up the others -- in client mode the whole site is one identity.
        All unfinished tasks count against Globus's pending-task limit."""
        limit = int(self._agent("max_tasks_per_identity"))
        pending_limit = int(self._agent("max_pending_tasks"))
        free = {}
        for ident in identities:
            live = [t for t in self.journal.transfers(status=LIVE_TRANSFER, identity=ident)
                    if not t.grafted]
            # A transfer not yet submitted holds a slot only if it is about to be:
            # one backing off or refused until its owner logs in holds none.
            holding = [t for t in live if (t.status == T_NEW and not self._backing_off(t)
                                           and not self._awaits_user(t)) or (
                t.status == T_ACTIVE and (t.nice_status or "").upper() != "PAUSED")]
            free[ident] = decide.slots_free(holding=len(holding), live=len(live), limit=limit,
                                            pending_limit=pending_limit)
        return free

    def _create_transfer(self, batch: decide.Batch, now: float) -> None:
        j = self.journal
        jobs = sorted({it.job_id for it in batch.items})
        direction = self._direction_of(batch.items[0].request_id)
        tag = content_tag(batch)
        label = f"PBS {jobs[0]} stage-{direction} {tag}" if len(jobs) == 1 else \
            f"PBS stage-{direction} for {len(jobs)} jobs {tag}"
        options = json.loads(batch.options_key)
        # Always: one job's unreadable file must not stall the others' task,
        # and a missing file fails the same way, in the same words, whether
        # its request was batched or alone (see _settle: skipped errors).
        options["skip_source_errors"] = True
        deadline = self._deadline(options.get("deadline"), now)
        with j.transaction():
            tid = j.create_transfer(identity=batch.identity, direction=direction,
                                    source_collection=batch.source_collection,
                                    destination_collection=batch.destination_collection,
                                    options=options, label=label[:128],
                                    deadline=deadline, now=now)
            j.add_items(tid, [ItemSpec(it.request_id, it.source_path, it.destination_path,
                                       it.recursive) for it in batch.items])
            for rid in batch.request_ids:
                j.set_request_state(rid, decide.QUEUED, now=now)
        action_log("plan_transfer", transfer=tid, identity=batch.identity,
                   jobs=len(jobs), items=len(batch.items))

    def _direction_of(self, request_id: int) -> str:
        return self.journal.get_request(request_id).direction

    def _deadline(self, value: Optional[str], now: float) -> Optional[str]:
        """An explicit Globus deadline only when the user asked for one.

        Without one Globus extends a task by itself while it progresses (72 h
        after the last progress, 90 days while paused: task_behavior,
        Deadlines); an explicit one would expire a slow but healthy weeks-long
        stage-in.  The site's ``default_deadline`` is the agent's to enforce
        (``_past_site_deadline``)."""
        import datetime as dt
        if value:
            from . import request
            try:
                parsed = request.parse(f"deadline={value}+task=00000000-0000-0000-0000-000000000000",
                                       direction="in").options.deadline
                if parsed is not None:
                    return parsed.resolve(now=dt.datetime.fromtimestamp(now, dt.timezone.utc)).isoformat()
            except RequestError:
                pass
        return None

    def _past_site_deadline(self, t: object, now: float) -> Optional[str]:
        """The message to fail ``t`` with once it ran past the site's
        ``default_deadline`` (tasks with the user's own deadline: Globus's)."""
        if t.deadline or not t.submitted or t.grafted:
            return None
        try:
            limit = float(self._agent("default_deadline"))
        except (TypeError, ValueError):
            return None
        if limit <= 0 or now - t.submitted < limit:
            return None
        return (f"DEADLINE: not finished within the default deadline of "
                f"{_duration_text(limit)} (agent.default_deadline); Globus task {t.task_id} "
                "canceled; ask for more time with +deadline=")

    def _spec(self, t: object) -> TransferSpec:
        import datetime as dt
        items = tuple(TransferItem(source_path=i.source_path, destination_path=i.destination_path,
                                   recursive=bool(i.recursive))
                      for i in self._unique_items(self.journal.items_for_transfer(t.transfer_id)))
        options = dict(t.options or {})
        deadline = dt.datetime.fromisoformat(t.deadline) if t.deadline else None
        verify = options.get("verify_checksum")
        return TransferSpec(
            submission_id=t.submission_id, source_collection=t.source_collection,
            destination_collection=t.destination_collection, items=items, label=t.label or "",
            sync_level=options.get("sync_level"),
            verify_checksum=bool(verify),
            deadline=deadline, skip_source_errors=bool(options.get("skip_source_errors")))

    @staticmethod
    def _unique_items(rows: Iterable[object]) -> List[object]:
        seen, out = set(), []
        for r in rows:
            k = (r.source_path, r.destination_path)
            if k not in seen:
                seen.add(k)
                out.append(r)
        return out

    def _submit_new(self, now: float) -> None:
        j = self.journal
        throttled: Set[str] = set()
        for t in j.transfers(status=(T_NEW,)):
            if self._out_of_time():
                break
            if t.grafted or t.task_id:
                continue
            if t.identity in throttled:
                continue
            if self._backing_off(t, now):
                continue
            if not self._within_rate(t.identity):
                throttled.add(t.identity)
                action_log("submit_deferred", identity=t.identity, reason="api rate")
                continue
            try:
                if not t.submission_id:
                    sid = self.backend.new_submission_id(t.identity)
                    # Persisted before the POST: a retry after a crash submits the
                    # same id, which Globus executes once.
                    j.set_submission_id(t.transfer_id, sid)
                    t = j.get_transfer(t.transfer_id)
                result = self.backend.submit(t.identity, self._spec(t))
            except WaitingForUser as exc:
                self._transfer_needs_user(t, str(exc), exc.action, now)
                continue
            except (SubmitConflict, EndpointTrouble) as exc:
                # This request's trouble (a foreign task on the same paths, one
                # collection's endpoint): it alone backs off, the run goes on.
                self._back_off(t, str(exc), now)
                continue
            except RetryableError as exc:
                self.stats.errors.append(f"globus: {exc}")
                action_log("submit_deferred", transfer=t.transfer_id, reason=str(exc))
                self._globus_trouble(str(exc))
                return
            except FatalError as exc:
                self._transfer_failed(t, str(exc), now, code="SUBMIT_REFUSED")
                continue
            other = j.transfer_by_task_id(result.task_id) if result.adopted else None
            if other is not None and other.transfer_id != t.transfer_id:
                # Another request of ours already waits on that task (same paths,
                # other options): wait for it to end rather than track it twice.
                self._back_off(t, f"Globus task {result.task_id}, moving the same paths for "
                                  "another request, is still active", now)
                continue
            if j.get_meta(f"backoff:{t.transfer_id}"):
                j.set_meta(f"backoff:{t.transfer_id}", None)
            with j.transaction():
                j.set_task_id(t.transfer_id, result.task_id)
                j.update_transfer(t.transfer_id, status=T_ACTIVE, submitted=now)
                if getattr(result, "foreign", False):
                    # Not ours to cancel: the person who started it decides.
                    j.update_transfer(t.transfer_id,
                                      options={**(t.options or {}), "foreign": True})
                for rid in self._request_ids(t.transfer_id):
                    j.set_request_state(rid, decide.ACTIVE, now=now)
            self.stats.submitted += 1
            how = "adopted" if getattr(result, "adopted", False) else (
                "resubmitted (duplicate)" if result.duplicate else "submitted")
            if getattr(result, "foreign", False):
                how = ("adopted: it was started outside PBS by the same Globus identity and "
                       "moves the same paths")
            action_log("submit", transfer=t.transfer_id, task=result.task_id, how=how,
                       identity=t.identity)
            for rid in self._request_ids(t.transfer_id):
                req = j.get_request(rid)
                j.add_event(req.job_id, f"stage{req.direction}_submitted",
                            f"Globus task {result.task_id} {how}", request_id=rid,
                            transfer_id=t.transfer_id, at=now,
                            data={"task_id": result.task_id})
                self._alert(f"stage{req.direction}_submitted", self._views.get(req.job_id),
                            job_id=req.job_id, owner=req.owner, task_id=result.task_id,
                            message=f"Globus task {result.task_id} {how}")

    def _awaits_user(self, t: object) -> bool:
        return any(self.journal.get_request(rid).state == decide.USER_ACTION
                   for rid in self._request_ids(t.transfer_id))

    def _backing_off(self, t: object, now: Optional[float] = None) -> bool:
        until = self.journal.get_meta(f"backoff:{t.transfer_id}")
        return bool(until) and float(until) > (self.clock() if now is None else now)

    def _back_off(self, t: object, why: str, now: float) -> None:
        """Try this transfer again after ``retry_delay`` and tell its owners
        why it waits (once per reason, not every pass)."""
        j = self.journal
        delay = float(self._agent("retry_delay"))
        j.set_meta(f"backoff:{t.transfer_id}", str(now + delay))
        action_log("submit_deferred", transfer=t.transfer_id, reason=why,
                   retry=f"{delay:.0f}s")
        if (t.message or "") == why:
            return
        with j.transaction():
            j.update_transfer(t.transfer_id, message=why)
            for rid in self._request_ids(t.transfer_id):
                req = j.get_request(rid)
                j.set_request_state(rid, req.state, message=why, now=now)
                j.add_event(req.job_id, f"stage{req.direction}_deferred",
                            f"{why}; retried every {delay:.0f} s", request_id=rid,
                            transfer_id=t.transfer_id, at=now)

    def _within_rate(self, identity: str) -> bool:
        """Keep each identity's Globus API calls within ``api_rate`` per second
        over this run (Globus allows about 20/s per user; leave room for the
        user's own tools).  Polls are already one call per 1,000 tasks."""
        calls = getattr(self.backend, "calls", None)
        if not isinstance(calls, Mapping):
            return True
        rate = float(self._agent("api_rate"))
        allowed = rate * max(1.0, self.clock() - self._api_start) + rate
        return calls.get(identity, 0) - self._api_base.get(identity, 0) + 2 <= allowed

    def _request_ids(self, transfer_id: int) -> List[int]:
        seen: Dict[int, None] = {}
        for item in self.journal.items_for_transfer(transfer_id):
            if item.request_id is not None:
                seen.setdefault(item.request_id, None)
        return list(seen)

    # ---------------------------------------------------------- graft / adopt
    def _graft(self, row: object, res: _Resolved, now: float) -> None:
        """``task=<uuid>``: wait on a task started elsewhere -- once the job
        owner's identity can see it (never trust a task id on its own)."""
        j = self.journal
        for task_id in res.tasks:
            if any(i.transfer_id and j.get_transfer(i.transfer_id).task_id == task_id
                   for i in j.items_for_request(row.request_id)):
                continue
            try:
                report = self.backend.get_task(row.identity, task_id)
            except RetryableError as exc:
                self._globus_trouble(str(exc))
                return
            except WaitingForUser as exc:
                j.set_request_state(row.request_id, decide.USER_ACTION, message=str(exc),
                                    action=exc.action, now=now)
                return
            except FatalError:
                self._fail_request(row, f"Globus task {task_id} is not visible to your Globus "
                                        "identity; graft only tasks you started yourself", now)
                return
            existing = j.transfer_by_task_id(task_id)
            with j.transaction():
                if existing is None:
                    tid = j.create_transfer(identity=row.identity, direction=row.direction,
                                            source_collection="", destination_collection="",
                                            options={}, label=report.label or "", deadline=None,
                                            now=now, grafted=True)
                    j.set_task_id(tid, task_id)
                    j.update_transfer(tid, status=_OUTCOME_STATUS.get(report.outcome, T_ACTIVE),
                                      submitted=now)
                else:
                    tid = existing.transfer_id
                # A grafted task's items are not ours to know: one marker item
                # links the request to it.
                j.add_items(tid, [ItemSpec(row.request_id, f"task={task_id}", f"task={task_id}",
                                           False)])
                j.set_request_state(row.request_id, decide.ACTIVE, now=now)
                j.add_event(row.job_id, f"stage{row.direction}_grafted",
                            f"waiting on existing Globus task {task_id}",
                            request_id=row.request_id, transfer_id=tid, at=now)
            action_log("graft", job=row.job_id, task=task_id)
            if report.outcome in (Outcome.DONE, Outcome.FATAL):
                self._record_report(j.get_transfer(tid), report, now)
                self._settle({tid}, now)

    def _adopt(self, row: object, now: float) -> bool:
        """Scenario D and dedup: the same request from the same identity is
        already on its way -- wait on that transfer instead of starting one.

        Only two kinds of transfer may be joined: one still moving (its end is
        after this job's submission, so whatever it delivers is news), and a
        finished one whose job left PBS without ever starting (the lost queue
        of scenario D: nobody has used or removed those data).  A transfer
        whose job ran proves nothing about the files now -- the job may have
        removed or changed them -- so that request gets a transfer of its own
        (with a sync level: see ``_plan_one``)."""
        j = self.journal
        grace = float(self._agent("orphan_grace"))
        for other in j.find_requests_by_key(row.request_key):
            if other.request_id == row.request_id or other.identity != row.identity:
                continue
            transfers = {i.transfer_id for i in j.items_for_request(other.request_id)}
            usable = []
            for tid in transfers:
                t = j.get_transfer(tid)
                if t.status in LIVE_TRANSFER or (
                        t.status == T_SUCCEEDED and (t.completed or 0) >= now - grace
                        and self._unused_since(t, row.request_id)):
                    usable.append(t)
            if not usable or len(usable) != len(transfers):
                continue
            with j.transaction():
                for t in usable:
                    items = [i for i in j.items_for_transfer(t.transfer_id)
                             if i.request_id == other.request_id]
                    j.add_items(t.transfer_id, [ItemSpec(row.request_id, i.source_path,
                                                         i.destination_path, bool(i.recursive))
                                                for i in items])
                    for item in j.items_for_transfer(t.transfer_id):
                        if item.request_id == row.request_id:
                            src = next((i for i in items if i.source_path == item.source_path and
                                        i.destination_path == item.destination_path), None)
                            if src is not None and src.outcome != "pending":
                                j.set_item_outcome(item.item_id, src.outcome, message=src.message)
                    if t.orphaned_since:
                        j.update_transfer(t.transfer_id, orphaned_since=None)
                j.set_request_state(row.request_id, decide.ACTIVE, now=now)
                tasks = ", ".join(t.task_id or "?" for t in usable)
                j.add_event(row.job_id, f"stage{row.direction}_adopted",
                            f"adopted Globus task {tasks} already moving the same data "
                            f"(request of job {other.job_id})", request_id=row.request_id,
                            at=now)
            action_log("adopt", job=row.job_id, from_job=other.job_id,
                       tasks=",".join(t.task_id or "" for t in usable))
            self._settle({t.transfer_id for t in usable}, now)
            return True
        return False

    def _unused_since(self, t: object, request_id: int) -> bool:
        """No job that a finished transfer served has started since."""
        return all(self._never_started(self.journal.get_request(rid).job_id)
                   for rid in self._request_ids(t.transfer_id) if rid != request_id)

    def _never_started(self, job_id: str) -> bool:
        """The job left PBS and nothing says it ever ran: the agent never
        released it (nor did an admin), no jobobit (PBS runs jobobit for every
        job that started) and no run seen."""
        j = self.journal
        job = j.get_job(job_id)
        if job is None or not job.gone_since or job.stage_state == "running":
            return False
        if j.obit(job_id) is not None:
            return False
        return not j.events(job_id, kind=("released", "admin_release", "job_started"), limit=1)

    # ------------------------------------------------------------------ polling
    def _poll(self, now: float) -> Set[int]:
        """One batched ``task_list`` per identity; returns changed transfer ids."""
        j = self.journal
        if self._served:
            # Full passes come with every wake-up; Globus is asked at most once
            # per poll_fast whatever wakes us (the cost bound of issue 10).
            if now - self._last_poll < float(self._agent("poll_fast")) - 0.05:
                return set()
            self._last_poll = now
        by_identity: Dict[str, List[object]] = {}
        for t in j.transfers(status=(T_ACTIVE, T_INACTIVE)):
            if t.task_id:
                by_identity.setdefault(t.identity, []).append(t)
        changed: Set[int] = set()
        self.stats.polls += 1
        for identity, rows in by_identity.items():
            try:
                reports = self.backend.poll(identity, [t.task_id for t in rows])
            except WaitingForUser as exc:
                # The login itself is gone (revoked, expired): every task of this
                # identity waits for the user, like INACTIVE, until polls work again.
                for t in rows:
                    if t.status != T_INACTIVE:
                        j.update_transfer(t.transfer_id, status=T_INACTIVE, message=str(exc))
                    self._transfer_needs_user(t, str(exc), exc.action, now)
                continue
            except EndpointTrouble as exc:
                # One collection's endpoint, not Globus: nothing to change.
                action_log("poll_deferred", identity=identity, reason=str(exc))
                continue
            except RetryableError as exc:
                # Transient: no job changes, back off to the next poll.
                self.stats.errors.append(f"globus: {exc}")
                self._globus_trouble(str(exc))
                continue
            except FatalError as exc:
                self.stats.errors.append(f"globus: {exc}")
                continue
            self._globus_ok()
            for t in rows:
                report = reports.get(t.task_id)
                if report is None:
                    report = self._lookup_missing(identity, t)
                    if report is None:
                        continue
                if self._record_report(t, report, now):
                    changed.add(t.transfer_id)
        return changed

    def _lookup_missing(self, identity: str, t: object) -> Optional[TaskReport]:
        try:
            return self.backend.get_task(identity, t.task_id)
        except FatalError as exc:
            return TaskReport(task_id=t.task_id, outcome=Outcome.FATAL, status="FAILED",
                              fatal_code="NOT_VISIBLE",
                              message=f"Globus task {t.task_id} is no longer visible: {exc}")
        except StagingError:
            return None

    def _record_report(self, t: object, report: TaskReport, now: float) -> bool:
        """Store what Globus said; fail fast on a fault that persists."""
        j = self.journal
        status = _OUTCOME_STATUS.get(report.outcome, t.status)
        if report.outcome == Outcome.DONE and report.skipped_errors == 0:
            self._nothing_skipped.add(t.transfer_id)
        fields: Dict[str, object] = dict(
            nice_status=report.nice_status, files=report.files,
            files_transferred=report.files_transferred, files_skipped=report.files_skipped,
            bytes_transferred=report.bytes_transferred, bytes_per_second=report.bytes_per_second,
            faults=report.faults, last_polled=now)
        if report.bytes_transferred != (t.bytes_transferred or 0) or \
                report.files_transferred != (t.files_transferred or 0):
            fields["last_progress"] = now
        late = self._past_site_deadline(t, now) if report.outcome in (
            Outcome.RUNNING, Outcome.WAITING_FOR_USER) else None
        fault = self._fatal_fault(t, report, now) if report.outcome == Outcome.RUNNING \
            and not late else None
        if late:
            self._cancel_task(t)
            status = T_FAILED
            fields.update(message=late, fatal_code="DEADLINE", completed=now)
            action_log("site_deadline", transfer=t.transfer_id, task=t.task_id)
        elif fault is not None:
            code, text = fault
            since = t.fault_since or now
            fields["fault_since"] = since
            fields["fatal_code"] = code
            window = float(self._agent("fatal_fault_window"))
            if decide.fault_expired(fault_since=since, now=now, window=window):
                self._cancel_task(t)
                status = T_FAILED
                fields.update(message=text, completed=now)
                action_log("fail_fast", transfer=t.transfer_id, task=t.task_id,
                           code=code, after=f"{now - since:.0f}s")
        elif report.outcome == Outcome.RUNNING:
            fields["fault_since"] = None
            fields["fatal_code"] = None
        if report.outcome == Outcome.FATAL:
            text = report.message
            if not text or text == report.fatal_code:
                text = self._explain(t) or text
            fields.update(fatal_code=report.fatal_code,
                          message=f"{report.fatal_code or 'FAILED'}: {text}" if text else
                          (report.fatal_code or "FAILED"), completed=now)
        if report.outcome == Outcome.WAITING_FOR_USER:
            fields.update(message=report.message, fatal_code=None)
        if report.outcome == Outcome.DONE:
            fields.update(completed=now, fatal_code=None, fault_since=None)
        fields["status"] = status
        was = (t.status, t.files_transferred, t.bytes_transferred, t.nice_status)
        j.update_transfer(t.transfer_id, **fields)
        if status == T_INACTIVE:
            self._note_user_action(t, report.message, report.action, now)
        return was != (status, report.files_transferred, report.bytes_transferred,
                       report.nice_status) or status != t.status

    def _fatal_fault(self, t: object, report: TaskReport,
                     now: float) -> Optional[Tuple[str, str]]:
        """(code, text) while the task keeps hitting a fatal-kind fault, from
        its event list.  nice_status shows an error only for
        nice_status_expires_in and may read OK between retries, so it only
        tells when to look: new faults, or a fault already being timed."""
        if not report.faults and not report.fatal_code:
            return None
        if report.bytes_transferred != (t.bytes_transferred or 0) or \
                report.files_transferred != (t.files_transferred or 0):
            return None   # it moves: whatever failed before is being overcome
        if report.faults == (t.faults or 0) and not report.fatal_code and not t.fault_since:
            return None
        if t.fault_since and report.faults == (t.faults or 0) and not decide.fault_expired(
                fault_since=t.fault_since, now=now,
                window=float(self._agent("fatal_fault_window"))):
            return (t.fatal_code or "", t.message or "")   # still timing; look again at expiry
        try:
            return self.backend.fatal_fault(t.identity, t.task_id)
        except StagingError:
            # Unknown this time: keep timing what was seen, start nothing new.
            return (t.fatal_code, t.message or t.fatal_code) if t.fault_since else None

    def _cancel_task(self, t: object) -> None:
        if (t.options or {}).get("foreign"):
            action_log("cancel_skipped", transfer=t.transfer_id, task=t.task_id,
                       reason="started outside PBS")
            return
        try:
            self.backend.cancel(t.identity, t.task_id)
        except StagingError as exc:
            log.warning("cancel of %s failed: %s", t.task_id, exc)

    def _explain(self, t: object) -> str:
        try:
            return self.backend.explain(t.identity, t.task_id)
        except StagingError:
            return ""

    def _repair(self, now: float) -> None:
        """Finish what a killed run left half done: a task's end recorded but
        its items not settled, items settled but the request not updated."""
        j = self.journal
        unsettled = j.unsettled_transfer_ids()
        if unsettled:
            action_log("repair", transfers=len(unsettled))
            self._settle(unsettled, now)
        for rid in j.settled_request_ids((decide.PENDING, decide.QUEUED, decide.ACTIVE,
                                          decide.USER_ACTION)):
            self._refresh_request(rid, now)

    # ---------------------------------------------------------------- settling
    def _settle(self, transfer_ids: Iterable[int], now: float) -> Set[str]:
        """Turn transfer outcomes into item and request outcomes; returns jobs touched."""
        j = self.journal
        touched: Set[str] = set()
        for tid in transfer_ids:
            t = j.get_transfer(tid)
            items = j.items_for_transfer(tid)
            if t.status == T_SUCCEEDED:
                pending = [i for i in items if i.outcome == "pending"]
                if pending and t.grafted:
                    # task=<uuid>: the owner vouches for a task started elsewhere.
                    for item in pending:
                        j.set_item_outcome(item.item_id, "succeeded")
                elif pending:
                    # Positive evidence only: a SUCCEEDED task moved every path it
                    # does not list as skipped (task_successful_transfers leaves out
                    # directories and sync-skipped files, so it cannot say this).
                    skipped = self._skipped_errors(t)
                    if skipped is None:
                        continue   # not known yet: the items stay pending; _repair retries
                    with j.transaction():
                        for item in pending:
                            why = _item_failure(item, skipped)
                            if why is None:
                                j.set_item_outcome(item.item_id, "succeeded")
                            else:
                                j.set_item_outcome(item.item_id, "failed", message=why)
            elif t.status in (T_FAILED, T_CANCELED):
                for item in items:
                    if item.outcome == "pending":
                        j.set_item_outcome(item.item_id, "failed", message=t.message or t.status)
            for rid in {i.request_id for i in items if i.request_id is not None}:
                job = self._refresh_request(rid, now)
                if job:
                    touched.add(job)
        return touched

    def _skipped_errors(self, t: object) -> Optional[List[Tuple[str, str, str]]]:
        """What Globus skipped in ``t`` (source, destination, error code); None
        when Globus cannot say now -- never taken as "nothing skipped"."""
        if t.transfer_id in self._nothing_skipped:
            return []
        try:
            found = self.backend.skipped_errors(t.identity, t.task_id)
        except StagingError as exc:
            action_log("settle_deferred", transfer=t.transfer_id, task=t.task_id,
                       reason=str(exc))
            return None
        return [(e.source_path, e.destination_path, e.error_code) for e in found]

    def _refresh_request(self, request_id: int, now: float) -> Optional[str]:
        j = self.journal
        req = j.get_request(request_id)
        if req.state in decide.FINAL:
            return None
        items = j.items_for_request(request_id)
        verdict = decide.summarize(i.outcome for i in items)
        transfers = [j.get_transfer(tid) for tid in {i.transfer_id for i in items}]
        if verdict is True:
            new, msg, action = decide.SUCCEEDED, "", ""
        elif verdict is False:
            failed = [i for i in items if i.outcome == "failed"]
            new, msg, action = decide.FAILED, (failed[0].message or "transfer failed"), ""
        elif any(t.status == T_INACTIVE for t in transfers):
            t = next(t for t in transfers if t.status == T_INACTIVE)
            new, msg = decide.USER_ACTION, t.message or "Globus needs you to log in again"
            action = req.action or "globus-staging login"
        elif any(t.status in (T_ACTIVE,) and t.task_id for t in transfers):
            new, msg, action = decide.ACTIVE, "", ""
        else:
            return None
        if new == req.state:
            return req.job_id
        retries = int(self._agent("stageout_retries"))
        # An administrator's cancel is a decision, not a fault: not retried.
        by_admin = any(t.fatal_code == "CANCELED_BY_ADMIN" for t in transfers)
        if new == decide.FAILED and req.direction == "out" and (req.attempts or 0) < retries \
                and not by_admin:
            # A failed stage-out is retried with a fresh transfer after a growing
            # wait -- never silently dropped: each retry is in the job's history.
            delay = float(self._agent("retry_delay")) * 2 ** (req.attempts or 0)
            with j.transaction():
                j.retire_failed_items(request_id)
                j.set_request_state(request_id, decide.PENDING, message=msg,
                                    next_attempt=now + delay, count_attempt=True, now=now)
                j.add_event(req.job_id, "stageout_retry",
                            f"stage-out failed ({msg}); retry {(req.attempts or 0) + 1} of "
                            f"{retries} in {delay:.0f} s", request_id=request_id, at=now)
            action_log("stageout_retry", job=req.job_id, attempt=(req.attempts or 0) + 1,
                       delay=f"{delay:.0f}s", reason=msg)
            return req.job_id
        kind = {decide.SUCCEEDED: "succeeded", decide.FAILED: "failed",
                decide.USER_ACTION: "user_action",
                decide.ACTIVE: "resumed" if req.state == decide.USER_ACTION else "active"}[new]
        event_kind = "user_action" if new == decide.USER_ACTION else f"stage{req.direction}_{kind}"
        with j.transaction():
            self._transition(request_id, req.job_id, new, kind=event_kind,
                             text=msg or f"stage-{req.direction} {kind}", message=msg or None,
                             action=action or None, now=now)
            if new == decide.FAILED and req.direction == "in":
                # Seed scenario B: neither the job nor its stage-out may run.
                so = self._request_for(req.job_id, "out")
                if so is not None and so.state not in decide.FINAL:
                    self._skip_stageout(so, "the stage-in failed, so the job did not run", now)
        action_log(f"request_{kind}", job=req.job_id, direction=req.direction, message=msg)
        if new not in (decide.ACTIVE, decide.USER_ACTION):  # user-action: see _conditions
            view = self._views.get(req.job_id)
            task = next((t.task_id for t in transfers if t.task_id), "")
            self._alert(event_kind, view, job_id=req.job_id, owner=req.owner, task_id=task,
                        message=msg, action=action)
        return req.job_id

    # ------------------------------------------------------------- job actions
    def _status_for(self, req: object, transfers: Optional[List[object]] = None
                    ) -> RequestStatus:
        j = self.journal
        if transfers is None:
            transfers = j.transfers_by_request([req.request_id])[req.request_id]
        tasks = tuple(t.task_id for t in transfers if t.task_id)
        progress = ""
        live = [t for t in transfers if t.status in LIVE_TRANSFER and t.task_id]
        if live:
            t = live[0]
            progress = decide.progress_text(
                files=t.files or 0, files_done=t.files_transferred or 0,
                bytes_done=t.bytes_transferred or 0, rate=t.bytes_per_second or 0.0,
                nice_status=t.nice_status, task_id=t.task_id)
        return RequestStatus(state=req.state, message=req.message or "",
                             action=req.action or "", tasks=tasks, progress=progress)

    def _apply_stagein(self, views: Iterable[JobView]) -> None:
        j = self.journal
        policy = str(self._agent("stagein_failure"))
        views = [v for v in views if v.stagein is not None]
        # Two queries for all jobs instead of several per job.
        reqs = {r.job_id: r for r in j.requests_for_jobs(v.job_id for v in views)
                if r.direction == "in"}
        transfers = j.transfers_by_request(r.request_id for r in reqs.values())
        # Releases first: a job whose data are in place must not wait behind
        # other jobs' progress comments.
        views.sort(key=lambda v: reqs[v.job_id].state != decide.SUCCEEDED
                   if v.job_id in reqs else True)
        for view in views:
            if self._out_of_time():
                break
            req = reqs.get(view.job_id)
            if req is None:
                continue
            with self._guard(view.job_id):
                self._apply_one(view, policy, req, transfers.get(req.request_id, []))

    def _apply_one(self, view: JobView, policy: str, req: object,
                   transfers: List[object]) -> None:
        j = self.journal
        status = self._status_for(req, transfers)
        options = self._options(req.normalized, "in")
        cleanup = getattr(options, "cleanup", None) if options is not None else None
        onfail = getattr(options, "onfail", None) if options is not None else None
        cleanup_done = bool(cleanup and j.get_meta(f"cleanup:{view.job_id}"))
        acts = decide.stagein_actions(view, status, failure_policy=onfail or policy,
                                      cleanup=cleanup, cleanup_done=cleanup_done)
        if acts:
            self._apply(view, acts)

    def _apply(self, view: JobView, acts: Sequence[decide.Action]) -> None:
        """Apply one job's actions in order; resource and comment changes share
        one ``qalter`` so a state change costs PBS one command."""
        j = self.journal
        now = self.clock()
        resources: Dict[str, str] = {}
        comment: Optional[str] = None
        rest: List[decide.Action] = []
        for a in acts:
            if a.kind == "set_state":
                resources[states.RES_STATE] = a.value
                if a.reason:
                    resources[states.RES_TASKS] = a.reason.replace(",", "+")
            elif a.kind == "comment":
                comment = a.value
            elif a.kind == "progress":
                if self._progress_left > 0:
                    self._progress_left -= 1
                    comment = a.value
            else:
                rest.append(a)
        try:
            if resources or comment is not None:
                self.pbs.alter(view.job_id, resources=resources, comment=comment)
                view = dataclasses.replace(
                    view, stage_state=resources.get(states.RES_STATE, view.stage_state),
                    comment=comment if comment is not None else view.comment)
                if states.RES_STATE in resources:
                    action_log("set_state", job=view.job_id, state=resources[states.RES_STATE])
            for a in rest:
                if a.kind == "release":
                    self.pbs.release(view.job_id, hold="s")
                    view = dataclasses.replace(view, holds=view.holds.replace("s", ""))
                    self.stats.released += 1
                    j.add_event(view.job_id, "released", "system hold released: stage-in done",
                                at=now)
                elif a.kind == "hold":
                    self.pbs.hold(view.job_id, hold="s")
                    view = dataclasses.replace(view, holds=view.holds + "s")
                elif a.kind == "delete":
                    self.pbs.delete(view.job_id)
                    j.add_event(view.job_id, "deleted", f"job deleted: stage-in failed ({a.reason})",
                                at=now)
                elif a.kind == "submit_cleanup":
                    self._submit_cleanup(view, a.value, a.reason)
                action_log(a.kind, job=view.job_id, value=a.value)
        except JobGone:
            action_log("job_gone", job=view.job_id)
        except FatalError as exc:
            log.warning("PBS refused a change to %s: %s", view.job_id, exc)
            j.add_event(view.job_id, "pbs_error", str(exc), at=now)
        finally:
            self._views[view.job_id] = view

    def _set_job_state(self, view: JobView, word: str) -> bool:
        try:
            comment = "staging: stage-in starting" if word == states.STAGING_IN else None
            self.pbs.alter(view.job_id, resources={states.RES_STATE: word}, comment=comment)
        except JobGone:
            return False
        except FatalError as exc:
            log.warning("cannot mark %s %s: %s", view.job_id, word, exc)
            return False
        self._views[view.job_id] = dataclasses.replace(view, stage_state=word,
                                                       comment=comment or view.comment)
        action_log("set_state", job=view.job_id, state=word)
        return True

    def _submit_cleanup(self, view: JobView, script: str, reason: str) -> None:
        """The seed's V1 'cleanup job': submitted as the job owner, never as root."""
        j = self.journal
        try:
            new_id = self.pbs.submit(script, user=view.owner, args=[
                "-N", "stagein-cleanup", "-v", f"GLOBUS_STAGEIN_FAILED_JOB={view.job_id}"],
                cwd=os.path.dirname(script) or None)
        except StagingError as exc:
            j.add_event(view.job_id, "cleanup_failed", f"cleanup job not submitted: {exc}")
            return
        j.set_meta(f"cleanup:{view.job_id}", new_id)
        j.add_event(view.job_id, "cleanup_submitted", f"cleanup job {new_id} submitted ({script})")

    # ---------------------------------------------------------------- stage-out
    def _stageouts(self, views: Mapping[str, JobView], now: float) -> int:
        """After a job ends: decide and start its stage-out (default only after
        exit status 0, as the seed's afterok)."""
        j = self.journal
        default_when = str(self._agent("stageout_when"))
        budget = int(self._agent("max_history_lookups"))
        started = 0
        for req in j.requests(state=(decide.WAITING_EXIT,), direction="out"):
            with self._guard(req.job_id):
                view = views.get(req.job_id)
                if view is not None and not view.finished:
                    continue
                exit_status = None
                obit = j.obit(req.job_id)
                if obit is not None and obit.stageout and obit.stageout != req.raw:
                    req = self._restate_stageout(req, obit, now)
                    if req is None:
                        continue
                if obit is not None:
                    exit_status = obit.exit_status
                elif view is not None and view.exit_status is not None:
                    exit_status = view.exit_status
                else:
                    if budget <= 0:
                        continue
                    budget -= 1
                    try:
                        attrs = self.pbs.job(req.job_id)
                    except RetryableError:
                        return started
                    if attrs is None:
                        self._skip_stageout(req, "the job is no longer known to PBS and never "
                                                 "reported an exit status", now)
                        continue
                    hv = JobView.from_qstat(req.job_id, attrs)
                    if not hv.finished:
                        continue
                    exit_status = hv.exit_status
                    if exit_status is None:
                        self._skip_stageout(req, "the job was deleted before it ran", now)
                        continue
                stagein = self._request_for(req.job_id, "in")
                if stagein is not None and stagein.state != decide.SUCCEEDED:
                    self._skip_stageout(req, "the stage-in did not succeed", now)
                    continue
                options = self._options(req.normalized, "out")
                when = getattr(options, "when", None) or default_when
                wanted = decide.stageout_wanted(when, exit_status)
                if not wanted:
                    self._skip_stageout(req, f"exit status {exit_status} does not match when={when}",
                                        now, exit_status=exit_status)
                    continue
                self._transition(req.request_id, req.job_id, decide.PENDING, kind="job_ended",
                                 text=f"job ended with exit status {exit_status}; stage-out starting",
                                 now=now)
                started += 1
        return started

    def _restate_stageout(self, req: object, obit: object, now: float) -> Optional[object]:
        """The job's stageout_globus as it ended (qalter may change it while the job
        runs; the jobobit hook recorded the last value) replaces what was registered."""
        j = self.journal
        try:
            res = self._resolve(obit.stageout, direction="out", owner=req.owner,
                                project=obit.project or None)
        except StagingError as exc:
            self._fail_request(req, str(exc), now)
            return None
        with j.transaction():
            j.update_request(req.request_id, raw=obit.stageout, normalized=res.normalized,
                             request_key=res.key, now=now)
            j.add_event(req.job_id, "stageout_requested",
                        f"stage-out request changed before the job ended: {res.normalized}",
                        request_id=req.request_id, at=now)
        return j.get_request(req.request_id)

    def _skip_stageout(self, req: object, why: str, now: float,
                       exit_status: Optional[int] = None) -> None:
        self._transition(req.request_id, req.job_id, decide.SKIPPED, kind="stageout_skipped",
                         text=f"stage-out skipped: {why}", message=why, now=now)
        action_log("stageout_skipped", job=req.job_id, reason=why)

    # --------------------------------------------------------- vanished jobs
    def _vanished(self, views: Mapping[str, JobView], now: float) -> None:
        """Stage-ins whose job left PBS before running (deleted, or the queue
        was lost): keep the transfer for a grace period so a resubmission can
        adopt it (scenario D), then cancel it."""
        j = self.journal
        for req in j.requests_of_unseen_jobs(
                states=(decide.PENDING, decide.QUEUED, decide.ACTIVE, decide.USER_ACTION),
                direction="in", seen_before=now):
            with self._guard(req.job_id):
                if req.job_id in views:
                    continue
                if j.obit(req.job_id) is not None:
                    continue
                try:
                    attrs = self.pbs.job(req.job_id)
                except RetryableError:
                    return
                if attrs is not None and JobView.from_qstat(req.job_id, attrs).state not in ("F", "X"):
                    continue
                with j.transaction():
                    j.mark_gone(req.job_id, now=now)
                    for item in j.items_for_request(req.request_id):
                        t = j.get_transfer(item.transfer_id)
                        if t.status in LIVE_TRANSFER and not t.orphaned_since:
                            j.update_transfer(t.transfer_id, orphaned_since=now)
                    j.add_event(req.job_id, "job_deleted",
                                "job left PBS during stage-in; its transfer is kept "
                                f"{float(self._agent('orphan_grace')):.0f} s for a resubmission "
                                "to adopt", request_id=req.request_id, at=now)
                    if req.state in (decide.PENDING, decide.QUEUED):
                        j.set_request_state(req.request_id, decide.CANCELED,
                                            message="job left PBS before its stage-in started",
                                            now=now)
                    so = self._request_for(req.job_id, "out")
                    if so is not None and so.state not in decide.FINAL:
                        self._skip_stageout(so, "the job left PBS before it ran", now)
                action_log("job_vanished", job=req.job_id)
                self._alert("job_deleted", None, job_id=req.job_id, owner=req.owner,
                            message="job left PBS while its stage-in was running")

    def _reap_orphans(self, now: float) -> None:
        j = self.journal
        grace = float(self._agent("orphan_grace"))
        for t in j.transfers(status=LIVE_TRANSFER):
            if not t.orphaned_since or now - t.orphaned_since < grace:
                continue
            live = [r for r in (j.get_request(rid) for rid in self._request_ids(t.transfer_id))
                    if r.state not in decide.FINAL and not (j.get_job(r.job_id) and
                                                           j.get_job(r.job_id).gone_since)]
            if live:
                j.update_transfer(t.transfer_id, orphaned_since=None)
                continue
            if t.task_id and not t.grafted and not (t.options or {}).get("foreign"):
                try:
                    self.backend.cancel(t.identity, t.task_id)
                except RetryableError:
                    continue
                except StagingError as exc:
                    log.warning("cancel of orphan %s: %s", t.task_id, exc)
            with j.transaction():
                j.update_transfer(t.transfer_id, status=T_CANCELED, completed=now,
                                  message="canceled: its job left PBS and no resubmission adopted "
                                          f"it within {grace:.0f} s")
                for rid in self._request_ids(t.transfer_id):
                    r = j.get_request(rid)
                    if r.state not in decide.FINAL:
                        j.set_request_state(rid, decide.CANCELED, message="job gone; transfer canceled",
                                            now=now)
                    j.add_event(r.job_id, "transfer_canceled",
                                f"Globus task {t.task_id} canceled after the grace period",
                                request_id=rid, transfer_id=t.transfer_id, at=now)
            action_log("cancel_orphan", transfer=t.transfer_id, task=t.task_id)

    # ------------------------------------------------------------------ misc
    @contextlib.contextmanager
    def _guard(self, job_id: str):
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
                self.journal.add_event(job_id, "agent_error",
                                       f"internal error, retried next cycle: "
                                       f"{type(exc).__name__}: {exc}"[:500])
            except StagingError:
                pass

    def _transition(self, request_id: int, job_id: str, state: str, *, kind: str, text: str,
                    now: float, message: Optional[str] = None, action: Optional[str] = None,
                    transfer_id: Optional[int] = None) -> None:
        """A request's new state and the history line saying so, in one
        transaction: a kill between the two would lose the line for good."""
        j = self.journal
        with j.transaction():
            j.set_request_state(request_id, state, message=message, action=action, now=now)
            j.add_event(job_id, kind, text, request_id=request_id, transfer_id=transfer_id,
                        at=now)

    def _request_for(self, job_id: str, direction: str) -> Optional[object]:
        for row in self.journal.requests_for_job(job_id):
            if row.direction == direction:
                return row
        return None

    def _fail_request(self, row: object, message: str, now: float) -> None:
        self._transition(row.request_id, row.job_id, decide.FAILED,
                         kind=f"stage{row.direction}_failed", text=message, message=message,
                         now=now)
        action_log("request_failed", job=row.job_id, reason=message)
        self._alert(f"stage{row.direction}_failed", self._views.get(row.job_id),
                    job_id=row.job_id, owner=row.owner, message=message)

    def _transfer_failed(self, t: object, message: str, now: float, *, code: str) -> None:
        self.journal.update_transfer(t.transfer_id, status=T_FAILED, fatal_code=code,
                                     message=message, completed=now)
        self._settle({t.transfer_id}, now)

    def _transfer_needs_user(self, t: object, message: str, action: str, now: float) -> None:
        j = self.journal
        for rid in self._request_ids(t.transfer_id):
            req = j.get_request(rid)
            if req.state == decide.USER_ACTION and req.message == message:
                continue
            text = message if (not action or action in message) else f"{message}; run: {action}"
            self._transition(rid, req.job_id, decide.USER_ACTION, kind="user_action", text=text,
                             message=message, action=action or "globus-staging login", now=now,
                             transfer_id=t.transfer_id)
            action_log("user_action", job=req.job_id, reason=message)

    def _note_user_action(self, t: object, message: str, action: str, now: float) -> None:
        self._transfer_needs_user(t, message or "Globus credentials expired",
                                  action or "globus-staging login", now)

    def _globus_trouble(self, message: str) -> None:
        j = self.journal
        if not j.get_meta("globus_down_since"):
            j.set_meta("globus_down_since", str(self.clock()))
            action_log("globus_unreachable", reason=message)

    def _globus_ok(self) -> None:
        j = self.journal
        if j.get_meta("globus_down_since"):
            j.set_meta("globus_down_since", "")
            action_log("globus_reachable")

    def _alert(self, kind: str, view: Optional[JobView], **fields: object) -> None:
        if self.alerts is None:
            return
        event = {"kind": kind, "time": self.clock()}
        if view is not None:
            event.update(job_id=view.job_id, owner=view.owner, queue=view.queue,
                         project=view.project, mail_points=view.mail_points,
                         mail_users=list(view.mail_users))
        event.update({k: v for k, v in fields.items() if v is not None})
        self._events.append(event)

    def _health_alert(self) -> None:
        """Three failed runs in a row (this one included): tell the admins."""
        if self.alerts is None or self.stats.ok:
            return
        try:
            recent = [c for c in self.journal.last_cycles(3) if c.finished]
        except StagingError:
            recent = []
        if len(recent) >= 2 and not any(c.ok for c in recent[:2]):
            self._alert("agent_unhealthy", None, key="agent_unhealthy",
                        message="the staging agent's last runs failed: "
                                + "; ".join(self.stats.errors)[:300])

    def _flush_alerts(self) -> None:
        if self.alerts is None or not self._events:
            return
        events, self._events = self._events, []
        try:
            self.alerts(events)
        except Exception as exc:  # alerts must never stop the agent
            log.warning("alert delivery failed: %s", exc)


def content_tag(batch: decide.Batch) -> str:
    """``[c:<hash of the task's items>]`` in the label: lets a 409 Conflict
    ("identical paths") be traced to the task already moving the same data."""
    import hashlib
    h = hashlib.sha256()
    h.update(f"{batch.source_collection}\0{batch.destination_collection}\0".encode())
    for src, dst, rec in sorted({(i.source_path, i.destination_path, i.recursive)
                                 for i in batch.items}):
        h.update(f"{src}\0{dst}\0{int(rec)}\0".encode())
    return f"[c:{h.hexdigest()[:12]}]"


def _item_failure(item: object, skipped: Sequence[Tuple[str, str, str]]) -> Optional[str]:
    return decide.item_failure(source_path=item.source_path,
                               destination_path=item.destination_path,
                               recursive=bool(item.recursive), skipped=skipped)


def _duration_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _total_calls(backend: object) -> int:
    calls = getattr(backend, "calls", 0)
    if isinstance(calls, Mapping):
        return int(sum(calls.values()))
    try:
        return int(calls)
    except (TypeError, ValueError):
        return 0
