"""What a task's end means, from Globus's report to the job: fail fast on a
fault that persists, the site's default deadline, each item's outcome, the
request's verdict (with the stage-out retry and skip rules), and the job
actions of a stage-in's standing (hold, release, delete, comment).

"A stage-in failed" is decided here, start to end: ``report_update`` (the
task failed, or a fault persisted past the window) -> ``item_outcomes`` ->
``request_verdict`` (FAILED; the stage-out is skipped) -> ``stagein_actions``
(held with the reason, or deleted per ``onfail``; never released).

Stdlib only, Python 3.6+, free of I/O.  ``t`` is a journal transfer row,
``report`` a ``backend.TaskReport``: plain values, read by attribute.
"""
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .. import events, states
from ..units import duration_text
from ..events import History, Kind
from ..states import Direction, Item
from .._py36 import dataclasses
from .facts import (ACTIVE, FAILED, FINAL, O_DONE, O_FATAL, O_RUNNING, O_WAITING, PENDING,
                    SUBSTATE_DEPNHOLD, SUCCEEDED, T_ACTIVE, T_CANCELED, T_FAILED,
                    T_INACTIVE, T_SUCCEEDED, USER_ACTION, Action, JobView, RequestStatus,
                    short, status_for)

# fault_lookup answers
FAULT_NONE, FAULT_KEEP, FAULT_ASK = "none", "keep", "ask"


def fault_expired(*, fault_since: Optional[float], now: float, window: float) -> bool:
    """A fatal-kind fault (FILE_NOT_FOUND, PERMISSION_DENIED, ...) that has
    persisted for the whole window: fail fast instead of retrying forever."""
    return fault_since is not None and now - fault_since >= window


def moved(t: object, report: object) -> bool:
    """The task moved bytes or files since the last poll."""
    return report.bytes_transferred != (t.bytes_transferred or 0) or \
        report.files_transferred != (t.files_transferred or 0)


def fault_lookup(t: object, report: object, *, now: float, window: float) -> str:
    """Whether a RUNNING task's faults need a look at its event list.

    ``FAULT_NONE``: no fatal-kind fault (none reported, or it moves: whatever
    failed before is being overcome); ``FAULT_KEEP``: a fault already being
    timed and nothing new -- keep (t.fatal_code, t.message) until the window
    ends; ``FAULT_ASK``: ask Globus (backend.fatal_fault).  nice_status shows
    an error only for nice_status_expires_in and may read OK between retries,
    so it only tells when to look."""
    if not report.faults and not report.fatal_code:
        return FAULT_NONE
    if moved(t, report):
        return FAULT_NONE
    if report.faults == (t.faults or 0) and not report.fatal_code and not t.fault_since:
        return FAULT_NONE
    if t.fault_since and report.faults == (t.faults or 0) and not fault_expired(
            fault_since=t.fault_since, now=now, window=window):
        return FAULT_KEEP
    return FAULT_ASK


def fault_unknown(t: object) -> Optional[Tuple[str, str]]:
    """Globus could not say this time: keep timing what was seen, start nothing new."""
    return (t.fatal_code, t.message or t.fatal_code) if t.fault_since else None


def past_site_deadline(t: object, *, limit: object, now: float) -> Optional[str]:
    """The message to fail ``t`` with once it ran past the site's
    ``default_deadline`` (tasks with the user's own deadline: Globus's)."""
    if t.deadline or not t.submitted or t.grafted:
        return None
    try:
        limit = float(limit)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if limit <= 0 or now - t.submitted < limit:
        return None
    return ("DEADLINE: not finished within the default deadline of {} "
            "(agent.default_deadline); Globus task {} canceled; ask for more time "
            "with +deadline=".format(duration_text(limit), t.task_id))


def needs_explain(report: object) -> bool:
    """A FAILED task whose report does not say why: ask Globus to explain."""
    return report.outcome == O_FATAL and (not report.message or
                                          report.message == report.fatal_code)


@dataclasses.dataclass(frozen=True)
class TransferUpdate:
    """What to do with one transfer row after a poll: the fields to store,
    whether to cancel its task first, and the action line to log."""

    status: str
    fields: Dict[str, object]
    cancel: bool = False
    log: Optional[Tuple[str, Tuple[Tuple[str, object], ...]]] = None
    changed: bool = False
    needs_user: bool = False


