"""Phase intake: read PBS, register new requests, adopt a transfer already
moving the same data.

Reads ``qstat`` (one call for every job) and the jobobit records; decides
which queued jobs could run next and their place in the queue
(``decide.could_run_next``, ``decide.queue_ranks``: stage-ahead); checks each
new request against the site policy again (``hookcore.validate``) and writes
it to the journal -- PENDING (stage-in), WAITING_EXIT (stage-out) or FAILED
with the reason.  A stage-in whose data the same identity is already moving
joins that transfer (scenario D and dedup).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Tuple

from .. import decide, states
from ..decide import JobView
from ..errors import RetryableError, StagingError
from ..journal import ItemSpec
from ..states import Direction, Item, JobMark
from .. import events
from ..events import History
from .context import Context, Views, action_log, request_ids
from .settle import SettleState, settle, transition


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A request parsed, expanded and checked against the site policy again."""

    items: Tuple[Tuple[str, str, str, str, bool], ...]   # (src_coll, src, dst_coll, dst, recursive)
    tasks: Tuple[str, ...]
    options: object
    normalized: str
    key: str


def run_cycle(ctx: Context, views: Views, settled: SettleState, *,
              now: float) -> Optional[Dict[str, JobView]]:
    """Read PBS and register what is new; returns the jobs read, or None when
    PBS did not answer (then nothing of PBS's is changed this pass)."""
    jobs = read_pbs(ctx, views)
    if jobs is not None:
        views.jobs = jobs
        register(ctx, views, settled, jobs, now=now)
    register_obits(ctx, views, settled, now=now)
    return jobs


def read_pbs(ctx: Context, views: Views) -> Optional[Dict[str, JobView]]:
    try:
        raw = ctx.pbs.jobs()
    except RetryableError as exc:
        # PBS (server or its database) is down: change nothing, say so,
        # keep tracking transfers; the next cycle picks up from here.
        ctx.stats.errors.append(str(exc))
        action_log("pbs_unreachable", reason=str(exc))
        return None
    jobs = {}
    ahead = int(ctx.setting("stage_ahead"))
    waiting: Dict[str, List[Tuple[int, float, str]]] = {}
    for job_id, attrs in raw.items():
        res = attrs.get("Resource_List") or {}
        if not isinstance(res, dict):
            continue
        if ahead and decide.could_run_next(str(attrs.get("job_state") or ""),
                                           str(attrs.get("Hold_Types") or "n")):
            waiting.setdefault(str(attrs.get("queue") or ""), []).append(
                (-int(attrs.get("Priority") or 0),
                 decide.parse_pbs_time(attrs.get("qtime")), job_id))
        if res.get(states.RES_STAGEIN) is None and res.get(states.RES_STAGEOUT) is None:
            continue
        jobs[job_id] = JobView.from_qstat(job_id, attrs)
    views.queue_rank = decide.queue_ranks(waiting)
    return jobs


def resolve(ctx: Context, raw: str, *, direction: str, owner: str,
            project: Optional[str] = None) -> Resolved:
    from .. import hookcore, request
    res_name = states.RES_STAGEIN if direction == Direction.IN else states.RES_STAGEOUT
    resolved = hookcore.validate(raw, direction=direction, user=owner, site=ctx.cfg,
                                 resource=res_name, project=project)
    req = resolved.request
    if ctx.identity_for(owner) == "site":
        # Globus acts as the site's one account here and would follow any
        # symlink the owner planted: check where each path really leads.
        from .. import pathcheck, policy
        pathcheck.check_request(req, user=owner, roots=policy.allowed_roots(ctx.cfg, owner),
                                resource=res_name)
    items = tuple((it.source_collection, it.source_path, it.destination_collection,
                   it.destination_path, bool(it.recursive)) for it in resolved.items)
    identity = ctx.identity_for(owner)
    return Resolved(items=items, tasks=tuple(req.tasks), options=req.options,
                    normalized=request.render(req),
                    key=request.request_key(req, identity=identity))


def register(ctx: Context, views: Views, settled: SettleState, jobs: Mapping[str, JobView], *,
             now: float) -> None:
    j = ctx.journal
    known = {row.job_id: row for row in j.jobs(job_ids=list(jobs))} if jobs else {}
    existing = {(r.job_id, r.direction) for r in j.requests_for_jobs(jobs)} if jobs \
        else set()
    for view in jobs.values():
        row = known.get(view.job_id)
        if row is None:
            j.upsert_job(view.job_id, owner=view.owner, queue=view.queue,
                         priority=view.priority, qtime=view.qtime, now=now)
            j.add_event(view.job_id, History.SEEN, f"job seen by the agent (state {view.state})",
                        at=now)
        if view.state in ("R", "E") and (row is None or row.stage_state != JobMark.RUNNING):
            # The history outlives PBS's: note the run once, as PBS reports it.
            with j.transaction():
                j.upsert_job(view.job_id, owner=view.owner, stage_state=JobMark.RUNNING, now=now)
                j.add_event(view.job_id, History.JOB_STARTED, "job is running", at=now)
    if jobs:
        j.mark_job_seen(list(jobs), now=now)
    for view in jobs.values():
        for direction, raw in ((Direction.IN, view.stagein), (Direction.OUT, view.stageout)):
            if raw is None:
                continue
            if (view.job_id, direction) in existing:
                continue
            add_request(ctx, views, settled, view, direction, raw, now=now)


