"""Submit decisions: which waiting requests get planned now (batch window,
stage-ahead, free slots), how their items group into Globus tasks, and the
label, options and API-rate rules of a submission.

Stdlib only, Python 3.6+, free of I/O.
"""
import hashlib
import json
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .._py36 import dataclasses
from ..states import Direction, Transfer

# A repeated stage-in is synced, not adopted: files whose checksums match are
# skipped (Globus sync_level "checksum": transfer only where they differ).
RESYNC_LEVEL = "checksum"

# Why a waiting request is not planned this pass (plan_wait).
WAIT_WINDOW = "batch-window"   # let a sweep's compatible requests arrive and share a task
WAIT_SLOT = "no-slot"          # its identity has no free Globus task slot
WAIT_AHEAD = "stage-ahead"     # not near the front of its queue yet: keep scratch free
# Waits that count as work left (the loop keeps polling for them).
COUNTED_WAITS = frozenset({WAIT_WINDOW, WAIT_SLOT})


def could_run_next(job_state: str, hold_types: str) -> bool:
    """A queued job that PBS could start next (a user/operator hold cannot)."""
    if job_state not in ("Q", "H"):
        return False
    return (hold_types or "n").replace("n", "") in ("", "s")


def queue_ranks(waiting: Mapping[str, Iterable[Tuple[int, float, str]]]) -> Dict[str, int]:
    """Just-in-time staging: each job's place among the jobs of its queue that
    could run next, by PBS priority then queue time.  ``waiting``: queue ->
    (-priority, qtime, job_id)."""
    ranks: Dict[str, int] = {}
    for jobs in waiting.values():
        for rank, (_p, _q, job_id) in enumerate(sorted(jobs)):
            ranks[job_id] = rank
    return ranks


def plan_order(*, priority: int, qtime: float, request_id: int) -> Tuple[int, float, int]:
    """Waiting requests are planned in PBS priority order, then queue time."""
    return (-priority, qtime, request_id)


def plan_wait(*, direction: str, queued: float, now: float, window: float, capacity: int,
              graft: bool, rank: Optional[int], ahead: int) -> Optional[str]:
    """Why a waiting request is not planned now (``WAIT_*``), or None.

    ``queued``: when the job was queued; ``capacity``: items its identity's
    free slots can still take this pass; ``rank``: its place in its queue
    (None: not among the jobs that could run next); ``ahead``: the site's
    stage_ahead (0: stage every job at once)."""
    if window and queued > now - window:
        return WAIT_WINDOW
    if capacity <= 0 and not graft:
        return WAIT_SLOT
    if ahead and direction == Direction.IN and (ahead if rank is None else rank) >= ahead:
        return WAIT_AHEAD
    return None


def holds_slot(*, status: str, nice_status: Optional[str], backing_off: bool,
               awaits_user: bool) -> bool:
    """A transfer holds one of its identity's Globus task slots: ACTIVE and not
    paused, or not yet submitted and about to be (not backing off, not refused
    until its owner logs in).  An INACTIVE task holds none."""
    if status == Transfer.NEW:
        return not backing_off and not awaits_user
    return status == Transfer.ACTIVE and (nice_status or "").upper() != "PAUSED"


def options_key(options: object) -> str:
    """The Globus task options a request asks for, as a grouping key: only
    requests with equal keys share a task."""
    if options is None:
        return "{}"
    fields: Dict[str, object] = {}
    for name in ("sync_level", "verify_checksum"):
        value = getattr(options, name, None)
        if value is not None:
            fields[name] = value
    deadline = getattr(options, "deadline", None)
    if deadline is not None:
        fields["deadline"] = deadline.form
    return json.dumps(fields, sort_keys=True)


def resync_key(opts_key: str, request_id: int) -> str:
    """The same data went to the same place before, for a job that may have
    used, changed or removed them: copy again, but let Globus skip every file
    whose checksum already matches -- a skipped file is then positive evidence
    that it is in place.  Alone in its task (the key names the request): a
    batch's per-item outcomes come from the files moved, and a file skipped by
    the sync is not among them."""
    fields = json.loads(opts_key)
    fields.setdefault("sync_level", RESYNC_LEVEL)
    fields["resync"] = request_id
    return json.dumps(fields, sort_keys=True)


def within_rate(*, used: int, rate: float, elapsed: float) -> bool:
    """Keep an identity's Globus API calls within ``rate`` per second over the
    run (Globus allows about 20/s per user; leave room for the user's own
    tools): ``used`` calls so far, ``elapsed`` seconds since the run began."""
    allowed = rate * max(1.0, elapsed) + rate
    return used + 2 <= allowed


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


def slots_free(*, holding: int, live: int, limit: int, pending_limit: int) -> int:
    """New Globus tasks an identity may start now.

    ``holding``: its tasks that hold (or are about to take) a Globus slot --
    ACTIVE and not paused, or not yet submitted; INACTIVE and paused tasks
    hold none (task_behavior, Queuing).  ``live``: all its unfinished tasks,
    which must stay below Globus's limit of pending tasks per user."""
    by_slots = 10 ** 9 if limit <= 0 else limit - holding
    by_pending = 10 ** 9 if pending_limit <= 0 else pending_limit - live
    return max(0, min(by_slots, by_pending))


def content_tag(batch: Batch) -> str:
    """``[c:<hash of the task's items>]`` in the label: lets a 409 Conflict
    ("identical paths") be traced to the task already moving the same data."""
    h = hashlib.sha256()
    h.update("{}\0{}\0".format(batch.source_collection, batch.destination_collection).encode())
    for src, dst, rec in sorted({(i.source_path, i.destination_path, i.recursive)
                                 for i in batch.items}):
        h.update("{}\0{}\0{}\0".format(src, dst, int(rec)).encode())
    return "[c:{}]".format(h.hexdigest()[:12])


def task_label(batch: Batch, direction: str) -> str:
    """A task's label at Globus (at most 128 characters)."""
    jobs = sorted({it.job_id for it in batch.items})
    tag = content_tag(batch)
    if len(jobs) == 1:
        label = "PBS {} stage-{} {}".format(jobs[0], direction, tag)
    else:
        label = "PBS stage-{} for {} jobs {}".format(direction, len(jobs), tag)
    return label[:128]


def task_options(options_key_: str) -> Dict[str, object]:
    """A task's options: always skip_source_errors -- one job's unreadable file
    must not stall the others' task, and a missing file fails the same way, in
    the same words, whether its request was batched or alone."""
    options = json.loads(options_key_)
    options["skip_source_errors"] = True
    return options


def full_batches(batches: Sequence[Batch], *, max_items: int) -> List[Batch]:
    """When a pass ran out of time before it saw every waiting request, only
    full batches go: a group not seen whole would make a half-empty task."""
    return [b for b in batches if len(b.items) >= max_items]