def report_update(t: object, report: object, *, late: Optional[str],
                  fault: Optional[Tuple[str, str]], explained: str, now: float,
                  window: float) -> TransferUpdate:
    """Store what Globus said; fail fast on a fault that persists.

    ``late``: past_site_deadline's message (RUNNING or waiting tasks only);
    ``fault``: (code, text) of a fatal-kind fault still being hit, None when
    none (see fault_lookup); ``explained``: Globus's explanation of a FAILED
    task whose report says nothing (needs_explain), else ""."""
    outcome = report.outcome
    status = status_for(outcome, t.status)
    fields = dict(
        nice_status=report.nice_status, files=report.files,
        files_transferred=report.files_transferred, files_skipped=report.files_skipped,
        bytes_transferred=report.bytes_transferred, bytes_per_second=report.bytes_per_second,
        faults=report.faults, last_polled=now)  # type: Dict[str, object]
    if moved(t, report):
        fields["last_progress"] = now
    cancel = False
    log = None
    if late:
        cancel = True
        status = T_FAILED
        fields.update(message=late, fatal_code="DEADLINE", completed=now)
        log = ("site_deadline", (("transfer", t.transfer_id), ("task", t.task_id)))
    elif fault is not None:
        code, text = fault
        since = t.fault_since or now
        fields["fault_since"] = since
        fields["fatal_code"] = code
        if fault_expired(fault_since=since, now=now, window=window):
            cancel = True
            status = T_FAILED
            fields.update(message=text, completed=now)
            log = ("fail_fast", (("transfer", t.transfer_id), ("task", t.task_id),
                                 ("code", code), ("after", "{:.0f}s".format(now - since))))
    elif outcome == O_RUNNING:
        fields["fault_since"] = None
        fields["fatal_code"] = None
    if outcome == O_FATAL:
        text = report.message
        if not text or text == report.fatal_code:
            text = explained or text
        fields.update(fatal_code=report.fatal_code,
                      message="{}: {}".format(report.fatal_code or "FAILED", text) if text else
                      (report.fatal_code or "FAILED"), completed=now)
    if outcome == O_WAITING:
        fields.update(message=report.message, fatal_code=None)
    if outcome == O_DONE:
        fields.update(completed=now, fatal_code=None, fault_since=None)
    fields["status"] = status
    was = (t.status, t.files_transferred, t.bytes_transferred, t.nice_status)
    changed = was != (status, report.files_transferred, report.bytes_transferred,
                      report.nice_status) or status != t.status
    return TransferUpdate(status=status, fields=fields, cancel=cancel, log=log,
                          changed=changed, needs_user=status == T_INACTIVE)


# Why a stage-out is skipped (the job's history says it in these words).
SKIP_STAGEIN_FAILED = "the stage-in failed, so the job did not run"
SKIP_STAGEIN_NOT_DONE = "the stage-in did not succeed"
SKIP_LEFT_BEFORE_RUN = "the job left PBS before it ran"
SKIP_UNKNOWN_JOB = "the job is no longer known to PBS and never reported an exit status"
SKIP_DELETED_BEFORE_RUN = "the job was deleted before it ran"


def summarize(outcomes: Iterable[str]) -> Optional[bool]:
    """True when every item succeeded, False when any failed, None otherwise."""
    seen = list(outcomes)
    if not seen:
        return None
    if any(o == Item.FAILED for o in seen):
        return False
    if all(o == Item.SUCCEEDED for o in seen):
        return True
    return None


# ---------------------------------------------------------------- per-item outcomes
_SOURCE_ERROR_WORDS = {
    "FILE_NOT_FOUND": "no such file or directory",
    "PERMISSION_DENIED": "permission denied",
    "AMBIGUOUS_PATH": "ambiguous path",
}


def _norm_path(path: str) -> str:
    """Compare Globus paths in one form: ``/~/x`` and ``~/x`` alike, no
    doubled or trailing slashes."""
    p = path or ""
    if p.startswith("/~/") or p == "/~":
        p = p[1:]
    parts = [x for x in p.split("/") if x not in ("", ".")]
    return ("/" if p.startswith("/") else "") + "/".join(parts)


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def source_error_text(code: str, path: str) -> str:
    """The one wording of a source path Globus could not read, however the
    request was batched: the same missing file fails with the same words."""
    words = _SOURCE_ERROR_WORDS.get(code, code.lower().replace("_", " "))
    return f"{code}: {path} could not be read at the source ({words})"


