"""Admin actions on one job: ``retry``, ``cancel``, ``adopt``, ``release``.

Root only.  Each goes through the journal and PBS's own commands (never the
``pbs`` module), is recorded as a journal event naming who did it, and leaves
the rest to the agent's next cycle -- which is also what repairs a crash in
the middle of one of them.  The order of the two writes is chosen so that a
crash between them falls back to the old, safe state:

- ``retry``/``adopt``: PBS first (hold ``s`` on, state word back), then the
  journal.  Killed in between, the journal still says "failed" and the agent
  puts the job back to stagein-failed: the job never runs without its data.
- ``release``: the journal first (the request is marked done by the admin),
  then PBS.  Killed in between, the agent sees a succeeded request and
  finishes the release itself -- what the admin asked for.
- ``cancel``: Globus first (the task is canceled), then the journal.  Killed
  in between, the agent polls the task, finds it canceled and fails the
  request the ordinary way.
"""
from __future__ import annotations

import time
import uuid
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import decide, states
from ..decide import JobView
from ..errors import FatalError, WaitingForUser
from ..journal import ItemSpec
from . import (EXIT_BAD, EXIT_NOTFOUND, EXIT_OK, EXIT_RETRY, EXIT_USAGE, CliExit,
               acting_admin, emit, require_root)
from .show import resolve_job_id

LIVE = ("new", "submitting", "active", "inactive")
_OUTCOME_STATUS = {"done": "succeeded", "fatal": "failed", "waiting_for_user": "inactive",
                   "running": "active", "transient": "active"}


# ------------------------------------------------------------------ plumbing
class _Ctx:
    def __init__(self, args: Any) -> None:
        from ..cli import load_site, open_journal
        from ..pbsctl import PbsCommands
        self.args = args
        self.cfg = load_site(args.config)
        self.journal = open_journal(self.cfg)
        self.pbs = PbsCommands(pbs_exec=self.cfg.pbs.exec)
        self.by = acting_admin()
        self._backend = None

    def backend(self) -> Any:
        if self._backend is None:
            from ..cli import make_backend
            self._backend = make_backend(self.cfg)
        return self._backend

    def close(self) -> None:
        self.journal.close()
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()

    def job_id(self) -> str:
        job_id = resolve_job_id(self.journal, self.args.jobid)
        if job_id is None:
            raise CliExit(EXIT_NOTFOUND, f"no staging record for job {self.args.jobid} "
                                         "(the agent records a job on its first cycle)")
        return job_id

    def requests(self, job_id: str) -> Dict[str, Any]:
        return {r.direction: r for r in self.journal.requests_for_job(job_id)}

    def live_job(self, job_id: str, what: str) -> JobView:
        """The job as PBS has it now; refused when it has left PBS or already ran."""
        attrs = self.pbs.job(job_id)
        if attrs is None:
            raise CliExit(EXIT_BAD, f"cannot {what} job {job_id}: PBS no longer knows it "
                                    "(the user must submit it again)")
        view = JobView.from_qstat(job_id, attrs)
        if view.finished:
            raise CliExit(EXIT_BAD, f"cannot {what} job {job_id}: it has finished "
                                    f"(state {view.state}); the user must submit it again")
        if view.started:
            raise CliExit(EXIT_BAD, f"cannot {what} job {job_id}: it is already running "
                                    f"(state {view.state})")
        return view

    def done(self, data: Dict[str, Any], text: str) -> int:
        data = {"ok": True, "by": self.by, **data}
        emit(data, as_json=self.args.json, text=text)
        return EXIT_OK


def _run(args: Any, what: str, body) -> int:
    require_root(what)
    from ..pbsctl import JobGone
    ctx = _Ctx(args)
    try:
        return body(ctx)
    except JobGone as exc:
        raise CliExit(EXIT_NOTFOUND, f"{what}: {exc}") from None
    finally:
        ctx.close()


def _drop_items(journal: Any, request_id: int, transfer_ids: Optional[Sequence[int]] = None
                ) -> List[int]:
    """Unlink a request from finished (or shared) transfers, so a fresh
    transfer decides its outcome; returns the transfers it was unlinked from.

    The transfer rows stay (with their task ids and messages) and the caller
    writes a ``transfer_replaced`` event naming each, which is how ``show``
    keeps them in the job's history.  The rows are deleted rather than
    pointed at NULL: the agent reads each item's request id when it settles
    a transfer.  Must run inside the caller's transaction.
    """
    fn = getattr(journal, "drop_request_items", None)
    if fn is not None:                      # the journal's own method, once it has one
        return list(fn(request_id, transfer_ids=transfer_ids))
    items = journal.items_for_request(request_id)
    tids = sorted({i.transfer_id for i in items
                   if transfer_ids is None or i.transfer_id in transfer_ids})
    for tid in tids:
        journal._exec("DELETE FROM transfer_items WHERE request_id = ? AND transfer_id = ?",
                      (request_id, tid))
    return tids


