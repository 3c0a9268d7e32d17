"""Phase submit: waiting requests -> batches -> Globus tasks.

Reads the PENDING requests (due now), the live transfers per identity and
the jobs' views; decides with ``decide.plan_wait`` (batch window,
stage-ahead, free slots), ``decide.holds_slot`` and ``decide.slots_free``,
``decide.plan_batches`` (what shares a task), ``decide.within_rate`` (the
API rate); writes each planned transfer with its items (requests QUEUED),
marks each stage-in job 'staging-in' before its task is submitted, submits
(the submission id persisted before the POST) and records the task
(requests ACTIVE).  ``task=<uuid>`` requests are grafted onto that task.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Dict, Iterable, List, Mapping, Optional, Set

from .. import decide, states
from ..backend import EndpointTrouble, Outcome, SubmitConflict, TransferItem, TransferSpec
from ..errors import FatalError, RequestError, RetryableError, StagingError, WaitingForUser
from ..journal import ItemSpec
from ..states import Direction
from .. import events
from . import conditions
from .context import Context, Views, action_log, request_ids
from .intake import Resolved, resolve
from .settle import (SettleState, fail_request, set_job_state, settle, transfer_failed,
                     transfer_needs_user)


@dataclasses.dataclass
class SubmitState:
    """Owned by the loop: requests left waiting by the last plan (for a time
    window, a slot, the run's end): while any are, the loop keeps going."""

    pending_left: int = 0


def run_cycle(ctx: Context, st: SubmitState, views: Views, settled: SettleState, *,
              now: float) -> None:
    """Turn waiting requests into Globus tasks, in PBS priority order, as
    far as each identity's free task slots go; the rest keep their place."""
    pending = list(ctx.journal.requests(state=(decide.PENDING,), due=now))
    st.pending_left = 0
    if pending:
        _plan(ctx, st, views, settled, pending, now=now)
    _submit_new(ctx, settled, views, now=now)


# ---------------------------------------------------------------- planning
def _plan(ctx: Context, st: SubmitState, views: Views, settled: SettleState,
          pending: List[object], *, now: float) -> None:
    def order(row: object):
        view = views.get(row.job_id)
        return decide.plan_order(priority=view.priority if view else 0,
                                 qtime=view.qtime if view else 0.0, request_id=row.request_id)

    pending.sort(key=order)
    max_items = int(ctx.setting("batch_max_items"))
    free = free_slots(ctx, {row.identity for row in pending})
    # Resolving a request costs a parse and a policy check: do it only for
    # the requests that can get a slot now (at 10,000 waiting jobs this is
    # most of a pass).
    capacity = {ident: slots * max_items for ident, slots in free.items()}
    items: List[decide.PendingItem] = []
    cut = False
    window = float(ctx.setting("batch_window"))
    ahead = int(ctx.setting("stage_ahead"))
    for row in pending:
        if ctx.out_of_time():
            cut = True
            st.pending_left += 1
            continue
        view = views.get(row.job_id)
        wait = decide.plan_wait(
            direction=row.direction, queued=(view.qtime if view else 0.0) or (row.created or 0.0),
            now=now, window=window, capacity=capacity.get(row.identity, 0),
            graft="task=" in row.raw, rank=views.queue_rank.get(row.job_id), ahead=ahead)
        if wait in decide.COUNTED_WAITS:
            st.pending_left += 1
            continue
        if wait is not None:
            continue   # stage-ahead: not near the front of its queue yet
        with ctx.guard(row.job_id):
            _plan_one(ctx, views, settled, row, items, capacity, now=now)
    batches = decide.plan_batches(items, max_items=max_items, free_slots=free)
    if cut:
        batches = decide.full_batches(batches, max_items=max_items)
    for batch in batches:
        batch = _lock_requests(ctx, views, batch)
        if batch.items:
            _create_transfer(ctx, batch, now=now)


def _plan_one(ctx: Context, views: Views, settled: SettleState, row: object, items: list,
              capacity: Dict[str, int], *, now: float) -> None:
    view = views.get(row.job_id)
    if row.direction == Direction.IN and view is None and row.job_id not in views:
        return
    try:
        res = resolve(ctx, row.raw, direction=row.direction, owner=row.owner,
                      project=(view.project or None) if view else None)
    except StagingError as exc:
        fail_request(ctx, views, row, str(exc), now=now)
        return
    if res.tasks:
        if not _lock_job(ctx, views, row.job_id, row.request_id):
            return
        _graft(ctx, views, settled, row, res, now=now)
    if not res.items or capacity.get(row.identity, 0) <= 0:
        return
    capacity[row.identity] = capacity.get(row.identity, 0) - len(res.items)
    opts_key = decide.options_key(res.options)
    if row.direction == Direction.IN and _repeats_earlier(ctx, row):
        opts_key = decide.resync_key(opts_key, row.request_id)
    for (scoll, spath, dcoll, dpath, rec) in res.items:
        items.append(decide.PendingItem(
            request_id=row.request_id, job_id=row.job_id,
            priority=view.priority if view else 0, qtime=view.qtime if view else 0.0,
            identity=row.identity, source_collection=scoll,
            destination_collection=dcoll, options_key=opts_key, source_path=spath,
            destination_path=dpath, recursive=rec))


def _lock_requests(ctx: Context, views: Views, batch: decide.Batch) -> decide.Batch:
    """Mark each stage-in job 'staging-in' before its task is submitted: from
    then on the modifyjob hook refuses a qalter of the request, so what
    Globus moves is what the job asked for."""
    dropped: Set[int] = set()
    for rid in batch.request_ids:
        first = next(it for it in batch.items if it.request_id == rid)
        if not _lock_job(ctx, views, first.job_id, rid):
            dropped.add(rid)
    if not dropped:
        return batch
    return dataclasses.replace(batch, items=tuple(it for it in batch.items
                                                  if it.request_id not in dropped))


def _lock_job(ctx: Context, views: Views, job_id: str, request_id: int) -> bool:
    req = ctx.journal.get_request(request_id)
    if req is None or req.direction != Direction.IN:
        return True
    view = views.get(job_id)
    if view is None:
        return job_id in views
    if view.stage_state == states.Stage.STAGING_IN:
        return True
    return set_job_state(ctx, views, view, states.Stage.STAGING_IN)


def _repeats_earlier(ctx: Context, row: object) -> bool:
    """Another request of this identity with the same key was transferred
    (its data may be in place: sync instead of a blind copy)."""
    j = ctx.journal
    for other in j.find_requests_by_key(row.request_key):
        if other.request_id == row.request_id or other.identity != row.identity:
            continue
        if any(t.status == decide.T_SUCCEEDED for t in j.transfers_for_request(other.request_id)):
            return True
    return False


def free_slots(ctx: Context, identities: Iterable[str]) -> Dict[str, int]:
    """Only tasks holding a Globus slot count against max_tasks_per_identity:
    an INACTIVE task (one user's expired login) or a paused one must not
    hold up the others -- in client mode the whole site is one identity.
    All unfinished tasks count against Globus's pending-task limit."""
    limit = int(ctx.setting("max_tasks_per_identity"))
    pending_limit = int(ctx.setting("max_pending_tasks"))
    free = {}
    for ident in identities:
        live = [t for t in ctx.journal.transfers(status=decide.LIVE_TRANSFER, identity=ident)
                if not t.grafted]
        holding = []
        for t in live:
            # A transfer not yet submitted holds a slot only if it is about to be:
            # one backing off or refused until its owner logs in holds none.
            new = t.status == decide.T_NEW
            backing = new and _backing_off(ctx, t)
            awaits = new and not backing and _awaits_user(ctx, t)
            if decide.holds_slot(status=t.status, nice_status=t.nice_status,
                                 backing_off=backing, awaits_user=awaits):
                holding.append(t)
        free[ident] = decide.slots_free(holding=len(holding), live=len(live), limit=limit,
                                        pending_limit=pending_limit)
    return free


def _create_transfer(ctx: Context, batch: decide.Batch, *, now: float) -> None:
    j = ctx.journal
    direction = j.get_request(batch.items[0].request_id).direction
    options = decide.task_options(batch.options_key)
    deadline = _deadline(options.get("deadline"), now)
    with j.transaction():
        tid = j.create_transfer(identity=batch.identity, direction=direction,
                                source_collection=batch.source_collection,
                                destination_collection=batch.destination_collection,
                                options=options, label=decide.task_label(batch, direction),
                                deadline=deadline, now=now)
        j.add_items(tid, [ItemSpec(it.request_id, it.source_path, it.destination_path,
                                   it.recursive) for it in batch.items])
        for rid in batch.request_ids:
            j.set_request_state(rid, decide.QUEUED, now=now)
    action_log("plan_transfer", transfer=tid, identity=batch.identity,
               jobs=len({it.job_id for it in batch.items}), items=len(batch.items))


def _deadline(value: Optional[str], now: float) -> Optional[str]:
    """An explicit Globus deadline only when the user asked for one.

    Without one Globus extends a task by itself while it progresses (72 h
    after the last progress, 90 days while paused: task_behavior,
    Deadlines); an explicit one would expire a slow but healthy weeks-long
    stage-in.  The site's ``default_deadline`` is the agent's to enforce
    (``decide.past_site_deadline``)."""
    if value:
        from .. import request
        try:
            parsed = request.parse(f"deadline={value}+task=00000000-0000-0000-0000-000000000000",
                                   direction=Direction.IN).options.deadline
            if parsed is not None:
                return parsed.resolve(now=dt.datetime.fromtimestamp(now, dt.timezone.utc)).isoformat()
        except RequestError:
            pass
    return None


def _spec(ctx: Context, t: object) -> TransferSpec:
    seen, rows = set(), []
    for r in ctx.journal.items_for_transfer(t.transfer_id):
        k = (r.source_path, r.destination_path)
        if k not in seen:
            seen.add(k)
            rows.append(r)
    items = tuple(TransferItem(source_path=i.source_path, destination_path=i.destination_path,
                               recursive=bool(i.recursive)) for i in rows)
    options = dict(t.options or {})
    deadline = dt.datetime.fromisoformat(t.deadline) if t.deadline else None
    return TransferSpec(
        submission_id=t.submission_id, source_collection=t.source_collection,
        destination_collection=t.destination_collection, items=items, label=t.label or "",
        sync_level=options.get("sync_level"), verify_checksum=bool(options.get("verify_checksum")),
        deadline=deadline, skip_source_errors=bool(options.get("skip_source_errors")))


# -------------------------------------------------------------- submitting
def _submit_new(ctx: Context, settled: SettleState, views: Views, *, now: float) -> None:
    j = ctx.journal
    throttled: Set[str] = set()
    for t in j.transfers(status=(decide.T_NEW,)):
        if ctx.out_of_time():
            break
        if t.grafted or t.task_id:
            continue
        if t.identity in throttled:
            continue
        if _backing_off(ctx, t, now):
            continue
        if not _within_rate(ctx, t.identity):
            throttled.add(t.identity)
            action_log("submit_deferred", identity=t.identity, reason="api rate")
            continue
        try:
            if not t.submission_id:
                sid = ctx.backend.new_submission_id(t.identity)
                # Persisted before the POST: a retry after a crash submits the
                # same id, which Globus executes once.
                j.set_submission_id(t.transfer_id, sid)
                t = j.get_transfer(t.transfer_id)
            result = ctx.backend.submit(t.identity, _spec(ctx, t))
        except WaitingForUser as exc:
            transfer_needs_user(ctx, t, str(exc), exc.action, now=now)
            continue
        except (SubmitConflict, EndpointTrouble) as exc:
            # This request's trouble (a foreign task on the same paths, one
            # collection's endpoint): it alone backs off, the run goes on.
            _back_off(ctx, t, str(exc), now=now)
            continue
        except RetryableError as exc:
            ctx.stats.errors.append(f"globus: {exc}")
            action_log("submit_deferred", transfer=t.transfer_id, reason=str(exc))
            conditions.globus_trouble(ctx, str(exc))
            return
        except FatalError as exc:
            transfer_failed(ctx, settled, views, t, str(exc), now=now, code="SUBMIT_REFUSED")
            continue
        other = j.transfer_by_task_id(result.task_id) if result.adopted else None
        if other is not None and other.transfer_id != t.transfer_id:
            # Another request of ours already waits on that task (same paths,
            # other options): wait for it to end rather than track it twice.
            _back_off(ctx, t, f"Globus task {result.task_id}, moving the same paths for "
                              "another request, is still active", now=now)
            continue
        if j.get_meta(f"backoff:{t.transfer_id}"):
            j.set_meta(f"backoff:{t.transfer_id}", None)
        with j.transaction():
            j.set_task_id(t.transfer_id, result.task_id)
            j.update_transfer(t.transfer_id, status=decide.T_ACTIVE, submitted=now)
            if getattr(result, "foreign", False):
                # Not ours to cancel: the person who started it decides.
                j.update_transfer(t.transfer_id,
                                  options={**(t.options or {}), "foreign": True})
            for rid in request_ids(ctx, t.transfer_id):
                j.set_request_state(rid, decide.ACTIVE, now=now)
        ctx.stats.submitted += 1
        how = "adopted" if getattr(result, "adopted", False) else (
            "resubmitted (duplicate)" if result.duplicate else "submitted")
        if getattr(result, "foreign", False):
            how = ("adopted: it was started outside PBS by the same Globus identity and "
                   "moves the same paths")
        action_log("submit", transfer=t.transfer_id, task=result.task_id, how=how,
                   identity=t.identity)
        for rid in request_ids(ctx, t.transfer_id):
            req = j.get_request(rid)
            j.add_event(req.job_id, events.SUBMITTED[req.direction],
                        f"Globus task {result.task_id} {how}", request_id=rid,
                        transfer_id=t.transfer_id, at=now,
                        data={"task_id": result.task_id})
            ctx.alert(events.SUBMITTED[req.direction], views.get(req.job_id),
                      job_id=req.job_id, owner=req.owner, task_id=result.task_id,
                      message=f"Globus task {result.task_id} {how}")


def _awaits_user(ctx: Context, t: object) -> bool:
    return any(ctx.journal.get_request(rid).state == decide.USER_ACTION
               for rid in request_ids(ctx, t.transfer_id))


def _backing_off(ctx: Context, t: object, now: Optional[float] = None) -> bool:
    until = ctx.journal.get_meta(f"backoff:{t.transfer_id}")
    return bool(until) and float(until) > (ctx.clock() if now is None else now)


def _back_off(ctx: Context, t: object, why: str, *, now: float) -> None:
    """Try this transfer again after ``retry_delay`` and tell its owners
    why it waits (once per reason, not every pass)."""
    j = ctx.journal
    delay = float(ctx.setting("retry_delay"))
    j.set_meta(f"backoff:{t.transfer_id}", str(now + delay))
    action_log("submit_deferred", transfer=t.transfer_id, reason=why, retry=f"{delay:.0f}s")
    if (t.message or "") == why:
        return
    with j.transaction():
        j.update_transfer(t.transfer_id, message=why)
        for rid in request_ids(ctx, t.transfer_id):
            req = j.get_request(rid)
            j.set_request_state(rid, req.state, message=why, now=now)
            j.add_event(req.job_id, events.DEFERRED[req.direction],
                        f"{why}; retried every {delay:.0f} s", request_id=rid,
                        transfer_id=t.transfer_id, at=now)


def _within_rate(ctx: Context, identity: str) -> bool:
    """Polls are already one call per 1,000 tasks; submissions are paced."""
    calls = getattr(ctx.backend, "calls", None)
    if not isinstance(calls, Mapping):
        return True
    return decide.within_rate(used=calls.get(identity, 0) - ctx.run.api_base.get(identity, 0),
                              rate=float(ctx.setting("api_rate")),
                              elapsed=ctx.clock() - ctx.run.api_start)


# ------------------------------------------------------------------ graft
def _graft(ctx: Context, views: Views, settled: SettleState, row: object, res: Resolved, *,
           now: float) -> None:
    """``task=<uuid>``: wait on a task started elsewhere -- once the job
    owner's identity can see it (never trust a task id on its own)."""
    from .poll import record_report
    j = ctx.journal
    for task_id in res.tasks:
        if any(i.transfer_id and j.get_transfer(i.transfer_id).task_id == task_id
               for i in j.items_for_request(row.request_id)):
            continue
        try:
            report = ctx.backend.get_task(row.identity, task_id)
        except RetryableError as exc:
            conditions.globus_trouble(ctx, str(exc))
            return
        except WaitingForUser as exc:
            j.set_request_state(row.request_id, decide.USER_ACTION, message=str(exc),
                                action=exc.action, now=now)
            return
        except FatalError:
            fail_request(ctx, views, row, f"Globus task {task_id} is not visible to your Globus "
                                          "identity; graft only tasks you started yourself",
                         now=now)
            return
        existing = j.transfer_by_task_id(task_id)
        with j.transaction():
            if existing is None:
                tid = j.create_transfer(identity=row.identity, direction=row.direction,
                                        source_collection="", destination_collection="",
                                        options={}, label=report.label or "", deadline=None,
                                        now=now, grafted=True)
                j.set_task_id(tid, task_id)
                j.update_transfer(tid, status=decide.status_for(report.outcome),
                                  submitted=now)
            else:
                tid = existing.transfer_id
            # A grafted task's items are not ours to know: one marker item
            # links the request to it.
            j.add_items(tid, [ItemSpec(row.request_id, f"task={task_id}", f"task={task_id}",
                                       False)])
            j.set_request_state(row.request_id, decide.ACTIVE, now=now)
            j.add_event(row.job_id, events.GRAFTED[row.direction],
                        f"waiting on existing Globus task {task_id}",
                        request_id=row.request_id, transfer_id=tid, at=now)
        action_log("graft", job=row.job_id, task=task_id)
        if report.outcome in (Outcome.DONE, Outcome.FATAL):
            record_report(ctx, settled, j.get_transfer(tid), report, now=now)
            settle(ctx, settled, views, {tid}, now=now)
