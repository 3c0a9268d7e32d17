"""Phase stageout: after a job ends, decide and start its stage-out.

Reads the stage-outs WAITING_EXIT, the job's view, its jobobit record (the
request as the job ended, its exit status) or PBS's history (``qstat -x``,
at most ``max_history_lookups`` a pass); decides with
``decide.stageout_start`` (skipped when the stage-in did not succeed or the
exit status does not match ``when=``); writes PENDING (phase submit then
plans it) or SKIPPED.  The retry of a failed stage-out is phase settle's
(``decide.request_verdict``).
"""
from __future__ import annotations

from typing import Mapping, Optional

from .. import decide
from ..decide import JobView
from ..errors import RetryableError, StagingError
from ..states import Direction
from ..events import History
from .context import Context, Views, request_for
from .intake import resolve
from .settle import fail_request, skip_stageout, transition


def run_cycle(ctx: Context, views: Views, jobs: Mapping[str, JobView], *, now: float) -> int:
    """``jobs``: this pass's PBS read.  Returns the stage-outs made PENDING."""
    j = ctx.journal
    default_when = str(ctx.setting("stageout_when"))
    budget = int(ctx.setting("max_history_lookups"))
    started = 0
    for req in j.requests(state=(decide.WAITING_EXIT,), direction=Direction.OUT):
        with ctx.guard(req.job_id):
            view = jobs.get(req.job_id)
            if view is not None and not view.finished:
                continue
            exit_status = None
            obit = j.obit(req.job_id)
            if obit is not None and obit.stageout and obit.stageout != req.raw:
                req = _restate(ctx, views, req, obit, now=now)
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
                    attrs = ctx.pbs.job(req.job_id)
                except RetryableError:
                    return started
                if attrs is None:
                    skip_stageout(ctx, req, decide.SKIP_UNKNOWN_JOB, now=now)
                    continue
                hv = JobView.from_qstat(req.job_id, attrs)
                if not hv.finished:
                    continue
                exit_status = hv.exit_status
                if exit_status is None:
                    skip_stageout(ctx, req, decide.SKIP_DELETED_BEFORE_RUN, now=now)
                    continue
            stagein = request_for(ctx, req.job_id, Direction.IN)
            options = ctx.options(req.normalized, Direction.OUT)
            when = getattr(options, "when", None) or default_when
            start = decide.stageout_start(exit_status=exit_status, when=when,
                                          stagein_state=stagein.state if stagein else None)
            if not start.start:
                skip_stageout(ctx, req, start.why, now=now, exit_status=exit_status)
                continue
            transition(ctx, req.request_id, req.job_id, decide.PENDING, kind=History.JOB_ENDED,
                       text=f"job ended with exit status {exit_status}; stage-out starting",
                       now=now)
            started += 1
    return started


def _restate(ctx: Context, views: Views, req: object, obit: object, *,
             now: float) -> Optional[object]:
    """The job's stageout_globus as it ended (qalter may change it while the job
    runs; the jobobit hook recorded the last value) replaces what was registered."""
    j = ctx.journal
    try:
        res = resolve(ctx, obit.stageout, direction=Direction.OUT, owner=req.owner,
                      project=obit.project or None)
    except StagingError as exc:
        fail_request(ctx, views, req, str(exc), now=now)
        return None
    with j.transaction():
        j.update_request(req.request_id, raw=obit.stageout, normalized=res.normalized,
                         request_key=res.key, now=now)
        j.add_event(req.job_id, History.STAGEOUT_REQUESTED,
                    f"stage-out request changed before the job ended: {res.normalized}",
                    request_id=req.request_id, at=now)
    return j.get_request(req.request_id)