def _replaced_events(ctx: _Ctx, job_id: str, req: Any, tids: Sequence[int], why: str,
                     now: float) -> None:
    for tid in tids:
        t = ctx.journal.get_transfer(tid)
        ctx.journal.add_event(job_id, "transfer_replaced",
                              f"Globus task {t.task_id or '(unsubmitted)'} ({t.status}) no "
                              f"longer counts for this job: {why}",
                              request_id=req.request_id, transfer_id=tid, at=now,
                              data={"task_id": t.task_id, "by": ctx.by})


def _restore_stageout(ctx: _Ctx, job_id: str, reqs: Dict[str, Any], now: float) -> bool:
    """A stage-out skipped because the stage-in failed is wanted again once
    the job may run after all."""
    so = reqs.get("out")
    if so is None or so.state != decide.SKIPPED:
        return False
    ctx.journal.set_request_state(so.request_id, decide.WAITING_EXIT, now=now)
    ctx.journal.add_event(job_id, "stageout_restored",
                          "stage-out will run after the job ends (stage-in retried by admin)",
                          request_id=so.request_id, at=now, data={"by": ctx.by})
    return True


def _live_transfers(ctx: _Ctx, req: Any) -> List[Any]:
    return [t for t in ctx.journal.transfers_for_request(req.request_id) if t.status in LIVE]


# --------------------------------------------------------------------- retry
def cmd_retry(args: Any) -> int:
    return _run(args, "retry", _retry)


def _retry(ctx: _Ctx) -> int:
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    direction = ctx.args.direction
    if direction is None:
        failed = [d for d in ("in", "out") if d in reqs and
                  reqs[d].state in (decide.FAILED, decide.CANCELED)]
        direction = failed[0] if failed else ("in" if "in" in reqs else "out")
    req = reqs.get(direction)
    if req is None:
        raise CliExit(EXIT_NOTFOUND, f"job {job_id} has no stage-{direction} request")
    if req.state not in (decide.FAILED, decide.CANCELED):
        raise CliExit(EXIT_BAD, f"stage-{direction} of job {job_id} is {req.state}; only a "
                                "failed or canceled one can be retried")
    live = _live_transfers(ctx, req)
    if live:
        raise CliExit(EXIT_BAD, f"stage-{direction} of job {job_id} still has Globus task "
                                f"{live[0].task_id or '(being submitted)'} {live[0].status}; "
                                f"wait for it or run: globus-staging cancel {job_id}")
    if direction == "in":
        view = ctx.live_job(job_id, "retry the stage-in of")
        # PBS first (see the module docstring): held, and back to 'waiting'.
        if "s" not in view.holds:
            ctx.pbs.hold(job_id, hold="s")
        ctx.pbs.alter(job_id, resources={states.RES_STATE: states.WAITING},
                      comment=f"staging: stage-in retry requested by admin {ctx.by}")
    now = time.time()
    why = f"retry requested by admin {ctx.by}"
    with ctx.journal.transaction():
        tids = _drop_items(ctx.journal, req.request_id)
        _replaced_events(ctx, job_id, req, tids, why, now)
        ctx.journal.set_request_state(req.request_id, decide.PENDING, count_attempt=True, now=now)
        ctx.journal.add_event(
            job_id, "admin_retry",
            f"stage-{direction} retry requested by {ctx.by} (was {req.state}: "
            f"{req.message or 'no message'}); the agent submits a new transfer next cycle",
            request_id=req.request_id, at=now,
            data={"by": ctx.by, "previous_state": req.state, "previous_message": req.message,
                  "replaced_transfers": tids})
        restored = direction == "in" and _restore_stageout(ctx, job_id, reqs, now)
    return ctx.done({"action": "retry", "job_id": job_id, "direction": direction,
                     "previous_state": req.state, "stageout_restored": restored},
                    f"job {job_id}: stage-{direction} set back to pending (was {req.state}); "
                    "the agent submits a new transfer on its next cycle")


# -------------------------------------------------------------------- cancel
def cmd_cancel(args: Any) -> int:
    return _run(args, "cancel", _cancel)


