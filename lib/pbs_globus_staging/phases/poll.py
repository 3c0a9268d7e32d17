"""Phase poll: one batched ``task_list`` per identity; store what Globus said.

Reads the submitted transfers (ACTIVE, INACTIVE); decides through
``decide.report_update`` (fail fast on a fault that persists for
``fatal_fault_window``, the site's ``default_deadline``) and
``decide.fault_lookup`` (when to ask Globus for a task's faults); writes the
transfer rows, cancels a task that failed fast, and marks the requests of a
task waiting for its user.  Settling the outcomes is phase settle's.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Set, Tuple

from .. import decide
from ..backend import EndpointTrouble, Outcome, TaskReport
from ..errors import FatalError, RetryableError, StagingError, WaitingForUser
from ..states import GlobusStatus
from . import conditions
from .context import Context, action_log, log
from .settle import SettleState, transfer_needs_user


@dataclasses.dataclass
class PollState:
    """Owned by the loop: when Globus was last asked (a serving agent asks
    at most once per ``poll_fast``)."""

    last_poll: float = 0.0


def run_cycle(ctx: Context, st: PollState, settled: SettleState, *, now: float) -> Set[int]:
    """Poll every submitted task; returns the transfer ids whose row changed."""
    j = ctx.journal
    if not decide.poll_due(served=ctx.run.served, now=now, last_poll=st.last_poll,
                           fast=float(ctx.setting("poll_fast"))):
        return set()
    if ctx.run.served:
        st.last_poll = now
    by_identity = decide.by_identity(j.transfers(status=(decide.T_ACTIVE, decide.T_INACTIVE)))
    changed: Set[int] = set()
    ctx.stats.polls += 1
    for identity, rows in by_identity.items():
        try:
            reports = ctx.backend.poll(identity, [t.task_id for t in rows])
        except WaitingForUser as exc:
            # The login itself is gone (revoked, expired): every task of this
            # identity waits for the user, like INACTIVE, until polls work again.
            for t in rows:
                if t.status != decide.T_INACTIVE:
                    j.update_transfer(t.transfer_id, status=decide.T_INACTIVE, message=str(exc))
                transfer_needs_user(ctx, t, str(exc), exc.action, now=now)
            continue
        except EndpointTrouble as exc:
            # One collection's endpoint, not Globus: nothing to change.
            action_log("poll_deferred", identity=identity, reason=str(exc))
            continue
        except RetryableError as exc:
            # Transient: no job changes, back off to the next poll.
            ctx.stats.errors.append(f"globus: {exc}")
            conditions.globus_trouble(ctx, str(exc))
            continue
        except FatalError as exc:
            ctx.stats.errors.append(f"globus: {exc}")
            continue
        conditions.globus_ok(ctx)
        for t in rows:
            report = reports.get(t.task_id)
            if report is None:
                report = _lookup_missing(ctx, identity, t)
                if report is None:
                    continue
            if record_report(ctx, settled, t, report, now=now):
                changed.add(t.transfer_id)
    return changed


def _lookup_missing(ctx: Context, identity: str, t: object) -> Optional[TaskReport]:
    try:
        return ctx.backend.get_task(identity, t.task_id)
    except FatalError as exc:
        return TaskReport(task_id=t.task_id, outcome=Outcome.FATAL, status=GlobusStatus.FAILED,
                          fatal_code="NOT_VISIBLE",
                          message=f"Globus task {t.task_id} is no longer visible: {exc}")
    except StagingError:
        return None


def record_report(ctx: Context, settled: SettleState, t: object, report: TaskReport, *,
                  now: float) -> bool:
    """Store what Globus said (``decide.report_update``); True when it changed."""
    if report.outcome == Outcome.DONE and report.skipped_errors == 0:
        settled.nothing_skipped.add(t.transfer_id)
    window = float(ctx.setting("fatal_fault_window"))
    late = decide.past_site_deadline(t, limit=ctx.setting("default_deadline"), now=now) \
        if report.outcome in (Outcome.RUNNING, Outcome.WAITING_FOR_USER) else None
    fault = _fatal_fault(ctx, t, report, now=now, window=window) \
        if report.outcome == Outcome.RUNNING and not late else None
    explained = _explain(ctx, t) if decide.needs_explain(report) else ""
    upd = decide.report_update(t, report, late=late, fault=fault, explained=explained,
                               now=now, window=window)
    if upd.cancel:
        cancel_task(ctx, t)
    if upd.log is not None:
        action_log(upd.log[0], **dict(upd.log[1]))
    ctx.journal.update_transfer(t.transfer_id, **upd.fields)
    if upd.needs_user:
        transfer_needs_user(ctx, t, report.message or "Globus credentials expired",
                            report.action or "globus-staging login", now=now)
    return upd.changed


def _fatal_fault(ctx: Context, t: object, report: TaskReport, *, now: float,
                 window: float) -> Optional[Tuple[str, str]]:
    """(code, text) while the task keeps hitting a fatal-kind fault."""
    look = decide.fault_lookup(t, report, now=now, window=window)
    if look == decide.FAULT_NONE:
        return None
    if look == decide.FAULT_KEEP:
        return (t.fatal_code or "", t.message or "")   # still timing; look again at expiry
    try:
        return ctx.backend.fatal_fault(t.identity, t.task_id)
    except StagingError:
        return decide.fault_unknown(t)


def cancel_task(ctx: Context, t: object) -> None:
    if (t.options or {}).get("foreign"):
        action_log("cancel_skipped", transfer=t.transfer_id, task=t.task_id,
                   reason="started outside PBS")
        return
    try:
        ctx.backend.cancel(t.identity, t.task_id)
    except StagingError as exc:
        log.warning("cancel of %s failed: %s", t.task_id, exc)


def _explain(ctx: Context, t: object) -> str:
    try:
        return ctx.backend.explain(t.identity, t.task_id)
    except StagingError:
        return ""


def delay(ctx: Context, *, now: float, pending: bool) -> float:
    """Seconds until the next Globus poll (``decide.poll_delay``)."""
    return decide.poll_delay(ctx.journal.transfers(status=(decide.T_ACTIVE, decide.T_INACTIVE)),
                             now=now, fast=float(ctx.setting("poll_fast")),
                             normal=float(ctx.setting("poll_interval")), pending=pending)
