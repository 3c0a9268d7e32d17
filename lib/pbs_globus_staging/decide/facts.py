"""The plain values decisions read: what PBS says about a job (``JobView``),
the request and transfer words of the journal, a request's standing
(``RequestStatus``) and the job actions decisions return (``Action``).

Stdlib only, Python 3.6+, free of I/O.
"""
import functools
import time
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from .. import states, units
from .._py36 import dataclasses
from ..states import Outcome, Request, Transfer

# The words are the vocabulary's (states.py); these names are the same objects.
# Request states kept in the journal (one per job and direction).
WAITING_EXIT = Request.WAITING_EXIT
PENDING = Request.PENDING
QUEUED = Request.QUEUED
ACTIVE = Request.ACTIVE
USER_ACTION = Request.USER_ACTION
SUCCEEDED = Request.SUCCEEDED
FAILED = Request.FAILED
SKIPPED = Request.SKIPPED
CANCELED = Request.CANCELED
FINAL = states.FINAL_REQUEST

# Transfer rows (journal) by Globus status.
T_NEW, T_ACTIVE, T_INACTIVE = Transfer.NEW, Transfer.ACTIVE, Transfer.INACTIVE
T_SUCCEEDED, T_FAILED, T_CANCELED = Transfer.SUCCEEDED, Transfer.FAILED, Transfer.CANCELED
LIVE_TRANSFER = states.LIVE_TRANSFER

# What a backend report means (states.Outcome).
O_DONE, O_RUNNING, O_WAITING, O_FATAL = (Outcome.DONE, Outcome.RUNNING,
                                         Outcome.WAITING_FOR_USER, Outcome.FATAL)
_OUTCOME_STATUS = {O_DONE: T_SUCCEEDED, O_FATAL: T_FAILED, O_WAITING: T_INACTIVE,
                   O_RUNNING: T_ACTIVE}

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


def status_for(outcome: str, default: str = T_ACTIVE) -> str:
    """The transfer row's status for a backend outcome."""
    return _OUTCOME_STATUS.get(outcome, default)
