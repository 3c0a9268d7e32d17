"""Every state word of the product, defined once: one ``str`` enum per vocabulary.

Stdlib only, Python 3.6+ (the PBS event hooks import it).

A member *is* its word: it compares and hashes equal to the plain string, and
``str()``, ``format()`` and f-strings give exactly the word, on every Python
from 3.6 to 3.13 (the str-mixin enum's own ``__format__`` changed in 3.12, so
each member defines both).  So SQL parameters, JSON, log lines and PBS
attribute values are byte-identical to the plain strings they replace, and a
word read back from the journal or from PBS is turned into a member with
``Request(text)`` (a ``ValueError`` for a word that is not one).

The vocabularies, and where each word is kept:

``Stage``
    ``globus_stage_state``, the PBS-visible summary of where a job is.  PBS
    saves custom resources across a server restart (comments it loses), so
    this is the durable word users read (``qstat -f``) but cannot set
    (flag=r).  The journal's ``jobs.stage_state`` mirrors it.
``JobMark``
    The one word the agent writes into the journal's ``jobs.stage_state`` that
    PBS never shows: the agent saw the job run.
``Request``
    A staging request's state in the journal (one per job and direction);
    ``REQUEST_TRANSITIONS`` says which moves are allowed and the journal
    refuses every other one (``IllegalTransition``).
``Transfer``
    A journal transfer row's status: the Globus task status as last seen,
    lower case, plus ``new`` (recorded, not yet at Globus).
``Item``
    A transfer item's outcome: did this path arrive for this request.
``Direction``
    Stage-in or stage-out.
``GlobusStatus``
    The ``status`` of a Globus Transfer task document (upper case, Globus's
    own words).
``Outcome``
    What a Globus task's state means for the job waiting on it (the
    backend's classification; never stored).
``DeliveryStatus``
    What became of one alert delivery (a mail, a log line, a command); the
    alerts ledger records the ones that end.

``Request.USER_ACTION`` and ``Stage.USER_ACTION`` are the same word in two
vocabularies: the request waits for its owner (journal), and the job is held
for that reason (PBS).  They are two names, one per meaning; the alert and
history kind ``events.Kind.USER_ACTION`` is a third word (``user_action``).
"""

import enum

__all__ = [
    "Word", "Stage", "JobMark", "Request", "Transfer", "Item", "Direction",
    "GlobusStatus", "Outcome", "DeliveryStatus",
    "REQUEST_TRANSITIONS", "REQUEST_INITIAL", "IllegalTransition", "check_transition",
    "RUNNABLE", "EDITABLE", "FINAL_REQUEST", "LIVE_REQUEST", "LIVE_TRANSFER",
    "FINISHED_TRANSFER", "GLOBUS_LIVE", "TRANSFER_STATUS_OF", "RES_STAGEIN", "RES_STAGEOUT", "RES_STATE",
    "RES_TASKS",
]


class Word(str, enum.Enum):
    """A state word: a ``str`` whose ``str()`` and ``format()`` are its value."""

    def __str__(self):
        return self.value

    def __format__(self, spec):
        return format(self.value, spec)

    @classmethod
    def values(cls):
        """The words, in definition order, as plain strings."""
        return tuple(m.value for m in cls)


class Stage(Word):
    """``globus_stage_state`` words (PBS resource, also ``jobs.stage_state``)."""

    # Stage-in
    WAITING = "waiting"              # queuejob accepted the request and held the job
    STAGING_IN = "staging-in"        # a Globus task is running for it
    USER_ACTION = "user-action"      # Globus needs the user (login/consent); job stays held
    STAGED_IN = "staged-in"          # stage-in SUCCEEDED: the only word that lets the job run
    STAGEIN_FAILED = "stagein-failed"
    # Stage-out
    STAGEOUT_PENDING = "stageout-pending"  # job ended; stage-out not yet submitted
    STAGING_OUT = "staging-out"
    STAGED_OUT = "staged-out"
    STAGEOUT_FAILED = "stageout-failed"
    STAGEOUT_SKIPPED = "stageout-skipped"  # exit status did not match `when=`


