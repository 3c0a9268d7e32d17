"""What the agent saw: ``StagingEvent``, its kinds and their words."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from .. import events
from ..events import Kind

# --------------------------------------------------------------------------- events

# One list, in events.py: a rule `on:` anything else is refused at config load.
EVENT_KINDS = events.KINDS
SITE_KINDS = events.SITE_KINDS

# kind -> (what happened, in a subject line; what to do when the event has no action)
_KIND_TEXT = {
    Kind.STAGEIN_SUBMITTED: ("stage-in submitted",
                             "Nothing. The job stays held until its input data has arrived."),
    Kind.STAGEIN_SUCCEEDED: ("stage-in done",
                             "Nothing. The job has been released to the scheduler."),
    Kind.STAGEIN_FAILED: ("stage-in failed",
                          "Read Globus's message above and the job comment (qstat -f JOB). "
                          "Fix the cause (path, permissions, collection), then submit the job "
                          "again; delete the held job with qdel if it is still queued."),
    Kind.USER_ACTION: ("stage-in waiting for you",
                       "Globus needs you to log in again or to give consent. Run the command "
                       "shown in the job comment (qstat -f JOB); staging resumes by itself "
                       "afterwards."),
    Kind.SLOW: ("staging is not progressing",
                "Check the transfer on the Globus web page below. Nothing to do if the other "
                "side is just slow; qdel the job to give up."),
    Kind.STAGEOUT_SUBMITTED: ("stage-out submitted", "Nothing."),
    Kind.STAGEOUT_SUCCEEDED: ("stage-out done", "Nothing. Your results are at their destination."),
    Kind.STAGEOUT_FAILED: ("stage-out failed",
                           "Your results are still on the site's file system. Read Globus's "
                           "message above, then copy them yourself (globus transfer) before the "
                           "site's purge policy removes them."),
    Kind.JOB_DELETED: ("job deleted during staging",
                       "Nothing, if you deleted it on purpose. Its transfer is no longer needed."),
    Kind.AGENT_UNHEALTHY: ("staging agent unhealthy",
                           "Check the agent's log on the PBS server host and run "
                           "`globus-staging agent --once` there to see the error."),
    Kind.GLOBUS_UNREACHABLE: ("Globus unreachable",
                              "Staging is paused and resumes by itself when Globus answers. "
                              "Check the network from the PBS server host and "
                              "https://status.globus.org."),
}

GLOBUS_ACTIVITY_URL = "https://app.globus.org/activity/"
PBS_DEFAULT_MAIL_POINTS = "a"


@dataclass(frozen=True)
class StagingEvent:
    """Something the agent saw.  ``job_id`` is None for site-wide events.

    ``message`` is what happened (Globus's own text where there is one),
    ``action`` what the reader should do next (empty: a default per kind).
    ``mail_users`` / ``mail_points`` are the job's ``-M`` / ``-m``.
    ``key`` overrides :meth:`dedup_key`; for a persistent condition it should
    change when the condition ends and a new one begins.
    """

    kind: str
    job_id: str | None = None
    owner: str = ""
    queue: str = ""
    project: str = ""
    bytes: int = 0
    files: int = 0
    task_id: str = ""
    message: str = ""
    action: str = ""
    time: float | None = None
    mail_users: Sequence[str] = ()
    mail_points: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown staging event kind {self.kind!r} "
                             f"(expected one of: {', '.join(EVENT_KINDS)})")
        users = self.mail_users
        if isinstance(users, str):  # PBS keeps Mail_Users as "a@x,b@y"
            users = users.split(",")
        object.__setattr__(self, "mail_users",
                           tuple(u.strip() for u in (users or ()) if u and u.strip()))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StagingEvent:
        """From the agent's event dicts: unknown keys ignored, None means unset."""
        kw = {k: v for k, v in data.items() if k in _EVENT_FIELDS and v is not None}
        return cls(**kw)

    def dedup_key(self) -> str:
        return self.key or f"{self.job_id or '-'}:{self.kind}:{self.task_id or '-'}"

    @property
    def effective_mail_points(self) -> str:
        return self.mail_points or PBS_DEFAULT_MAIL_POINTS

    @property
    def user(self) -> str:
        """The owner's user name (PBS's Job_Owner is ``user@submithost``)."""
        return self.owner.partition("@")[0]


_EVENT_FIELDS = frozenset(f.name for f in fields(StagingEvent))
