"""Pure staging decisions: (job state, transfer state, config, now) -> actions.

Stdlib only and free of I/O, so every scenario of the seed (success, failed
stage-in, expired credential, lost queue, graft) is a fast unit test.  The
agent gathers the inputs and applies the actions, each of which is idempotent,
so a crash between any two of them is repaired by the next cycle.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import states, units
from .states import FINAL_REQUEST, Request

# Request states kept in the journal (one per job and direction): the
# vocabulary is states.Request; these names are the same objects.
WAITING_EXIT = Request.WAITING_EXIT
PENDING = Request.PENDING
QUEUED = Request.QUEUED
ACTIVE = Request.ACTIVE
USER_ACTION = Request.USER_ACTION
SUCCEEDED = Request.SUCCEEDED
FAILED = Request.FAILED
SKIPPED = Request.SKIPPED
CANCELED = Request.CANCELED
FINAL = FINAL_REQUEST

SUBSTATE_DEPNHOLD = 22   # pbs.JOB_SUBSTATE_DEPNHOLD


@dataclasses.dataclass(frozen=True)
class JobView:
    """What PBS says about one job (from ``qstat -f -F json``)."""

    job_id: str
    owner: str
    state: str                    # qstat letter: Q H R E F B W ...
    holds: str = ""               # Hold_Types letters, "" for none
    stage_state: str = ""
    stagein: Optional[str] = None
    stageout: Optional[str] = None
    tasks: str = ""
    comment: str = ""
    exit_status: Optional[int] = None
    substate: int = 0
    queue: str = ""
    project: str = ""
    priority: int = 0
    qtime_text: str = ""          # parsed only when needed: strptime is costly at scale
    mail_points: str = ""
    mail_users: Tuple[str, ...] = ()
    is_array: bool = False

    @classmethod
    def from_qstat(cls, job_id: str, attrs: Mapping[str, object]) -> "JobView":
        res = attrs.get("Resource_List") or {}
        if not isinstance(res, Mapping):
            res = {}
        holds = str(attrs.get("Hold_Types") or "")
        exit_status = attrs.get("Exit_status")
        owner = str(attrs.get("euser") or str(attrs.get("Job_Owner") or "").split("@", 1)[0])
        users = tuple(u for u in str(attrs.get("Mail_Users") or "").split(",") if u)
        return cls(
            job_id=job_id, owner=owner, state=str(attrs.get("job_state") or ""),
            holds="" if holds == "n" else holds,
            stage_state=str(res.get(states.RES_STATE) or ""),
            stagein=_opt_str(res.get(states.RES_STAGEIN)),
            stageout=_opt_str(res.get(states.RES_STAGEOUT)),
            tasks=str(res.get(states.RES_TASKS) or ""),
            comment=str(attrs.get("comment") or ""),
            exit_status=int(exit_status) if exit_status not in (None, "") else None,  # type: ignore[arg-type]
            substate=int(attrs.get("substate") or 0),  # type: ignore[arg-type]
            queue=str(attrs.get("queue") or ""),
            project=str(attrs.get("project") or ""),
            priority=int(attrs.get("Priority") or 0),  # type: ignore[arg-type]
            qtime_text=str(attrs.get("qtime") or ""),
            mail_points=str(attrs.get("Mail_Points") or ""),
            mail_users=users,
            is_array=str(attrs.get("array") or "").lower() == "true",
        )

    @property
    def qtime(self) -> float:
        return parse_pbs_time(self.qtime_text)

    @property
    def finished(self) -> bool:
        return self.state in ("F", "X")

    @property
    def started(self) -> bool:
        return self.state in ("R", "E", "F", "X", "B")


def _opt_str(value: object) -> Optional[str]:
    return None if value in (None, "") else str(value)


_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_pbs_time(value: object) -> float:
    """PBS prints times as ``Sat Nov 21 23:09:43 2026`` (local time) in JSON."""
    if value in (None, ""):
        return 0.0
    if isinstance(value, (int, float)):
        return float(value)
    return _parse_pbs_text(str(value))


@functools.lru_cache(maxsize=8192)
def _parse_pbs_text(text: str) -> float:
    try:
        _wday, mon, day, hms, year = text.split()
        hour, minute, sec = hms.split(":")
        return time.mktime((int(year), _MONTHS[mon], int(day), int(hour), int(minute),
                            int(sec), 0, 0, -1))
    except (ValueError, KeyError, OverflowError):
        try:
            return time.mktime(time.strptime(text, "%a %b %d %H:%M:%S %Y"))
        except ValueError:
            return 0.0


@dataclasses.dataclass(frozen=True)
class Action:
    """One change to a job, applied through PBS commands in list order."""

    kind: str   # set_state | release | hold | comment | progress | delete | submit_cleanup
    job_id: str
    value: str = ""
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class RequestStatus:
    """A request's standing, summarised over its transfers."""

    state: str
    message: str = ""
    action: str = ""            # what the user must run (user-action)
    tasks: Tuple[str, ...] = ()
    progress: str = ""


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
        want_state(states.STAGED_IN)
        # Substate 22: PBS itself holds the job ('s') for an unmet dependency
        # and lifts that hold when the dependency is met -- not ours to release.
        if "s" in job.holds and job.substate != SUBSTATE_DEPNHOLD:
            acts.append(Action("release", jid, "s"))
        want_comment("staging: stage-in done" + (f" (task {short(req.tasks[-1])})" if req.tasks else ""))
    elif req.state == FAILED:
        want_state(states.STAGEIN_FAILED)
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
        want_state(states.USER_ACTION)
        # The command first: PBS comments are cut at 200 characters.
        what = req.message.split(";")[0] if req.message else "Globus needs you"
        todo = f"run {req.action}: " if req.action else ""
        want_comment(f"staging: waiting for you: {todo}{what}")
    elif req.state == ACTIVE:
        want_state(states.STAGING_IN)
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


