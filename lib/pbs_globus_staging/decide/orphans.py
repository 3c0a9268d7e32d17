"""Orphan decisions: a job that left PBS while its stage-in was under way
(deleted, or the queue was lost), and the transfers nobody waits on any more.

Stdlib only, Python 3.6+, free of I/O.
"""
from typing import Optional, Sequence, Tuple

from .. import states
from .._py36 import dataclasses
from .facts import FINAL, PENDING, QUEUED
from .facts import LIVE_TRANSFER

# Stage-ins whose job may have left PBS (requests_of_unseen_jobs).
UNFINISHED = states.LIVE_REQUEST

KEEP, RELEASE, CANCEL = "keep", "release", "cancel"


def job_left(*, in_view: bool, has_obit: bool, pbs_state: Optional[str],
             pbs_known: bool) -> bool:
    """The job left PBS before it ran: not in the last PBS read, no jobobit
    (it never started), and PBS itself does not know it or has it finished
    (F/X)."""
    if in_view or has_obit:
        return False
    return not pbs_known or pbs_state in ("F", "X")


@dataclasses.dataclass(frozen=True)
class Vanished:
    """What to do about a stage-in whose job left PBS: keep its live
    transfers ``orphan`` for a grace period (a resubmission may adopt them:
    scenario D), cancel the request if nothing was submitted yet, skip the
    job's stage-out."""

    orphan: Tuple[int, ...]
    cancel_request: bool
    skip_stageout: bool


def vanished(*, request_state: str, transfers: Sequence[object],
             stageout_state: Optional[str]) -> Vanished:
    orphan = tuple(dict.fromkeys(t.transfer_id for t in transfers
                                 if t.status in LIVE_TRANSFER and not t.orphaned_since))
    return Vanished(orphan=orphan, cancel_request=request_state in (PENDING, QUEUED),
                    skip_stageout=stageout_state is not None and stageout_state not in FINAL)


def orphan_due(t: object, *, now: float, grace: float) -> bool:
    """An orphaned transfer whose grace period ran out."""
    return bool(t.orphaned_since) and now - t.orphaned_since >= grace


def orphan_fate(*, someone_waits: bool) -> str:
    """RELEASE when a live request still waits on the transfer (a resubmission
    adopted it), else CANCEL."""
    return RELEASE if someone_waits else CANCEL


def request_waits(req: object, *, job_gone: bool) -> bool:
    """A request still waiting on a transfer: not final, its job not gone."""
    return req.state not in FINAL and not job_gone


def may_cancel(t: object) -> bool:
    """Only our own tasks are ours to cancel: not a grafted task, not one
    started outside PBS (foreign)."""
    return bool(t.task_id) and not t.grafted and not (t.options or {}).get("foreign")
