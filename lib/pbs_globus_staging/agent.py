"""The staging agent: the loop that drives the phases (``phases/``) -- the
only part that talks to Globus and the only part that changes jobs.

A run is bounded by a time budget (the periodic hook's alarm).  Within it, a
full pass (every phase) is followed by cheap Globus polls every
``poll_interval`` seconds, so a finished stage-in frees its job within
seconds instead of a hook period.  Every step is idempotent and journalled
first, so a run killed at any point (the alarm, a crash, ``kill -9``) is
repaired by the next one: no transfer is submitted twice, no job is released
early.

A full pass, in order (docs/internals.md, "The agent's phases"):

    intake      read PBS, register new requests, adopt a moving transfer
    settle      repair what a killed run left half done
    submit      plan + batch + submit
    poll        ask Globus; fail fast
    settle      outcomes -> items -> requests -> job actions (release)
    stageout    finished jobs' stage-outs (then submit again)
    orphans     jobs that left PBS while staging; orphaned tasks
    conditions  alerts for what persists; housekeeping

The phases decide nothing themselves: every rule is a pure function of
``decide``.  Each phase takes the ``Context`` and the state objects it
reads or writes, all owned here.
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Mapping, Optional

from . import siteconfig
from .backend import TransferBackend
from .decide import LIVE_TRANSFER, JobView  # noqa: F401
from .errors import RetryableError
from .pbsctl import PbsCommands
from .phases import conditions, intake, orphans, poll, settle, stageout, submit
from .phases.context import (AlertSink, Context, CycleStats, RunState, Views,  # noqa: F401
                             action_log, total_calls)
from .decide import content_tag  # noqa: F401  (kept importable from here)

__all__ = ["Agent", "CycleStats", "action_log", "content_tag"]


class Agent:
    def __init__(self, *, config: object, journal: object, pbs: PbsCommands,
                 backend: TransferBackend, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 alerts: Optional[Callable[[List[dict]], None]] = None) -> None:
        self.ctx = Context(config=config, journal=journal, pbs=pbs, backend=backend,
                           clock=clock, alerts=AlertSink(alerts))
        self.ctx.run.api_start = clock()
        self.sleep = sleep
        self.should_stop: Callable[[], bool] = lambda: False   # a serving agent's signal
        # The phases' state, owned by the loop.
        self.views = Views()
        self.submitting = submit.SubmitState()
        self.polling = poll.PollState()
        self.settling = settle.SettleState()

    # The collaborators, as before the phases (serve.py, commands, testing use them).
    cfg = property(lambda self: self.ctx.cfg)
    journal = property(lambda self: self.ctx.journal)
    pbs = property(lambda self: self.ctx.pbs)
    backend = property(lambda self: self.ctx.backend)
    clock = property(lambda self: self.ctx.clock)

    @property
    def stats(self) -> CycleStats:
        return self.ctx.run.stats

    @stats.setter
    def stats(self, value: CycleStats) -> None:
        self.ctx.run.stats = value

    # A setting, from site.yaml's agent: or its one default (siteconfig.AgentSettings).
    _agent = property(lambda self: self.ctx.setting)
    # When this run stops starting new work.
    _run_deadline = property(lambda self: self.ctx.run.deadline)

    def identity_for(self, owner: str) -> str:
        return self.ctx.identity_for(owner)

    # --------------------------------------------------------------------- run
    def run(self, *, budget: Optional[float] = None,
            waiter: Optional[Callable[[float], bool]] = None) -> CycleStats:
        """One bounded agent run: a full pass, then polls until the budget ends.

        With ``waiter`` (the serving agent, ``agent --serve``) the run lasts its
        whole budget whether or not anything is in flight, and sleeps in
        ``waiter(seconds)``, which returns early (True) when a hook wakes it:
        see ``_serve_loop``."""
        ctx = self.ctx
        budget = float(budget if budget is not None else (ctx.setting("cycle_budget")
                                                        or siteconfig.STANDALONE_CYCLE_BUDGET))
        if waiter is not None:
            return self._run_served(budget, waiter)
        interval = float(ctx.setting("poll_interval"))
        rescan = max(interval, float(ctx.setting("rescan_interval")))
        cpu0 = time.process_time()
        start = self.clock()
        self._start_run(start, budget)
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
                if self.clock() - last_full >= rescan and not ctx.out_of_time():
                    self.full_pass()
                    last_full = self.clock()
                else:
                    self.poll_pass()
        except RetryableError as exc:
            self._stopped(exc)
        finally:
            self._finish_run(cycle_id, cpu0)
        return self.stats

    def _start_run(self, start: float, budget: float, *, served: bool = False,
                   api_base: Optional[Dict[str, int]] = None) -> None:
        # Stop starting new work a little before the budget ends (a quarter of
        # it at most), leaving time to finish what is under way.
        self.ctx.run = RunState(stats=CycleStats(started=start),
                                deadline=start + budget - min(1.0, 0.25 * budget),
                                api_start=start,
                                api_base=self.ctx.run.api_base if api_base is None else api_base,
                                served=served or self.ctx.run.served)

    def _run_served(self, budget: float, waiter: Callable[[float], bool]) -> CycleStats:
        cpu0 = time.process_time()
        start = self.clock()
        # The backend's counts span the process's life; the rate applies per run.
        calls = getattr(self.backend, "calls", None)
        self._start_run(start, budget, served=True,
                        api_base=dict(calls) if isinstance(calls, Mapping) else {})
        pbs0, globus0 = self.pbs.calls, total_calls(self.backend)
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
        s = self.stats
        s.finished = self.clock()
        s.cpu_seconds = time.process_time() - cpu0
        s.pbs_calls = self.pbs.calls - pbs0
        s.globus_calls = total_calls(self.backend) - globus0
        conditions.health_alert(self.ctx)
        self.ctx.alerts.flush()
        if cycle_id is not None:
            try:
                self.journal.finish_cycle(
                    cycle_id, now=s.finished, ok=s.ok,
                    error="; ".join(s.errors)[:1000] or None, globus_calls=s.globus_calls,
                    pbs_calls=s.pbs_calls, cpu_seconds=s.cpu_seconds,
                    jobs=len(self.views.jobs), transfers=s.submitted)
            except (RetryableError, AttributeError, TypeError) as exc:
                self.ctx.log.warning("journal finish_cycle failed: %s", exc)

    # After a wake-up, look at PBS this soon and again a little later: the
    # queuejob hook wakes us before pbs_server has enqueued the job.
    WAKE_LOOKS = (0.15, 0.6, 2.0)

    def _serve_loop(self, end: float, waiter: Callable[[float], bool]) -> None:
        """Event-driven within one served run: a full pass when a hook wakes
        us (qsub, job end) or every ``rescan_interval``; Globus polls paced by
        ``decide.poll_delay`` (fast only while a task may be about to end);
        between them, asleep in ``waiter``.  No busy loop: with nothing in
        flight and no wake-up it is one PBS read per ``rescan_interval``."""
        rescan = float(self.ctx.setting("rescan_interval"))
        self.full_pass()
        last_full = self.clock()
        looks: List[float] = []
        while True:
            now = self.clock()
            if now >= end - 0.05 or self.should_stop():
                return
            due_full = min([last_full + rescan] + looks)
            # From the last real poll: a full pass polls only if one is due.
            due_poll = self.polling.last_poll + poll.delay(
                self.ctx, now=now, pending=bool(self.submitting.pending_left))
            if now < min(due_full, due_poll):
                if waiter(max(0.0, min(due_full, due_poll, end) - now)):
                    woke = self.clock()
                    looks = sorted(set(looks) | {woke + d for d in self.WAKE_LOOKS})
                    self.ctx.alerts.flush()
                continue
            if now >= due_full:
                looks = [t for t in looks if t > now]
                self.full_pass()
                last_full = self.clock()
            else:
                self.poll_pass()
            self.ctx.alerts.flush()

    def _has_live_work(self) -> bool:
        return bool(self.submitting.pending_left or
                    self.journal.transfers(status=LIVE_TRANSFER))

    # --------------------------------------------------------------- passes
    def full_pass(self) -> None:
        """Every phase, in order; safe to repeat at any point."""
        ctx, views, settled = self.ctx, self.views, self.settling
        ctx.stats.passes += 1
        settled.progress_left = int(ctx.setting("max_progress_comments"))
        now = self.clock()
        jobs = intake.run_cycle(ctx, views, settled, now=now)
        settle.repair(ctx, settled, views, now=now)
        submit.run_cycle(ctx, self.submitting, views, settled, now=now)
        changed = poll.run_cycle(ctx, self.polling, settled, now=now)
        settle.run_cycle(ctx, settled, views, changed, now=now)
        if jobs is not None:
            settle.apply_stagein(ctx, settled, views, jobs.values())
            if stageout.run_cycle(ctx, views, jobs, now=now):
                # results leave now, not a pass later
                submit.run_cycle(ctx, self.submitting, views, settled, now=now)
        orphans.run_cycle(ctx, jobs or {}, now=now, pbs_read=jobs is not None)
        conditions.run_cycle(ctx, views, now=now)
        if jobs is not None:
            conditions.housekeeping(ctx, now=now)

    def poll_pass(self) -> None:
        """The cheap loop step: poll Globus; touch PBS only for what changed."""
        ctx, views, settled = self.ctx, self.views, self.settling
        now = self.clock()
        settled.progress_left = 0
        changed = poll.run_cycle(ctx, self.polling, settled, now=now)
        jobs = settle.run_cycle(ctx, settled, views, changed, now=now)
        if self.submitting.pending_left and any(
                self.journal.get_transfer(t).status not in LIVE_TRANSFER for t in changed):
            submit.run_cycle(ctx, self.submitting, views, settled, now=now)  # a slot came free
        if jobs:
            settle.apply_stagein(ctx, settled, views,
                                 (views.jobs[j] for j in jobs if j in views.jobs))

