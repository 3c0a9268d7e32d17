"""``adopt JOBID TASKID``: a job's stage-in waits on an existing Globus task.

Root only; see ``admin`` for the order of the writes and what a crash
between them leaves."""
from __future__ import annotations

import time
import uuid
from typing import Any

from .. import states
from ..events import History
from ..states import Direction, Outcome, Request, Stage, Transfer
from ..errors import FatalError, WaitingForUser
from ..journal import ItemSpec
from ..services import EXIT_BAD, EXIT_NOTFOUND, EXIT_USAGE, CliExit, with_json
from .admin import LIVE, OUTCOME_STATUS, Ctx, drop_items, replaced_events, restore_stageout, run_admin


def register(sub) -> None:
    a = with_json(sub.add_parser(
        "adopt", help="admin: make a job's stage-in wait on an existing Globus task",
        description="The job's stage-in waits on TASKID (like task= in the request); the "
                    "task must be visible to the job owner's Globus identity."))
    a.add_argument("jobid")
    a.add_argument("task_id", metavar="TASKID")
    a.add_argument("--reason", help="recorded with the adoption")
    a.set_defaults(func=cmd_adopt)


def cmd_adopt(args: Any) -> int:
    try:
        task_id = str(uuid.UUID(args.task_id))
    except ValueError:
        raise CliExit(EXIT_USAGE, f"adopt: {args.task_id!r} is not a Globus task id; expected "
                                  "a UUID like 1a2b3c4d-0000-4000-8000-00000000000a") from None
    args.task_id = task_id
    return run_admin(args, "adopt", _adopt)


def _adopt(ctx: Ctx) -> int:
    task_id = ctx.args.task_id
    job_id = ctx.job_id()
    reqs = ctx.requests(job_id)
    req = reqs.get(Direction.IN)
    if req is None:
        raise CliExit(EXIT_NOTFOUND, f"job {job_id} has no stage-in request")
    if req.state == Request.SUCCEEDED:
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
    if outcome == Outcome.FATAL:
        raise CliExit(EXIT_BAD, f"Globus task {task_id} has {rep.status or 'failed'}"
                                f"{': ' + rep.message if rep.message else ''}; adopting it "
                                "would fail the stage-in")
    # PBS first: held, and marked as staging so the user cannot change the request.
    if "s" not in view.holds:
        ctx.pbs.hold(job_id, hold="s")
    ctx.pbs.alter(job_id, resources={states.RES_STATE: Stage.STAGING_IN,
                                     states.RES_TASKS: task_id},
                  comment=f"staging: waiting on Globus task {task_id[:8]} (adopted by admin)")
    now = time.time()
    reason = (ctx.args.reason or "").strip()
    with ctx.journal.transaction():
        tids = drop_items(ctx.journal, req.request_id)
        replaced_events(ctx, job_id, req, tids, f"admin {ctx.by} adopted task {task_id}", now)
        if existing is None:
            tid = ctx.journal.create_transfer(
                identity=req.identity, direction=Direction.IN, source_collection="",
                destination_collection="", options={}, label=rep.label or "", deadline=None,
                task_id=task_id, grafted=True, status=OUTCOME_STATUS.get(outcome, Transfer.ACTIVE),
                now=now)
        else:
            tid = existing.transfer_id
        # The same placeholder item the agent writes for a task= graft.
        ctx.journal.add_items(tid, [ItemSpec(req.request_id, f"task={task_id}", f"task={task_id}",
                                             False)])
        ctx.journal.set_request_state(req.request_id, Request.ACTIVE, now=now)
        ctx.journal.add_event(job_id, History.ADMIN_ADOPT,
                              f"stage-in now waits on Globus task {task_id} (adopted by "
                              f"{ctx.by}{': ' + reason if reason else ''})",
                              request_id=req.request_id, transfer_id=tid, at=now,
                              data={"by": ctx.by, "task_id": task_id, "reason": reason,
                                    "previous_state": req.state})
        restore_stageout(ctx, job_id, reqs, now)
    return ctx.done({"action": "adopt", "job_id": job_id, "task_id": task_id,
                     "task_status": rep.status, "previous_state": req.state},
                    f"job {job_id}: stage-in now waits on Globus task {task_id} "
                    f"({rep.status}); the job is released when it succeeds")
