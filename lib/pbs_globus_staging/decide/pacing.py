"""Poll pacing: how soon to ask Globus again, and which tasks in one call.

Stdlib only, Python 3.6+, free of I/O.
"""
from typing import Dict, Iterable, List

from .facts import T_INACTIVE


def near_end(t: object) -> bool:
    """A task that, at its rate so far, ends within ten seconds."""
    files, done = t.files or 0, t.files_transferred or 0
    rate = t.bytes_per_second or 0.0
    if not files or not done or done >= files or rate <= 0:
        return False
    left = (files - done) * (t.bytes_transferred or 0) / done / rate
    return left < 10.0


def poll_delay(transfers: Iterable[object], *, now: float, fast: float, normal: float,
               pending: bool) -> float:
    """Seconds until the next Globus poll: ``fast`` while a task may end any
    moment -- just submitted, or near its expected end from its rate so far --
    else ``normal``, and slower still for tasks waiting on a person (INACTIVE).
    ``transfers``: the ACTIVE and INACTIVE rows; ``pending``: requests wait."""
    best = float("inf")
    for t in transfers:
        if not t.task_id:
            continue
        if t.status == T_INACTIVE:
            best = min(best, max(normal, 30.0))
            continue
        age = now - (t.submitted or now)
        if age < 30 or near_end(t):
            return fast
        best = min(best, normal)
    if pending:
        best = min(best, normal)
    return best


def poll_due(*, served: bool, now: float, last_poll: float, fast: float) -> bool:
    """A serving agent asks Globus at most once per ``poll_fast`` whatever
    wakes it (full passes come with every wake-up)."""
    return not served or now - last_poll >= fast - 0.05


def by_identity(transfers: Iterable[object]) -> Dict[str, List[object]]:
    """Submitted tasks grouped for one batched task_list per identity."""
    out: Dict[str, List[object]] = {}
    for t in transfers:
        if t.task_id:
            out.setdefault(t.identity, []).append(t)
    return out