def _cancel(ctx: _Ctx) -> int:
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    targets = [r for d, r in sorted(reqs.items())
               if r.state not in decide.FINAL and r.state != decide.WAITING_EXIT
               and (ctx.args.direction is None or d == ctx.args.direction)]
    if not targets:
        now_states = ", ".join(f"stage-{d} {r.state}" for d, r in sorted(reqs.items()))
        raise CliExit(EXIT_BAD, f"nothing to cancel for job {job_id} ({now_states})")
    # Which transfers to cancel at Globus, and which are shared with other
    # jobs (or are the user's own grafted task) and are only let go of.
    plan: List[Tuple[Any, Any, bool]] = []
    for req in targets:
        for t in _live_transfers(ctx, req):
            if t.status in ("new", "submitting") and t.submission_id and not t.task_id:
                raise CliExit(EXIT_RETRY, f"the agent is submitting the transfer of job "
                                          f"{job_id} right now; try again in a minute")
            others = set()
            for item in ctx.journal.items_for_transfer(t.transfer_id):
                if item.request_id is None or item.request_id == req.request_id:
                    continue
                other = ctx.journal.get_request(item.request_id)
                if other is not None and other.state not in decide.FINAL:
                    others.add(other.job_id)
            plan.append((req, t, bool(others) or bool(t.grafted)))
    canceled = []
    for _req, t, keep in plan:
        if keep or not t.task_id:
            continue
        try:
            ctx.backend().cancel(t.identity, t.task_id)
        except WaitingForUser as exc:
            raise CliExit(EXIT_BAD, f"Globus would not cancel task {t.task_id} with "
                                    f"{t.identity}'s login: {exc}") from None
        canceled.append(t.task_id)
    reason = (ctx.args.reason or "").strip()
    msg = f"canceled by admin {ctx.by}" + (f": {reason}" if reason else "")
    now = time.time()
    with ctx.journal.transaction():
        for req, t, keep in plan:
            if keep:
                _drop_items(ctx.journal, req.request_id, [t.transfer_id])
                _replaced_events(ctx, job_id, req, [t.transfer_id],
                                 "it also serves other jobs (or is the user's own task), so "
                                 "it was left running; " + msg, now)
            else:
                ctx.journal.update_transfer(t.transfer_id, status="canceled", message=msg,
                                            cancel_requested=now, now=now)
                ctx.journal.set_transfer_outcome(t.transfer_id, "failed", message=msg)
        for req in targets:
            ctx.journal.set_request_state(req.request_id, decide.FAILED, message=msg, now=now)
            ctx.journal.add_event(job_id, "admin_cancel", f"stage-{req.direction} {msg}",
                                  request_id=req.request_id, at=now,
                                  data={"by": ctx.by, "reason": reason,
                                        "canceled_tasks": canceled})
            so = reqs.get("out")
            if req.direction == "in" and so is not None and so.state == decide.WAITING_EXIT \
                    and so not in targets:
                # As when a stage-in fails: the job will not run, so neither will its stage-out.
                ctx.journal.set_request_state(so.request_id, decide.SKIPPED,
                                              message="the stage-in was canceled", now=now)
                ctx.journal.add_event(job_id, "stageout_skipped",
                                      "stage-out skipped: the stage-in was canceled by admin",
                                      request_id=so.request_id, at=now)
    kept = [t.task_id for _r, t, keep in plan if keep and t.task_id]
    text = f"job {job_id}: " + ", ".join(f"stage-{r.direction}" for r in targets) + f" {msg}"
    if canceled:
        text += f"; Globus task(s) canceled: {', '.join(canceled)}"
    if kept:
        text += f"; left running (shared or the user's own): {', '.join(kept)}"
    text += "; the agent applies the stage-in failure policy on its next cycle"
    return ctx.done({"action": "cancel", "job_id": job_id,
                     "directions": [r.direction for r in targets],
                     "canceled_tasks": canceled, "left_running": kept}, text)


# --------------------------------------------------------------------- adopt
def cmd_adopt(args: Any) -> int:
    try:
        task_id = str(uuid.UUID(args.task_id))
    except ValueError:
        raise CliExit(EXIT_USAGE, f"adopt: {args.task_id!r} is not a Globus task id; expected "
                                  "a UUID like 1a2b3c4d-0000-4000-8000-00000000000a") from None
    args.task_id = task_id
    return _run(args, "adopt", _adopt)


