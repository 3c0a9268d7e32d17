"""``cancel JOBID``: cancel a job's live transfer(s); the request fails.

Root only; see ``admin`` for the order of the writes and what a crash
between them leaves."""
from __future__ import annotations

import time
from typing import Any, List, Tuple

from ..events import History
from ..states import FINAL_REQUEST, Direction, Item, Request, Transfer
from ..errors import WaitingForUser
from ..services import EXIT_BAD, EXIT_RETRY, CliExit, with_json
from .admin import Ctx, drop_items, live_transfers, replaced_events, run_admin


def register(sub) -> None:
    c = with_json(sub.add_parser(
        "cancel", help="admin: cancel a job's live transfer(s); the request fails",
        description="Cancel the job's Globus task(s) and mark its staging failed; the agent "
                    "then applies the failure policy (hold or delete). A task that also "
                    "serves other jobs, or the user's own grafted task, is left running and "
                    "only detached from this job."))
    c.add_argument("jobid")
    c.add_argument("--direction", choices=Direction.values())
    c.add_argument("--reason", help="recorded with the cancel")
    c.set_defaults(func=cmd_cancel)


def cmd_cancel(args: Any) -> int:
    return run_admin(args, "cancel", _cancel)


def _cancel(ctx: Ctx) -> int:
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    targets = [r for d, r in sorted(reqs.items())
               if r.state not in FINAL_REQUEST and r.state != Request.WAITING_EXIT
               and (ctx.args.direction is None or d == ctx.args.direction)]
    if not targets:
        now_states = ", ".join(f"stage-{d} {r.state}" for d, r in sorted(reqs.items()))
        raise CliExit(EXIT_BAD, f"nothing to cancel for job {job_id} ({now_states})")
    # Which transfers to cancel at Globus, and which are shared with other
    # jobs (or are the user's own grafted task) and are only let go of.
    plan: List[Tuple[Any, Any, bool]] = []
    for req in targets:
        for t in live_transfers(ctx, req):
            if t.status == Transfer.NEW and t.submission_id and not t.task_id:
                raise CliExit(EXIT_RETRY, f"the agent is submitting the transfer of job "
                                          f"{job_id} right now; try again in a minute")
            others = set()
            for item in ctx.journal.items_for_transfer(t.transfer_id):
                if item.request_id is None or item.request_id == req.request_id:
                    continue
                other = ctx.journal.get_request(item.request_id)
                if other is not None and other.state not in FINAL_REQUEST:
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
                drop_items(ctx.journal, req.request_id, [t.transfer_id])
                replaced_events(ctx, job_id, req, [t.transfer_id],
                                 "it also serves other jobs (or is the user's own task), so "
                                 "it was left running; " + msg, now)
            else:
                ctx.journal.update_transfer(t.transfer_id, status=Transfer.CANCELED, message=msg,
                                            cancel_requested=now, now=now)
                ctx.journal.set_transfer_outcome(t.transfer_id, Item.FAILED, message=msg)
        for req in targets:
            ctx.journal.set_request_state(req.request_id, Request.FAILED, message=msg, now=now)
            ctx.journal.add_event(job_id, History.ADMIN_CANCEL, f"stage-{req.direction} {msg}",
                                  request_id=req.request_id, at=now,
                                  data={"by": ctx.by, "reason": reason,
                                        "canceled_tasks": canceled})
            so = reqs.get(Direction.OUT)
            if req.direction == Direction.IN and so is not None and so.state == Request.WAITING_EXIT \
                    and so not in targets:
                # As when a stage-in fails: the job will not run, so neither will its stage-out.
                ctx.journal.set_request_state(so.request_id, Request.SKIPPED,
                                              message="the stage-in was canceled", now=now)
                ctx.journal.add_event(job_id, History.STAGEOUT_SKIPPED,
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