def item_failure(*, source_path: str, destination_path: str, recursive: bool,
                 skipped: Sequence[Tuple[str, str, str]]) -> Optional[str]:
    """Why one item of a SUCCEEDED task did not arrive, or None when it did.

    ``skipped`` is the task's skipped errors as (source_path, destination_path,
    error_code).  A task that SUCCEEDED moved every path it did not list
    there (sync-skipped files were already in place; an empty directory has
    nothing to move), so an item arrived exactly when no skipped error lies
    at or, for a recursive item, under its path."""
    src, dst = _norm_path(source_path), _norm_path(destination_path)
    hits = []
    for s_path, d_path, code in skipped:
        s_norm, d_norm = _norm_path(s_path), _norm_path(d_path)
        if recursive:
            hit = _under(s_norm, src) or _under(d_norm, dst)
        else:
            hit = s_norm == src or d_norm == dst
        if hit:
            hits.append((s_path or d_path, code))
    if not hits:
        return None
    path, code = sorted(hits)[0]
    text = source_error_text(code, path)
    if len(hits) > 1:
        text += f"; {len(hits) - 1} more path(s) under {source_path} skipped"
    return text


def item_outcomes(*, status: str, grafted: bool, items: Sequence[object],
                  skipped: Optional[Sequence[Tuple[str, str, str]]],
                  message: str) -> List[Tuple[int, str, Optional[str]]]:
    """(item_id, outcome, message) for the still-pending items of a finished
    transfer.  SUCCEEDED: positive evidence only -- a SUCCEEDED task moved
    every path it does not list as skipped (``skipped``: its skipped errors,
    None when Globus could not say: then nothing is decided); a grafted task
    (``task=<uuid>``) is vouched for by its owner.  FAILED/CANCELED: every
    pending item failed with the transfer's message."""
    pending = [i for i in items if i.outcome == Item.PENDING]
    if status == T_SUCCEEDED:
        if grafted:
            return [(i.item_id, Item.SUCCEEDED, None) for i in pending]
        if not pending or skipped is None:
            return []
        out = []
        for i in pending:
            why = item_failure(source_path=i.source_path, destination_path=i.destination_path,
                               recursive=bool(i.recursive), skipped=skipped)
            out.append((i.item_id, Item.SUCCEEDED, None) if why is None else
                       (i.item_id, Item.FAILED, why))
        return out
    if status in (T_FAILED, T_CANCELED):
        return [(i.item_id, Item.FAILED, message) for i in pending]
    return []


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A request's new standing.  ``retry_in``: a failed stage-out goes back
    to PENDING after this many seconds (attempt ``attempt`` of ``retries``)."""

    state: str
    message: str = ""
    action: str = ""
    word: str = ""                  # succeeded | failed | user_action | resumed | active
    event_kind: str = ""
    retry_in: Optional[float] = None
    attempt: int = 0
    retries: int = 0
    skip_stageout: bool = False     # a failed stage-in: neither job nor stage-out runs
    alert: bool = False


def request_verdict(req: object, items: Sequence[object], transfers: Sequence[object], *,
                    retries: int, retry_delay: float) -> Optional[Verdict]:
    """What a request's items and transfers say about it now.

    None when nothing is known yet (or the request is final); a Verdict whose
    state is the request's own when nothing changed.  A failed stage-out is
    retried with a fresh transfer after a growing wait (``retry_delay`` * 2 **
    attempts), ``retries`` times -- never silently dropped; an
    administrator's cancel is a decision, not a fault, and is not retried."""
    if req.state in FINAL:
        return None
    verdict = summarize(i.outcome for i in items)
    if verdict is True:
        new, msg, action = SUCCEEDED, "", ""
    elif verdict is False:
        failed = [i for i in items if i.outcome == Item.FAILED]
        new, msg, action = FAILED, (failed[0].message or "transfer failed"), ""
    elif any(t.status == T_INACTIVE for t in transfers):
        t = next(t for t in transfers if t.status == T_INACTIVE)
        new, msg = USER_ACTION, t.message or "Globus needs you to log in again"
        action = req.action or "globus-staging login"
    elif any(t.status in (T_ACTIVE,) and t.task_id for t in transfers):
        new, msg, action = ACTIVE, "", ""
    else:
        return None
    if new == req.state:
        return Verdict(state=new, message=msg, action=action)
    attempts = req.attempts or 0
    by_admin = any(t.fatal_code == "CANCELED_BY_ADMIN" for t in transfers)
    if new == FAILED and req.direction == Direction.OUT and attempts < retries and not by_admin:
        return Verdict(state=PENDING, message=msg, word="retry", event_kind=History.STAGEOUT_RETRY,
                       retry_in=retry_delay * 2 ** attempts, attempt=attempts + 1,
                       retries=retries)
    word = {SUCCEEDED: "succeeded", FAILED: "failed", USER_ACTION: str(Kind.USER_ACTION),
            ACTIVE: "resumed" if req.state == USER_ACTION else "active"}[new]
    by_direction = {SUCCEEDED: events.SUCCEEDED, FAILED: events.FAILED,
                    ACTIVE: events.RESUMED if req.state == USER_ACTION else events.ACTIVE}
    event_kind = Kind.USER_ACTION if new == USER_ACTION else by_direction[new][req.direction]
    return Verdict(state=new, message=msg, action=action, word=word, event_kind=event_kind,
                   skip_stageout=new == FAILED and req.direction == Direction.IN,
                   alert=new not in (ACTIVE, USER_ACTION))


