"""``release JOBID --reason``: force-release a held job without its stage-in.

Root only; see ``admin`` for the order of the writes and what a crash
between them leaves."""
from __future__ import annotations

import time
from typing import Any

from .. import states
from ..events import History
from ..states import Direction, Request, Stage
from ..services import EXIT_USAGE, CliExit, with_json
from .admin import Ctx, restore_stageout, run_admin


def register(sub) -> None:
    rl = with_json(sub.add_parser(
        "release", help="admin: force-release a held job without its stage-in (logged)",
        description="Mark the stage-in done, set globus_stage_state=staged-in and release "
                    "the 's' hold: the job runs without waiting for its data. Logged with "
                    "your name and the reason."))
    rl.add_argument("jobid")
    rl.add_argument("--reason", required=True, help="why (required; logged)")
    rl.set_defaults(func=cmd_release)


def cmd_release(args: Any) -> int:
    reason = " ".join((args.reason or "").split())
    if not reason:
        raise CliExit(EXIT_USAGE, "release: --reason TEXT is required (it is logged with "
                                  "your name)")
    args.reason = reason
    return run_admin(args, "release", _release)


def _release(ctx: Ctx) -> int:
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    req = reqs.get(Direction.IN)
    view = ctx.live_job(job_id, "release")
    msg = f"released by admin {ctx.by}: {ctx.args.reason}"
    now = time.time()
    with ctx.journal.transaction():
        if req is not None and req.state != Request.SUCCEEDED:
            # The agent would otherwise put the hold back (a failed or running
            # stage-in keeps a job held): mark it done, by whom and why.
            ctx.journal.set_request_state(req.request_id, Request.SUCCEEDED, message=msg, now=now)
        restore_stageout(ctx, job_id, reqs, now)
        ctx.journal.add_event(job_id, History.ADMIN_RELEASE, f"forced release: {msg}",
                              request_id=req.request_id if req is not None else None, at=now,
                              data={"by": ctx.by, "reason": ctx.args.reason,
                                    "previous_state": req.state if req is not None else None})
    # The state word first: the runjob guard lets the job run only on it.
    ctx.pbs.alter(job_id, resources={states.RES_STATE: Stage.STAGED_IN},
                  comment=f"staging: released by admin {ctx.by}: {ctx.args.reason}")
    released = "s" in view.holds
    if released:
        ctx.pbs.release(job_id, hold="s")
    return ctx.done({"action": "release", "job_id": job_id, "reason": ctx.args.reason,
                     "previous_state": req.state if req is not None else None,
                     "hold_released": released},
                    f"job {job_id}: {msg}" + ("" if released else " (it had no 's' hold)"))
