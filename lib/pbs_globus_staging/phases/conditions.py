"""Phase conditions: what persists is reported every pass (a request waiting
for its user, Globus unreachable, a task without progress); the alert engine
decides when to repeat (e.g. 'still waiting for your login' every 6 h).  Also
the run's end: the agent-unhealthy alert, and housekeeping.

Reads requests, transfers, cycles and the journal's meta; decides through
``decide.slow_alerts``, ``decide.agent_unhealthy``, ``decide.prune_due``;
writes alerts into the sink and prunes history.
"""
from __future__ import annotations

from .. import decide
from ..errors import StagingError
from ..events import Kind
from .context import Context, Views, action_log, now_text, request_ids


def run_cycle(ctx: Context, views: Views, *, now: float) -> None:
    if not ctx.alerts.on:
        return
    j = ctx.journal
    for req in j.requests(state=(decide.USER_ACTION,)):
        ctx.alert(Kind.USER_ACTION, views.get(req.job_id), job_id=req.job_id,
                  owner=req.owner, message=req.message or "", action=req.action or "",
                  key=f"{req.job_id}:user_action:{req.request_id}")
    down = j.get_meta("globus_down_since")
    if down:
        ctx.alert(Kind.GLOBUS_UNREACHABLE, None, key=f"{Kind.GLOBUS_UNREACHABLE}:{down}",
                  message="Globus has not answered since " + now_text(float(down)))
    for t, req, message in decide.slow_alerts(
            j.transfers(status=(decide.T_ACTIVE,)),
            lambda t: [j.get_request(rid) for rid in request_ids(ctx, t.transfer_id)],
            now=now, slow_after=float(ctx.setting("slow_after"))):
        ctx.alert(Kind.SLOW, views.get(req.job_id), job_id=req.job_id,
                  owner=req.owner, task_id=t.task_id or "",
                  key=f"{req.job_id}:slow:{t.task_id}", message=message)


def health_alert(ctx: Context) -> None:
    """Three failed runs in a row (this one included): tell the admins."""
    if not ctx.alerts.on or ctx.stats.ok:
        return
    try:
        recent = [c for c in ctx.journal.last_cycles(3) if c.finished]
    except StagingError:
        recent = []
    if decide.agent_unhealthy(ok=ctx.stats.ok, recent=recent):
        ctx.alert(Kind.AGENT_UNHEALTHY, None, key=str(Kind.AGENT_UNHEALTHY),
                  message=decide.unhealthy_message(ctx.stats.errors))


def housekeeping(ctx: Context, *, now: float) -> None:
    """Settled jobs that left PBS become history; history older than
    ``history_days`` is pruned, once a day."""
    j = ctx.journal
    j.mark_settled_jobs_gone(seen_before=now, final_states=decide.FINAL, now=now)
    last = float(j.get_meta("last_prune") or 0)
    if decide.prune_due(last=last, now=now) and not ctx.out_of_time():
        removed = j.prune(older_than_days=float(ctx.setting("history_days")), now=now)
        j.set_meta("last_prune", str(now))
        if any(removed.values()):
            action_log("prune", **{k: v for k, v in removed.items() if v})


def globus_trouble(ctx: Context, message: str) -> None:
    j = ctx.journal
    if not j.get_meta("globus_down_since"):
        j.set_meta("globus_down_since", str(ctx.clock()))
        action_log(Kind.GLOBUS_UNREACHABLE, reason=message)


def globus_ok(ctx: Context) -> None:
    j = ctx.journal
    if j.get_meta("globus_down_since"):
        j.set_meta("globus_down_since", "")
        action_log("globus_reachable")

