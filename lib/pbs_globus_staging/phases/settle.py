"""Phase settle: Globus outcomes -> items -> requests -> jobs.

Reads the transfers poll recorded as finished and the requests they serve;
decides each item's outcome (``decide.item_outcomes``), each request's verdict
(``decide.request_verdict``: the stage-out retry rule, a failed stage-in
skipping its stage-out) and each stage-in job's actions
(``decide.stagein_actions``: set state, release only after every item
SUCCEEDED, hold with the reason or delete per ``onfail``); writes the
journal, then changes the job through PBS (one ``qalter`` per change).

Also the request writes the other phases share: ``transition``,
``fail_request``, ``transfer_failed``, ``transfer_needs_user``,
``skip_stageout``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .. import decide, states
from ..decide import JobView, RequestStatus
from ..errors import FatalError, StagingError
from ..pbsctl import JobGone
from ..states import Direction, Item
from .. import events
from ..events import History, Kind
from .context import Context, Views, action_log, log, request_for, request_ids


@dataclasses.dataclass
class SettleState:
    """Owned by the loop: transfers whose SUCCEEDED task document counted no
    skipped errors (poll writes; their items need no task_skipped_errors
    call: the count is Globus's own word) and the progress comments this pass
    may still write."""

    nothing_skipped: Set[int] = dataclasses.field(default_factory=set)
    progress_left: int = 0


def run_cycle(ctx: Context, st: SettleState, views: Views, changed: Iterable[int], *,
              now: float) -> Set[str]:
    """Settle what poll found changed; returns the jobs touched."""
    return settle(ctx, st, views, changed, now=now)


# ---------------------------------------------------------------- repair
def repair(ctx: Context, st: SettleState, views: Views, *, now: float) -> None:
    """Finish what a killed run left half done: a task's end recorded but
    its items not settled, items settled but the request not updated."""
    j = ctx.journal
    unsettled = j.unsettled_transfer_ids()
    if unsettled:
        action_log("repair", transfers=len(unsettled))
        settle(ctx, st, views, unsettled, now=now)
    for rid in j.settled_request_ids((decide.PENDING, decide.QUEUED, decide.ACTIVE,
                                      decide.USER_ACTION)):
        refresh_request(ctx, views, rid, now=now)


# -------------------------------------------------------- items, requests
def settle(ctx: Context, st: SettleState, views: Views, transfer_ids: Iterable[int], *,
           now: float) -> Set[str]:
    """Turn transfer outcomes into item and request outcomes; returns jobs touched."""
    j = ctx.journal
    touched: Set[str] = set()
    for tid in transfer_ids:
        t = j.get_transfer(tid)
        items = j.items_for_transfer(tid)
        if t.status == decide.T_SUCCEEDED:
            pending = [i for i in items if i.outcome == Item.PENDING]
            if pending and t.grafted:
                # task=<uuid>: the owner vouches for a task started elsewhere.
                for item_id, outcome, _why in decide.item_outcomes(
                        status=t.status, grafted=True, items=pending, skipped=(), message=""):
                    j.set_item_outcome(item_id, outcome)
            elif pending:
                skipped = skipped_errors(ctx, st, t)
                if skipped is None:
                    continue   # not known yet: the items stay pending; repair retries
                with j.transaction():
                    for item_id, outcome, why in decide.item_outcomes(
                            status=t.status, grafted=False, items=pending, skipped=skipped,
                            message=""):
                        if why is None:
                            j.set_item_outcome(item_id, outcome)
                        else:
                            j.set_item_outcome(item_id, outcome, message=why)
        elif t.status in (decide.T_FAILED, decide.T_CANCELED):
            for item_id, outcome, why in decide.item_outcomes(
                    status=t.status, grafted=bool(t.grafted), items=items, skipped=None,
                    message=t.message or t.status):
                j.set_item_outcome(item_id, outcome, message=why)
        for rid in {i.request_id for i in items if i.request_id is not None}:
            job = refresh_request(ctx, views, rid, now=now)
            if job:
                touched.add(job)
    return touched


def skipped_errors(ctx: Context, st: SettleState,
                   t: object) -> Optional[List[Tuple[str, str, str]]]:
    """What Globus skipped in ``t`` (source, destination, error code); None
    when Globus cannot say now -- never taken as "nothing skipped"."""
    if t.transfer_id in st.nothing_skipped:
        return []
    try:
        found = ctx.backend.skipped_errors(t.identity, t.task_id)
    except StagingError as exc:
        action_log("settle_deferred", transfer=t.transfer_id, task=t.task_id, reason=str(exc))
        return None
    return [(e.source_path, e.destination_path, e.error_code) for e in found]


def refresh_request(ctx: Context, views: Views, request_id: int, *,
                    now: float) -> Optional[str]:
    """Apply ``decide.request_verdict`` to one request; returns its job when
    the request is live (changed or not)."""
    j = ctx.journal
    req = j.get_request(request_id)
    if req.state in decide.FINAL:
        return None
    items = j.items_for_request(request_id)
    transfers = [j.get_transfer(tid) for tid in {i.transfer_id for i in items}]
    v = decide.request_verdict(req, items, transfers,
                               retries=int(ctx.setting("stageout_retries")),
                               retry_delay=float(ctx.setting("retry_delay")))
    if v is None:
        return None
    if v.state == req.state:
        return req.job_id
    msg, action = v.message, v.action
    if v.retry_in is not None:
        # A failed stage-out is retried with a fresh transfer after a growing
        # wait -- never silently dropped: each retry is in the job's history.
        with j.transaction():
            j.retire_failed_items(request_id)
            j.set_request_state(request_id, decide.PENDING, message=msg,
                                next_attempt=now + v.retry_in, count_attempt=True, now=now)
            j.add_event(req.job_id, History.STAGEOUT_RETRY,
                        f"stage-out failed ({msg}); retry {v.attempt} of "
                        f"{v.retries} in {v.retry_in:.0f} s", request_id=request_id, at=now)
        action_log(History.STAGEOUT_RETRY, job=req.job_id, attempt=v.attempt,
                   delay=f"{v.retry_in:.0f}s", reason=msg)
        return req.job_id
    with j.transaction():
        transition(ctx, request_id, req.job_id, v.state, kind=v.event_kind,
                   text=msg or f"stage-{req.direction} {v.word}", message=msg or None,
                   action=action or None, now=now)
        if v.skip_stageout:
            # Seed scenario B: neither the job nor its stage-out may run.
            so = request_for(ctx, req.job_id, Direction.OUT)
            if so is not None and so.state not in decide.FINAL:
                skip_stageout(ctx, so, decide.SKIP_STAGEIN_FAILED, now=now)
    action_log(f"request_{v.word}", job=req.job_id, direction=req.direction, message=msg)
    if v.alert:  # user-action: see phases.conditions
        task = next((t.task_id for t in transfers if t.task_id), "")
        event_kind = v.event_kind
        ctx.alert(event_kind, views.get(req.job_id), job_id=req.job_id, owner=req.owner,
                  task_id=task, message=msg, action=action)
    return req.job_id


# ------------------------------------------------------------- job actions
def status_for(ctx: Context, req: object,
               transfers: Optional[List[object]] = None) -> RequestStatus:
    if transfers is None:
        transfers = ctx.journal.transfers_by_request([req.request_id])[req.request_id]
    tasks = tuple(t.task_id for t in transfers if t.task_id)
    progress = ""
    live = [t for t in transfers if t.status in decide.LIVE_TRANSFER and t.task_id]
    if live:
        t = live[0]
        progress = decide.progress_text(
            files=t.files or 0, files_done=t.files_transferred or 0,
            bytes_done=t.bytes_transferred or 0, rate=t.bytes_per_second or 0.0,
            nice_status=t.nice_status, task_id=t.task_id)
    return RequestStatus(state=req.state, message=req.message or "",
                         action=req.action or "", tasks=tasks, progress=progress)


def apply_stagein(ctx: Context, st: SettleState, views: Views,
                  jobs: Iterable[JobView]) -> None:
    """Each stage-in job's actions, from its request's standing."""
    j = ctx.journal
    policy = str(ctx.setting("stagein_failure"))
    jobs = [v for v in jobs if v.stagein is not None]
    # Two queries for all jobs instead of several per job.
    reqs = {r.job_id: r for r in j.requests_for_jobs(v.job_id for v in jobs)
            if r.direction == Direction.IN}
    transfers = j.transfers_by_request(r.request_id for r in reqs.values())
    # Releases first: a job whose data are in place must not wait behind
    # other jobs' progress comments.
    jobs.sort(key=lambda v: reqs[v.job_id].state != decide.SUCCEEDED
              if v.job_id in reqs else True)
    for view in jobs:
        if ctx.out_of_time():
            break
        req = reqs.get(view.job_id)
        if req is None:
            continue
        with ctx.guard(view.job_id):
            _apply_one(ctx, st, views, view, policy, req, transfers.get(req.request_id, []))


def _apply_one(ctx: Context, st: SettleState, views: Views, view: JobView, policy: str,
               req: object, transfers: List[object]) -> None:
    status = status_for(ctx, req, transfers)
    options = ctx.options(req.normalized, Direction.IN)
    cleanup = getattr(options, "cleanup", None) if options is not None else None
    onfail = getattr(options, "onfail", None) if options is not None else None
    cleanup_done = bool(cleanup and ctx.journal.get_meta(f"cleanup:{view.job_id}"))
    acts = decide.stagein_actions(view, status, failure_policy=onfail or policy,
                                  cleanup=cleanup, cleanup_done=cleanup_done)
    if acts:
        apply(ctx, st, views, view, acts)


def apply(ctx: Context, st: SettleState, views: Views, view: JobView,
          acts: Sequence[decide.Action]) -> None:
    """Apply one job's actions in order; resource and comment changes share
    one ``qalter`` so a state change costs PBS one command."""
    j = ctx.journal
    now = ctx.clock()
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
            if st.progress_left > 0:
                st.progress_left -= 1
                comment = a.value
        else:
            rest.append(a)
    try:
        if resources or comment is not None:
            ctx.pbs.alter(view.job_id, resources=resources, comment=comment)
            view = dataclasses.replace(
                view, stage_state=resources.get(states.RES_STATE, view.stage_state),
                comment=comment if comment is not None else view.comment)
            if states.RES_STATE in resources:
                action_log("set_state", job=view.job_id, state=resources[states.RES_STATE])
        for a in rest:
            if a.kind == "release":
                ctx.pbs.release(view.job_id, hold="s")
                view = dataclasses.replace(view, holds=view.holds.replace("s", ""))
                ctx.stats.released += 1
                j.add_event(view.job_id, History.RELEASED, "system hold released: stage-in done",
                            at=now)
            elif a.kind == "hold":
                ctx.pbs.hold(view.job_id, hold="s")
                view = dataclasses.replace(view, holds=view.holds + "s")
            elif a.kind == "delete":
                ctx.pbs.delete(view.job_id)
                j.add_event(view.job_id, History.DELETED,
                            f"job deleted: stage-in failed ({a.reason})",
                            at=now)
            elif a.kind == "submit_cleanup":
                _submit_cleanup(ctx, view, a.value, a.reason)
            action_log(a.kind, job=view.job_id, value=a.value)
    except JobGone:
        action_log("job_gone", job=view.job_id)
    except FatalError as exc:
        log.warning("PBS refused a change to %s: %s", view.job_id, exc)
        j.add_event(view.job_id, History.PBS_ERROR, str(exc), at=now)
    finally:
        views.jobs[view.job_id] = view


def set_job_state(ctx: Context, views: Views, view: JobView, word: str) -> bool:
    try:
        comment = "staging: stage-in starting" if word == states.Stage.STAGING_IN else None
        ctx.pbs.alter(view.job_id, resources={states.RES_STATE: word}, comment=comment)
    except JobGone:
        return False
    except FatalError as exc:
        log.warning("cannot mark %s %s: %s", view.job_id, word, exc)
        return False
    views.jobs[view.job_id] = dataclasses.replace(view, stage_state=word,
                                                  comment=comment or view.comment)
    action_log("set_state", job=view.job_id, state=word)
    return True


def _submit_cleanup(ctx: Context, view: JobView, script: str, reason: str) -> None:
    """The seed's V1 'cleanup job': submitted as the job owner, never as root."""
    j = ctx.journal
    try:
        new_id = ctx.pbs.submit(script, user=view.owner, args=[
            "-N", "stagein-cleanup", "-v", f"GLOBUS_STAGEIN_FAILED_JOB={view.job_id}"],
            cwd=os.path.dirname(script) or None)
    except StagingError as exc:
        j.add_event(view.job_id, History.CLEANUP_FAILED, f"cleanup job not submitted: {exc}")
        return
    j.set_meta(f"cleanup:{view.job_id}", new_id)
    j.add_event(view.job_id, History.CLEANUP_SUBMITTED,
                f"cleanup job {new_id} submitted ({script})")


# -------------------------------------------------- shared request writes
def transition(ctx: Context, request_id: int, job_id: str, state: str, *, kind: str, text: str,
               now: float, message: Optional[str] = None, action: Optional[str] = None,
               transfer_id: Optional[int] = None) -> None:
    """A request's new state and the history line saying so, in one
    transaction: a kill between the two would lose the line for good."""
    j = ctx.journal
    with j.transaction():
        j.set_request_state(request_id, state, message=message, action=action, now=now)
        j.add_event(job_id, kind, text, request_id=request_id, transfer_id=transfer_id, at=now)


def fail_request(ctx: Context, views: Views, row: object, message: str, *, now: float) -> None:
    transition(ctx, row.request_id, row.job_id, decide.FAILED,
               kind=events.FAILED[row.direction], text=message, message=message, now=now)
    action_log("request_failed", job=row.job_id, reason=message)
    ctx.alert(events.FAILED[row.direction], views.get(row.job_id),
              job_id=row.job_id, owner=row.owner, message=message)


def transfer_failed(ctx: Context, st: SettleState, views: Views, t: object, message: str, *,
                    now: float, code: str) -> None:
    ctx.journal.update_transfer(t.transfer_id, status=decide.T_FAILED, fatal_code=code,
                                message=message, completed=now)
    settle(ctx, st, views, {t.transfer_id}, now=now)


def transfer_needs_user(ctx: Context, t: object, message: str, action: str, *,
                        now: float) -> None:
    j = ctx.journal
    for rid in request_ids(ctx, t.transfer_id):
        req = j.get_request(rid)
        if req.state == decide.USER_ACTION and req.message == message:
            continue
        if req.state in decide.FINAL:
            continue   # e.g. released by an admin while the task ran: nobody waits on it
        text = message if (not action or action in message) else f"{message}; run: {action}"
        transition(ctx, rid, req.job_id, decide.USER_ACTION, kind=Kind.USER_ACTION, text=text,
                   message=message, action=action or "globus-staging login", now=now,
                   transfer_id=t.transfer_id)
        action_log(Kind.USER_ACTION, job=req.job_id, reason=message)


def skip_stageout(ctx: Context, req: object, why: str, *, now: float,
                  exit_status: Optional[int] = None) -> None:
    transition(ctx, req.request_id, req.job_id, decide.SKIPPED, kind=History.STAGEOUT_SKIPPED,
               text=f"stage-out skipped: {why}", message=why, now=now)
    action_log(History.STAGEOUT_SKIPPED, job=req.job_id, reason=why)
