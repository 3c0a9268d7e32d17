"""What the admin actions on one job share: ``retry``, ``cancel``, ``adopt``,
``release`` (each in its own module).

Root only.  Each goes through the journal and PBS's own commands (never the
``pbs`` module), is recorded as a journal event naming who did it, and leaves
the rest to the agent's next cycle -- which is also what repairs a crash in
the middle of one of them.  The order of the two writes is chosen so that a
crash between them falls back to the old, safe state:

- ``retry``/``adopt``: PBS first (hold ``s`` on, state word back), then the
  journal.  Killed in between, the journal still says "failed" and the agent
  puts the job back to stagein-failed: the job never runs without its data.
- ``release``: the journal first (the request is marked done by the admin),
  then PBS.  Killed in between, the agent sees a succeeded request and
  finishes the release itself -- what the admin asked for.
- ``cancel``: Globus first (the task is canceled), then the journal.  Killed
  in between, the agent polls the task, finds it canceled and fails the
  request the ordinary way.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..decide import JobView
from ..events import History
from ..states import LIVE_TRANSFER, TRANSFER_STATUS_OF, Direction, Request
from ..services import (EXIT_BAD, EXIT_NOTFOUND, EXIT_OK, CliExit, acting_admin, emit,
                        load_site, make_backend, open_journal, require_root)
from .show import resolve_job_id

LIVE = LIVE_TRANSFER
OUTCOME_STATUS = TRANSFER_STATUS_OF


# ------------------------------------------------------------------ plumbing
class Ctx:
    def __init__(self, args: Any) -> None:
        from ..pbsctl import PbsCommands
        self.args = args
        self.cfg = load_site(args.config)
        self.journal = open_journal(self.cfg)
        self.pbs = PbsCommands(pbs_exec=self.cfg.pbs.exec)
        self.by = acting_admin()
        self._backend = None

    def backend(self) -> Any:
        if self._backend is None:
            self._backend = make_backend(self.cfg)
        return self._backend

    def close(self) -> None:
        self.journal.close()
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()

    def job_id(self) -> str:
        job_id = resolve_job_id(self.journal, self.args.jobid)
        if job_id is None:
            raise CliExit(EXIT_NOTFOUND, f"no staging record for job {self.args.jobid} "
                                         "(the agent records a job on its first cycle)")
        return job_id

    def requests(self, job_id: str) -> Dict[str, Any]:
        return {r.direction: r for r in self.journal.requests_for_job(job_id)}

    def live_job(self, job_id: str, what: str) -> JobView:
        """The job as PBS has it now; refused when it has left PBS or already ran."""
        attrs = self.pbs.job(job_id)
        if attrs is None:
            raise CliExit(EXIT_BAD, f"cannot {what} job {job_id}: PBS no longer knows it "
                                    "(the user must submit it again)")
        view = JobView.from_qstat(job_id, attrs)
        if view.finished:
            raise CliExit(EXIT_BAD, f"cannot {what} job {job_id}: it has finished "
                                    f"(state {view.state}); the user must submit it again")
        if view.started:
            raise CliExit(EXIT_BAD, f"cannot {what} job {job_id}: it is already running "
                                    f"(state {view.state})")
        return view

    def done(self, data: Dict[str, Any], text: str) -> int:
        data = {"ok": True, "by": self.by, **data}
        emit(data, as_json=self.args.json, text=text)
        return EXIT_OK


def run_admin(args: Any, what: str, body) -> int:
    require_root(what)
    from ..pbsctl import JobGone
    ctx = Ctx(args)
    try:
        return body(ctx)
    except JobGone as exc:
        raise CliExit(EXIT_NOTFOUND, f"{what}: {exc}") from None
    finally:
        ctx.close()


def drop_items(journal: Any, request_id: int, transfer_ids: Optional[Sequence[int]] = None
                ) -> List[int]:
    """Unlink a request from finished (or shared) transfers, so a fresh
    transfer decides its outcome; returns the transfers it was unlinked from.

    The transfer rows stay (with their task ids and messages) and the caller
    writes a ``transfer_replaced`` event naming each, which is how ``show``
    keeps them in the job's history.  The rows are deleted rather than
    pointed at NULL: the agent reads each item's request id when it settles
    a transfer.  Must run inside the caller's transaction.
    """
    fn = getattr(journal, "drop_request_items", None)
    if fn is not None:                      # the journal's own method, once it has one
        return list(fn(request_id, transfer_ids=transfer_ids))
    items = journal.items_for_request(request_id)
    tids = sorted({i.transfer_id for i in items
                   if transfer_ids is None or i.transfer_id in transfer_ids})
    for tid in tids:
        journal._exec("DELETE FROM transfer_items WHERE request_id = ? AND transfer_id = ?",
                      (request_id, tid))
    return tids


def replaced_events(ctx: Ctx, job_id: str, req: Any, tids: Sequence[int], why: str,
                     now: float) -> None:
    for tid in tids:
        t = ctx.journal.get_transfer(tid)
        ctx.journal.add_event(job_id, History.TRANSFER_REPLACED,
                              f"Globus task {t.task_id or '(unsubmitted)'} ({t.status}) no "
                              f"longer counts for this job: {why}",
                              request_id=req.request_id, transfer_id=tid, at=now,
                              data={"task_id": t.task_id, "by": ctx.by})


def restore_stageout(ctx: Ctx, job_id: str, reqs: Dict[str, Any], now: float) -> bool:
    """A stage-out skipped because the stage-in failed is wanted again once
    the job may run after all."""
    so = reqs.get(Direction.OUT)
    if so is None or so.state != Request.SKIPPED:
        return False
    ctx.journal.set_request_state(so.request_id, Request.WAITING_EXIT, now=now)
    ctx.journal.add_event(job_id, History.STAGEOUT_RESTORED,
                          "stage-out will run after the job ends (stage-in retried by admin)",
                          request_id=so.request_id, at=now, data={"by": ctx.by})
    return True


def live_transfers(ctx: Ctx, req: Any) -> List[Any]:
    return [t for t in ctx.journal.transfers_for_request(req.request_id) if t.status in LIVE]