def short(task_id: str) -> str:
    return task_id[:8]


human_bytes = units.human_bytes  # one byte format: comments, mail, CLI views


def progress_text(*, files: int, files_done: int, bytes_done: int, rate: float,
                  nice_status: Optional[str], task_id: str) -> str:
    """Short enough for ``qstat`` and free of commas (PBS splits -W values on them)."""
    pct = f"{100 * files_done // files}% " if files else ""
    parts = [f"{pct}{files_done}/{files} files {human_bytes(bytes_done)}"]
    if rate:
        parts.append(f"at {human_bytes(rate)}/s")
    if nice_status and nice_status not in ("OK",):
        parts.append(f"({nice_status})")
    parts.append(f"task {short(task_id)}")
    return " ".join(parts)


def fault_expired(*, fault_since: Optional[float], now: float, window: float) -> bool:
    """A fatal-kind fault (FILE_NOT_FOUND, PERMISSION_DENIED, ...) that has
    persisted for the whole window: fail fast instead of retrying forever."""
    return fault_since is not None and now - fault_since >= window


@dataclasses.dataclass(frozen=True)
class PendingItem:
    request_id: int
    job_id: str
    priority: int
    qtime: float
    identity: str
    source_collection: str
    destination_collection: str
    options_key: str
    source_path: str
    destination_path: str
    recursive: bool


@dataclasses.dataclass(frozen=True)
class Batch:
    identity: str
    source_collection: str
    destination_collection: str
    options_key: str
    items: Tuple[PendingItem, ...]

    @property
    def request_ids(self) -> Tuple[int, ...]:
        seen: Dict[int, None] = {}
        for it in self.items:
            seen.setdefault(it.request_id, None)
        return tuple(seen)


def plan_batches(pending: Sequence[PendingItem], *, max_items: int,
                 free_slots: Mapping[str, int]) -> List[Batch]:
    """Group pending items into Globus tasks, fairly and within limits.

    Items are taken in PBS priority order (priority, then queue time), grouped
    by what one Globus task can carry (identity, both collections, options);
    a request's items are never split across the cut-off of a full batch, and
    no identity gets more new tasks than it has free slots.
    """
    order = sorted(pending, key=lambda p: (-p.priority, p.qtime, p.job_id, p.request_id))
    by_request: Dict[int, List[PendingItem]] = {}
    for item in order:
        by_request.setdefault(item.request_id, []).append(item)
    open_batches: Dict[Tuple[str, str, str, str], List[List[PendingItem]]] = {}
    used: Dict[str, int] = {}
    result_order: List[Tuple[Tuple[str, str, str, str], int]] = []
    for items in by_request.values():
        first = items[0]
        key = (first.identity, first.source_collection, first.destination_collection,
               first.options_key)
        groups = open_batches.setdefault(key, [])
        if groups and len(groups[-1]) + len(items) <= max_items:
            groups[-1].extend(items)
            continue
        if used.get(first.identity, 0) >= free_slots.get(first.identity, 0):
            continue  # waits for a slot; keeps its place by priority next cycle
        used[first.identity] = used.get(first.identity, 0) + 1
        groups.append(list(items))
        result_order.append((key, len(groups) - 1))
    return [Batch(identity=k[0], source_collection=k[1], destination_collection=k[2],
                  options_key=k[3], items=tuple(open_batches[k][i])) for k, i in result_order]


def summarize(outcomes: Iterable[str]) -> Optional[bool]:
    """True when every item succeeded, False when any failed, None otherwise."""
    seen = list(outcomes)
    if not seen:
        return None
    if any(o == "failed" for o in seen):
        return False
    if all(o == "succeeded" for o in seen):
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


def slots_free(*, holding: int, live: int, limit: int, pending_limit: int) -> int:
    """New Globus tasks an identity may start now.

    ``holding``: its tasks that hold (or are about to take) a Globus slot --
    ACTIVE and not paused, or not yet submitted; INACTIVE and paused tasks
    hold none (task_behavior, Queuing).  ``live``: all its unfinished tasks,
    which must stay below Globus's limit of pending tasks per user."""
    by_slots = 10 ** 9 if limit <= 0 else limit - holding
    by_pending = 10 ** 9 if pending_limit <= 0 else pending_limit - live
    return max(0, min(by_slots, by_pending))
