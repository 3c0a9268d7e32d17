"""``retry JOBID``: a failed (or canceled) stage-in/out gets a fresh transfer.

Root only; see ``admin`` for the order of the writes and what a crash
between them leaves."""
from __future__ import annotations

import time
from typing import Any

from .. import states
from ..events import History
from ..states import Direction, Request, Stage
from ..services import EXIT_BAD, EXIT_NOTFOUND, CliExit, with_json
from .admin import Ctx, drop_items, live_transfers, replaced_events, restore_stageout, run_admin


def register(sub) -> None:
    r = with_json(sub.add_parser(
        "retry", help="admin: a failed stage-in/out gets a fresh transfer",
        description="Set a failed (or canceled) request back to pending; the agent submits "
                    "a new transfer on its next cycle. For a stage-in the job is held (s) "
                    "and its state set back to waiting. Logged with your name."))
    r.add_argument("jobid")
    r.add_argument("--direction", choices=Direction.values(),
                   help="which request (default: the failed one, stage-in first)")
    r.set_defaults(func=cmd_retry)


def cmd_retry(args: Any) -> int:
    return run_admin(args, "retry", _retry)


def _retry(ctx: Ctx) -> int:
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    direction = ctx.args.direction
    if direction is None:
        failed = [d for d in Direction if d in reqs and
                  reqs[d].state in (Request.FAILED, Request.CANCELED)]
        direction = failed[0] if failed else (
            Direction.IN if Direction.IN in reqs else Direction.OUT)
    req = reqs.get(direction)
    if req is None:
        raise CliExit(EXIT_NOTFOUND, f"job {job_id} has no stage-{direction} request")
    if req.state not in (Request.FAILED, Request.CANCELED):
        raise CliExit(EXIT_BAD, f"stage-{direction} of job {job_id} is {req.state}; only a "
                                "failed or canceled one can be retried")
    live = live_transfers(ctx, req)
    if live:
        raise CliExit(EXIT_BAD, f"stage-{direction} of job {job_id} still has Globus task "
                                f"{live[0].task_id or '(being submitted)'} {live[0].status}; "
                                f"wait for it or run: globus-staging cancel {job_id}")
    if direction == Direction.IN:
        view = ctx.live_job(job_id, "retry the stage-in of")
        # PBS first (see the module docstring): held, and back to 'waiting'.
        if "s" not in view.holds:
            ctx.pbs.hold(job_id, hold="s")
        ctx.pbs.alter(job_id, resources={states.RES_STATE: Stage.WAITING},
                      comment=f"staging: stage-in retry requested by admin {ctx.by}")
    now = time.time()
    why = f"retry requested by admin {ctx.by}"
    with ctx.journal.transaction():
        tids = drop_items(ctx.journal, req.request_id)
        replaced_events(ctx, job_id, req, tids, why, now)
        ctx.journal.set_request_state(req.request_id, Request.PENDING, count_attempt=True, now=now)
        ctx.journal.add_event(
            job_id, History.ADMIN_RETRY,
            f"stage-{direction} retry requested by {ctx.by} (was {req.state}: "
            f"{req.message or 'no message'}); the agent submits a new transfer next cycle",
            request_id=req.request_id, at=now,
            data={"by": ctx.by, "previous_state": req.state, "previous_message": req.message,
                  "replaced_transfers": tids})
        restored = direction == Direction.IN and restore_stageout(ctx, job_id, reqs, now)
    return ctx.done({"action": "retry", "job_id": job_id, "direction": direction,
                     "previous_state": req.state,
                     # true when the stage-out was restored (that event was written)
                     History.STAGEOUT_RESTORED: restored},
                    f"job {job_id}: stage-{direction} set back to pending (was {req.state}); "
                    "the agent submits a new transfer on its next cycle")