def register_obits(ctx: Context, views: Views, settled: SettleState, *, now: float) -> None:
    """Stage-outs the jobobit hook recorded for jobs this agent never saw
    alive (they ended between two looks at PBS): register them from the
    obit, which carries the request as the job ended."""
    j = ctx.journal
    for obit in j.obits_without_stageout_request():
        if not obit.owner:
            continue
        view = JobView(job_id=obit.job_id, owner=obit.owner, state="F",
                       stageout=obit.stageout, project=obit.project or "",
                       exit_status=obit.exit_status)
        with ctx.guard(obit.job_id):
            if j.get_job(obit.job_id) is None:
                j.upsert_job(obit.job_id, owner=obit.owner, now=now)
                j.add_event(obit.job_id, History.SEEN, "job known from its end (jobobit): it "
                            "ran and ended between two looks of the agent", at=now)
            add_request(ctx, views, settled, view, Direction.OUT, str(obit.stageout), now=now)


def add_request(ctx: Context, views: Views, settled: SettleState, view: JobView,
                direction: str, raw: str, *, now: float) -> None:
    j = ctx.journal
    identity = ctx.identity_for(view.owner)
    try:
        res = resolve(ctx, raw, direction=direction, owner=view.owner,
                      project=view.project or None)
        # A stage-out waits for the job's end; phase stageout makes it PENDING.
        first = decide.PENDING if direction == Direction.IN else decide.WAITING_EXIT
        rid = j.add_request(job_id=view.job_id, direction=direction, owner=view.owner,
                            identity=identity, raw=raw, normalized=res.normalized,
                            request_key=res.key, state=first, now=now)
        j.add_event(view.job_id, events.REQUESTED[direction],
                    f"stage-{direction} request registered: {res.normalized}",
                    request_id=rid, at=now)
        if direction == Direction.IN and res.items:
            # Scenario D and dedup: the same data for the same identity are
            # already on their way -- wait on that transfer, start nothing.
            adopt(ctx, views, settled, j.get_request(rid), now=now)
    except StagingError as exc:
        # Checked at qsub, but the policy, an alias or a manifest may have
        # changed since: the request fails with the reason, never silently.
        rid = j.add_request(job_id=view.job_id, direction=direction, owner=view.owner,
                            identity=identity, raw=raw, normalized=raw,
                            request_key=f"invalid:{view.job_id}:{direction}",
                            state=decide.FAILED, now=now)
        transition(ctx, rid, view.job_id, decide.FAILED, kind=events.FAILED[direction],
                   text=str(exc), message=str(exc), now=now)
        ctx.alert(events.FAILED[direction], view, message=str(exc))


def adopt(ctx: Context, views: Views, settled: SettleState, row: object, *,
          now: float) -> bool:
    """Scenario D and dedup: the same request from the same identity is
    already on its way -- wait on that transfer instead of starting one.

    Only two kinds of transfer may be joined: one still moving (its end is
    after this job's submission, so whatever it delivers is news), and a
    finished one whose job left PBS without ever starting (the lost queue
    of scenario D: nobody has used or removed those data).  A transfer
    whose job ran proves nothing about the files now -- the job may have
    removed or changed them -- so that request gets a transfer of its own
    (with a sync level: see phases.submit)."""
    j = ctx.journal
    grace = float(ctx.setting("orphan_grace"))
    for other in j.find_requests_by_key(row.request_key):
        if other.request_id == row.request_id or other.identity != row.identity:
            continue
        transfers = {i.transfer_id for i in j.items_for_request(other.request_id)}
        usable = []
        for tid in transfers:
            t = j.get_transfer(tid)
            if t.status in decide.LIVE_TRANSFER or (
                    t.status == decide.T_SUCCEEDED and (t.completed or 0) >= now - grace
                    and _unused_since(ctx, t, row.request_id)):
                usable.append(t)
        if not usable or len(usable) != len(transfers):
            continue
        with j.transaction():
            for t in usable:
                items = [i for i in j.items_for_transfer(t.transfer_id)
                         if i.request_id == other.request_id]
                j.add_items(t.transfer_id, [ItemSpec(row.request_id, i.source_path,
                                                     i.destination_path, bool(i.recursive))
                                            for i in items])
                for item in j.items_for_transfer(t.transfer_id):
                    if item.request_id == row.request_id:
                        src = next((i for i in items if i.source_path == item.source_path and
                                    i.destination_path == item.destination_path), None)
                        if src is not None and src.outcome != Item.PENDING:
                            j.set_item_outcome(item.item_id, src.outcome, message=src.message)
                if t.orphaned_since:
                    j.update_transfer(t.transfer_id, orphaned_since=None)
            j.set_request_state(row.request_id, decide.ACTIVE, now=now)
            tasks = ", ".join(t.task_id or "?" for t in usable)
            j.add_event(row.job_id, events.ADOPTED[row.direction],
                        f"adopted Globus task {tasks} already moving the same data "
                        f"(request of job {other.job_id})", request_id=row.request_id,
                        at=now)
        action_log("adopt", job=row.job_id, from_job=other.job_id,
                   tasks=",".join(t.task_id or "" for t in usable))
        settle(ctx, settled, views, {t.transfer_id for t in usable}, now=now)
        return True
    return False


def _unused_since(ctx: Context, t: object, request_id: int) -> bool:
    """No job that a finished transfer served has started since."""
    return all(_never_started(ctx, ctx.journal.get_request(rid).job_id)
               for rid in request_ids(ctx, t.transfer_id) if rid != request_id)


def _never_started(ctx: Context, job_id: str) -> bool:
    """The job left PBS and nothing says it ever ran: the agent never
    released it (nor did an admin), no jobobit (PBS runs jobobit for every
    job that started) and no run seen."""
    j = ctx.journal
    job = j.get_job(job_id)
    if job is None or not job.gone_since or job.stage_state == JobMark.RUNNING:
        return False
    if j.obit(job_id) is not None:
        return False
    ran = (History.RELEASED, History.ADMIN_RELEASE, History.JOB_STARTED)
    return not j.events(job_id, kind=ran, limit=1)