class JobMark(Word):
    """Journal-only ``jobs.stage_state`` word (PBS never shows it)."""

    RUNNING = "running"              # the agent saw the job running (R or E)


class Request(Word):
    """Journal request states (``requests.state``)."""

    WAITING_EXIT = "waiting-exit"    # a stage-out whose job has not ended yet
    PENDING = "pending"              # ready, no transfer linked yet
    QUEUED = "queued"                # linked to a transfer not yet submitted (limits, batching)
    ACTIVE = "active"                # its transfer(s) are at Globus
    USER_ACTION = "user-action"      # Globus needs the user (login, consent)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"              # stage-out not wanted for this exit status / job never ran
    CANCELED = "canceled"            # the job vanished and the grace period ran out


class Transfer(Word):
    """Journal transfer statuses (``transfers.status``)."""

    NEW = "new"                      # recorded; not (yet known to be) at Globus
    ACTIVE = "active"
    INACTIVE = "inactive"            # Globus suspended it: credentials expired
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class Item(Word):
    """Transfer item outcomes (``transfer_items.outcome``)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Direction(Word):
    """``requests.direction`` and ``transfers.direction``."""

    IN = "in"
    OUT = "out"


class GlobusStatus(Word):
    """A Globus Transfer task's ``status`` (task documents, ``task_list`` filters)."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class Outcome(Word):
    """What a transfer's state means for the job waiting on it."""

    DONE = "done"                  # SUCCEEDED at Globus
    RUNNING = "running"            # ACTIVE and healthy (or queued)
    WAITING_FOR_USER = "waiting_for_user"  # INACTIVE, ConsentRequired, AuthenticationFailed
    TRANSIENT = "transient"        # 429/5xx/network or a transient fault: no state change
    FATAL = "fatal"                # FAILED/EXPIRED/canceled, or a persistent fatal fault


class DeliveryStatus(Word):
    """What became of one alert delivery (``alerts.engine``)."""

    SENT = "sent"
    FAILED = "failed"              # will be tried again next cycle
    DEFERRED = "deferred"          # not tried: the mail transport failed earlier in this cycle
    ABANDONED = "abandoned"        # failed, and no more tries (recorded in the ledger)
    SUPPRESSED = "suppressed"      # not sent on purpose (-m n, no usable address)


# ---------------------------------------------------------------------------
# Groups

# Once a job's stage-in has succeeded (or it had none), it may run.
RUNNABLE = frozenset({Stage.STAGED_IN, Stage.STAGEOUT_PENDING, Stage.STAGING_OUT,
                      Stage.STAGED_OUT, Stage.STAGEOUT_FAILED, Stage.STAGEOUT_SKIPPED})
# Before this point a user may still change the request with qalter.
EDITABLE = frozenset({Stage.WAITING, ""})

FINAL_REQUEST = frozenset({Request.SUCCEEDED, Request.FAILED, Request.SKIPPED,
                           Request.CANCELED})
# A stage-in still on its way (what the agent polls, alerts on, and watches for vanishing).
LIVE_REQUEST = (Request.PENDING, Request.QUEUED, Request.ACTIVE, Request.USER_ACTION)

LIVE_TRANSFER = (Transfer.NEW, Transfer.ACTIVE, Transfer.INACTIVE)
FINISHED_TRANSFER = frozenset({Transfer.SUCCEEDED, Transfer.FAILED, Transfer.CANCELED})
# The Globus statuses of a task that has not ended.
GLOBUS_LIVE = (GlobusStatus.ACTIVE, GlobusStatus.INACTIVE)
# The journal transfer status that records a task's classified outcome (a
# transient trouble says nothing new: the task is still taken as running).
TRANSFER_STATUS_OF = {
    Outcome.DONE: Transfer.SUCCEEDED,
    Outcome.FATAL: Transfer.FAILED,
    Outcome.WAITING_FOR_USER: Transfer.INACTIVE,
    Outcome.RUNNING: Transfer.ACTIVE,
    Outcome.TRANSIENT: Transfer.ACTIVE,
}