@dataclasses.dataclass(frozen=True)
class StageoutStart:
    """Start the stage-out (``start``) or skip it, saying ``why``."""

    start: bool
    why: str = ""


def stageout_start(*, exit_status: int, stagein_state: Optional[str],
                   when: str) -> StageoutStart:
    """A finished job's stage-out (default only after exit status 0, as the
    seed's afterok): skipped when the job's stage-in did not succeed or the
    exit status does not match ``when=``.  ``stagein_state``: None for a job
    without a stage-in."""
    if stagein_state is not None and stagein_state != SUCCEEDED:
        return StageoutStart(False, SKIP_STAGEIN_NOT_DONE)
    if not stageout_wanted(when, exit_status):
        return StageoutStart(False, "exit status {} does not match when={}".format(
            exit_status, when))
    return StageoutStart(True)


def stagein_actions(job: JobView, req: RequestStatus, *, failure_policy: str,
                    cleanup: Optional[str] = None, cleanup_done: bool = False) -> List[Action]:
    """What to do with a job whose stage-in is in ``req.state``.

    The state word goes to PBS *before* the hold is released, so a crash in
    between leaves a job that the next cycle releases -- never one that runs
    without its data (the runjob guard reads that word).
    """
    acts: List[Action] = []
    jid = job.job_id

    def want_state(word: str) -> None:
        if job.stage_state != word:
            acts.append(Action("set_state", jid, word, ",".join(req.tasks) if req.tasks else ""))

    def want_comment(text: str) -> None:
        if text and job.comment != text:
            acts.append(Action("comment", jid, text))

    if job.started or job.finished:
        return acts
    if req.state == SUCCEEDED:
        want_state(states.Stage.STAGED_IN)
        # Substate 22: PBS itself holds the job ('s') for an unmet dependency
        # and lifts that hold when the dependency is met -- not ours to release.
        if "s" in job.holds and job.substate != SUBSTATE_DEPNHOLD:
            acts.append(Action("release", jid, "s"))
        want_comment("staging: stage-in done" + (f" (task {short(req.tasks[-1])})" if req.tasks else ""))
    elif req.state == FAILED:
        want_state(states.Stage.STAGEIN_FAILED)
        text = "staging: stage-in FAILED: " + (req.message or "see globus-staging show " + jid)
        if cleanup and not cleanup_done:
            acts.append(Action("submit_cleanup", jid, cleanup, req.message))
        policy = "delete" if cleanup else failure_policy
        if policy == "delete":
            # Said before the qdel: PBS keeps the last comment in the job's
            # history and appends "and terminated" to it.
            want_comment("staging: stage-in FAILED (job deleted): "
                         + (req.message or "see globus-staging show " + jid))
            acts.append(Action("delete", jid, reason=req.message))
        else:
            if "s" not in job.holds:
                acts.append(Action("hold", jid, "s"))
            want_comment(text)
    elif req.state == USER_ACTION:
        want_state(states.Stage.USER_ACTION)
        # The command first: PBS comments are cut at 200 characters.
        what = req.message.split(";")[0] if req.message else "Globus needs you"
        todo = f"run {req.action}: " if req.action else ""
        want_comment(f"staging: waiting for you: {todo}{what}")
    elif req.state == ACTIVE:
        want_state(states.Stage.STAGING_IN)
        text = "staging: in " + (req.progress or "started")
        if job.comment != text:
            # Progress is the one comment that changes every poll: the agent
            # rations these so thousands of staging jobs do not flood PBS.
            acts.append(Action("progress", jid, text))
    else:  # pending / queued
        want_comment("staging: stage-in queued" + (f" ({req.message})" if req.message else ""))
    return acts


def stageout_wanted(when: str, exit_status: Optional[int]) -> Optional[bool]:
    """``None`` while the exit status is unknown."""
    if exit_status is None:
        return None
    if when == "always":
        return True
    if when == "notok":
        return exit_status != 0
    return exit_status == 0
