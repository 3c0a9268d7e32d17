"""Condition decisions: the alerts raised for what persists (slow tasks, a
failing agent, Globus down) and the journal's housekeeping schedule.

Stdlib only, Python 3.6+, free of I/O.
"""
from typing import Iterable, List, Optional, Sequence, Tuple

from .facts import FINAL

DAY = 86400.0


def slow_since(t: object, *, now: float, slow_after: float) -> Optional[float]:
    """When an ACTIVE transfer last moved, if that is ``slow_after`` or more ago."""
    since = t.last_progress or t.submitted
    if since and now - since >= slow_after:
        return since
    return None


def slow_message(t: object, *, now: float, since: float) -> str:
    return "no progress for {:.0f} minutes ({})".format((now - since) / 60,
                                                         t.nice_status or "no status")


def slow_alerts(transfers: Iterable[object], requests_of, *, now: float,
                slow_after: float) -> List[Tuple[object, object, str]]:
    """(transfer, request, message) for each unfinished request waiting on an
    ACTIVE transfer that has not moved for ``slow_after``.  ``requests_of``:
    transfer -> its requests (None for a vanished one)."""
    out = []
    for t in transfers:
        since = slow_since(t, now=now, slow_after=slow_after)
        if since is None:
            continue
        for req in requests_of(t):
            if req is None or req.state in FINAL:
                continue
            out.append((t, req, slow_message(t, now=now, since=since)))
    return out


def agent_unhealthy(*, ok: bool, recent: Sequence[object]) -> bool:
    """Three failed runs in a row, this one included: ``recent`` are the last
    finished cycles before this one's end is recorded (newest first)."""
    if ok:
        return False
    return len(recent) >= 2 and not any(c.ok for c in recent[:2])


def unhealthy_message(errors: Sequence[str]) -> str:
    return "the staging agent's last runs failed: " + "; ".join(errors)[:300]


def prune_due(*, last: float, now: float) -> bool:
    """History is pruned once a day."""
    return now - last >= DAY