# ---------------------------------------------------------------------------
# Request transitions: every move a writer makes today, and no other.
#
# Writing a request's current state again (to change only its message or
# action) is always allowed; the table lists real moves.  Who makes each:
#   agent   -- intake, planning, submitting, grafting, adopting, settling,
#              stage-out start/skip/retry, vanished jobs, orphan reaping
#   admin   -- globus-staging release / retry / adopt / cancel (commands/)

_R = Request
REQUEST_INITIAL = frozenset({
    _R.PENDING,          # a stage-in, registered (agent intake)
    _R.WAITING_EXIT,     # a stage-out, registered while its job runs
    _R.FAILED,           # a request that no longer parses (policy, alias changed)
})

REQUEST_TRANSITIONS = {
    # The job ended: start (PENDING) or skip; a stage-out changed by qalter
    # that no longer parses fails.
    _R.WAITING_EXIT: frozenset({_R.PENDING, _R.SKIPPED, _R.FAILED}),
    # Planned into a batch (QUEUED), joined a moving transfer (ACTIVE, adopt or
    # graft; SUCCEEDED/FAILED when what it joined had already ended), graft
    # lookup needs the user, vanished job (CANCELED), skipped stage-out,
    # admin release/adopt/cancel.
    _R.PENDING: frozenset({_R.QUEUED, _R.ACTIVE, _R.USER_ACTION, _R.SUCCEEDED,
                           _R.FAILED, _R.SKIPPED, _R.CANCELED}),
    # Submitted (ACTIVE), or settled/canceled like PENDING; a failed stage-out
    # goes back to PENDING to be retried with a fresh transfer.
    _R.QUEUED: frozenset({_R.ACTIVE, _R.USER_ACTION, _R.SUCCEEDED, _R.FAILED,
                          _R.SKIPPED, _R.CANCELED, _R.PENDING}),
    _R.ACTIVE: frozenset({_R.USER_ACTION, _R.SUCCEEDED, _R.FAILED, _R.SKIPPED,
                          _R.CANCELED, _R.PENDING}),
    # The user logged in again: the task resumes (ACTIVE) or ends.
    _R.USER_ACTION: frozenset({_R.ACTIVE, _R.SUCCEEDED, _R.FAILED, _R.SKIPPED,
                               _R.CANCELED, _R.PENDING}),
    # Final states are left only by an admin: retry (PENDING), forced release
    # of a stage-in (SUCCEEDED), adopting another task (ACTIVE).
    _R.FAILED: frozenset({_R.PENDING, _R.SUCCEEDED, _R.ACTIVE}),
    _R.CANCELED: frozenset({_R.PENDING, _R.SUCCEEDED, _R.ACTIVE}),
    # A stage-out skipped because its stage-in failed is wanted again once an
    # admin retries or releases that stage-in.
    _R.SKIPPED: frozenset({_R.WAITING_EXIT}),
    _R.SUCCEEDED: frozenset(),
}
del _R


class IllegalTransition(ValueError):
    """A request state change that ``REQUEST_TRANSITIONS`` does not allow: a
    programming error, never a user's or Globus's fault."""


def check_transition(old, new):
    """Raise ``IllegalTransition`` unless a request may go from ``old`` to
    ``new`` (``old`` None: a new request starting in ``new``).  Returns the
    ``Request`` member for ``new``."""
    try:
        target = Request(new)
    except ValueError:
        raise IllegalTransition("{!r} is not a request state (expected one of: {})".format(
            str(new), ", ".join(Request.values()))) from None
    if old is None:
        if target not in REQUEST_INITIAL:
            raise IllegalTransition("a request cannot start in state {}".format(target))
        return target
    try:
        source = Request(old)
    except ValueError:
        raise IllegalTransition("{!r} is not a request state".format(str(old))) from None
    if target is not source and target not in REQUEST_TRANSITIONS[source]:
        raise IllegalTransition("a request cannot go from {} to {}".format(source, target))
    return target


# ---------------------------------------------------------------------------
# Resource names (an admin recognises these in `qmgr -c "list resource"`).
RES_STAGEIN = "stagein_globus"
RES_STAGEOUT = "stageout_globus"
RES_STATE = "globus_stage_state"
RES_TASKS = "globus_stage_tasks"