def _adopt(ctx: _Ctx) -> int:
    task_id = ctx.args.task_id
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    req = reqs.get("in")
    if req is None:
        raise CliExit(EXIT_NOTFOUND, f"job {job_id} has no stage-in request")
    if req.state == decide.SUCCEEDED:
        raise CliExit(EXIT_BAD, f"the stage-in of job {job_id} has already succeeded")
    current = ctx.journal.transfers_for_request(req.request_id)
    if any(t.task_id == task_id for t in current):
        raise CliExit(EXIT_BAD, f"job {job_id} already waits on Globus task {task_id}")
    live = [t for t in current if t.status in LIVE]
    if live:
        raise CliExit(EXIT_BAD, f"job {job_id} still waits on Globus task "
                                f"{live[0].task_id or '(being submitted)'} ({live[0].status}); "
                                f"run: globus-staging cancel {job_id} first")
    existing = ctx.journal.transfer_by_task_id(task_id)
    if existing is not None and existing.identity != req.identity:
        raise CliExit(EXIT_NOTFOUND, f"Globus task {task_id} belongs to another identity "
                                     f"than {req.identity}'s; a job may only wait on its "
                                     "owner's own tasks")
    view = ctx.live_job(job_id, "adopt a task for")
    # The owner's identity must see the task: never trust a task id on its own.
    try:
        rep = ctx.backend().get_task(req.identity, task_id)
    except FatalError as exc:
        raise CliExit(EXIT_NOTFOUND, f"Globus task {task_id} is not visible to "
                                     f"{req.identity}'s Globus identity ({exc})") from None
    except WaitingForUser as exc:
        raise CliExit(EXIT_BAD, f"cannot look at Globus task {task_id} as {req.identity}: "
                                f"{exc}") from None
    outcome = getattr(rep.outcome, "value", str(rep.outcome))
    if outcome == "fatal":
        raise CliExit(EXIT_BAD, f"Globus task {task_id} has {rep.status or 'failed'}"
                                f"{': ' + rep.message if rep.message else ''}; adopting it "
                                "would fail the stage-in")
    # PBS first: held, and marked as staging so the user cannot change the request.
    if "s" not in view.holds:
        ctx.pbs.hold(job_id, hold="s")
    ctx.pbs.alter(job_id, resources={states.RES_STATE: states.STAGING_IN,
                                     states.RES_TASKS: task_id},
                  comment=f"staging: waiting on Globus task {task_id[:8]} (adopted by admin)")
    now = time.time()
    reason = (ctx.args.reason or "").strip()
    with ctx.journal.transaction():
        tids = _drop_items(ctx.journal, req.request_id)
        _replaced_events(ctx, job_id, req, tids, f"admin {ctx.by} adopted task {task_id}", now)
        if existing is None:
            tid = ctx.journal.create_transfer(
                identity=req.identity, direction="in", source_collection="",
                destination_collection="", options={}, label=rep.label or "", deadline=None,
                task_id=task_id, grafted=True, status=_OUTCOME_STATUS.get(outcome, "active"),
                now=now)
        else:
            tid = existing.transfer_id
        # The same placeholder item the agent writes for a task= graft.
        ctx.journal.add_items(tid, [ItemSpec(req.request_id, f"task={task_id}", f"task={task_id}",
                                             False)])
        ctx.journal.set_request_state(req.request_id, decide.ACTIVE, now=now)
        ctx.journal.add_event(job_id, "admin_adopt",
                              f"stage-in now waits on Globus task {task_id} (adopted by "
                              f"{ctx.by}{': ' + reason if reason else ''})",
                              request_id=req.request_id, transfer_id=tid, at=now,
                              data={"by": ctx.by, "task_id": task_id, "reason": reason,
                                    "previous_state": req.state})
        _restore_stageout(ctx, job_id, reqs, now)
    return ctx.done({"action": "adopt", "job_id": job_id, "task_id": task_id,
                     "task_status": rep.status, "previous_state": req.state},
                    f"job {job_id}: stage-in now waits on Globus task {task_id} "
                    f"({rep.status}); the job is released when it succeeds")


# ------------------------------------------------------------------- release
def cmd_release(args: Any) -> int:
    reason = " ".join((args.reason or "").split())
    if not reason:
        raise CliExit(EXIT_USAGE, "release: --reason TEXT is required (it is logged with "
                                  "your name)")
    args.reason = reason
    return _run(args, "release", _release)


def _release(ctx: _Ctx) -> int:
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    req = reqs.get("in")
    view = ctx.live_job(job_id, "release")
    msg = f"released by admin {ctx.by}: {ctx.args.reason}"
    now = time.time()
    with ctx.journal.transaction():
        if req is not None and req.state != decide.SUCCEEDED:
            # The agent would otherwise put the hold back (a failed or running
            # stage-in keeps a job held): mark it done, by whom and why.
            ctx.journal.set_request_state(req.request_id, decide.SUCCEEDED, message=msg, now=now)
        _restore_stageout(ctx, job_id, reqs, now)
        ctx.journal.add_event(job_id, "admin_release", f"forced release: {msg}",
                              request_id=req.request_id if req is not None else None, at=now,
                              data={"by": ctx.by, "reason": ctx.args.reason,
                                    "previous_state": req.state if req is not None else None})
    # The state word first: the runjob guard lets the job run only on it.
    ctx.pbs.alter(job_id, resources={states.RES_STATE: states.STAGED_IN},
                  comment=f"staging: released by admin {ctx.by}: {ctx.args.reason}")
    released = "s" in view.holds
    if released:
        ctx.pbs.release(job_id, hold="s")
    return ctx.done({"action": "release", "job_id": job_id, "reason": ctx.args.reason,
                     "previous_state": req.state if req is not None else None,
                     "hold_released": released},
                    f"job {job_id}: {msg}" + ("" if released else " (it had no 's' hold)"))
