"""Phase orphans: jobs that left PBS while staging, and transfers nobody waits on.

"A job deleted while staging", start to end: ``vanished`` reads the
stage-ins whose job the last PBS read did not show, asks PBS about each
(``qstat -x``), decides with ``decide.job_left`` and ``decide.vanished``
(keep its live transfers ``orphan_grace`` seconds for a resubmission to adopt
-- scenario D --, cancel the request if nothing was submitted, skip the
stage-out), and writes that in one transaction.  ``reap`` then cancels the
Globus task of every orphan whose grace ran out (``decide.orphan_due``,
``decide.orphan_fate``, ``decide.may_cancel``) and marks its requests
CANCELED.
"""
from __future__ import annotations

from typing import Mapping

from .. import decide
from ..decide import JobView
from ..errors import RetryableError, StagingError
from ..states import Direction
from ..events import History, Kind
from .context import Context, action_log, log, request_for, request_ids
from .settle import skip_stageout


def run_cycle(ctx: Context, views: Mapping[str, JobView], *, now: float,
              pbs_read: bool = True) -> None:
    """``views``: the jobs of this pass's PBS read; without one (PBS down)
    only the orphans' grace is looked at."""
    if pbs_read:
        vanished(ctx, views, now=now)
    reap(ctx, now=now)


def vanished(ctx: Context, views: Mapping[str, JobView], *, now: float) -> None:
    j = ctx.journal
    grace = float(ctx.setting("orphan_grace"))
    for req in j.requests_of_unseen_jobs(states=decide.UNFINISHED, direction=Direction.IN,
                                         seen_before=now):
        with ctx.guard(req.job_id):
            if req.job_id in views or j.obit(req.job_id) is not None:
                continue
            try:
                attrs = ctx.pbs.job(req.job_id)
            except RetryableError:
                return
            state = JobView.from_qstat(req.job_id, attrs).state if attrs is not None else None
            if not decide.job_left(in_view=False, has_obit=False, pbs_state=state,
                                   pbs_known=attrs is not None):
                continue
            with j.transaction():
                j.mark_gone(req.job_id, now=now)
                transfers = [j.get_transfer(i.transfer_id)
                             for i in j.items_for_request(req.request_id)]
                so = request_for(ctx, req.job_id, Direction.OUT)
                plan = decide.vanished(request_state=req.state, transfers=transfers,
                                       stageout_state=so.state if so is not None else None)
                for tid in plan.orphan:
                    j.update_transfer(tid, orphaned_since=now)
                j.add_event(req.job_id, Kind.JOB_DELETED,
                            "job left PBS during stage-in; its transfer is kept "
                            f"{grace:.0f} s for a resubmission to adopt",
                            request_id=req.request_id, at=now)
                if plan.cancel_request:
                    j.set_request_state(req.request_id, decide.CANCELED,
                                        message="job left PBS before its stage-in started",
                                        now=now)
                if plan.skip_stageout:
                    skip_stageout(ctx, so, decide.SKIP_LEFT_BEFORE_RUN, now=now)
            action_log("job_vanished", job=req.job_id)
            ctx.alert(Kind.JOB_DELETED, None, job_id=req.job_id, owner=req.owner,
                      message="job left PBS while its stage-in was running")


def reap(ctx: Context, *, now: float) -> None:
    j = ctx.journal
    grace = float(ctx.setting("orphan_grace"))
    for t in j.transfers(status=decide.LIVE_TRANSFER):
        if not decide.orphan_due(t, now=now, grace=grace):
            continue
        waits = any(decide.request_waits(r, job_gone=bool(j.get_job(r.job_id) and
                                                          j.get_job(r.job_id).gone_since))
                    for r in (j.get_request(rid) for rid in request_ids(ctx, t.transfer_id)))
        if decide.orphan_fate(someone_waits=waits) == decide.RELEASE:
            j.update_transfer(t.transfer_id, orphaned_since=None)
            continue
        if decide.may_cancel(t):
            try:
                ctx.backend.cancel(t.identity, t.task_id)
            except RetryableError:
                continue
            except StagingError as exc:
                log.warning("cancel of orphan %s: %s", t.task_id, exc)
        with j.transaction():
            j.update_transfer(t.transfer_id, status=decide.T_CANCELED, completed=now,
                              message="canceled: its job left PBS and no resubmission adopted "
                                      f"it within {grace:.0f} s")
            for rid in request_ids(ctx, t.transfer_id):
                r = j.get_request(rid)
                if r.state not in decide.FINAL:
                    j.set_request_state(rid, decide.CANCELED,
                                        message="job gone; transfer canceled", now=now)
                j.add_event(r.job_id, History.TRANSFER_CANCELED,
                            f"Globus task {t.task_id} canceled after the grace period",
                            request_id=rid, transfer_id=t.transfer_id, at=now)
        action_log("cancel_orphan", transfer=t.transfer_id, task=t.task_id)
