"""Event kinds, defined once: what an alert rule can be ``on``, and what else a
job's history (the journal's ``events`` table) records.

Stdlib only, Python 3.6+.  The agent emits ``Kind`` members (``Agent._alert``)
and records them in the job's history; ``alerts`` validates every event and
every rule's ``on:`` against ``KINDS``, and docs/alerts.md lists exactly these.
A kind belongs in ``Kind`` only if something emits it as an alert: a rule on a
kind nothing emits would silently never fire.  ``History`` holds the kinds that
only appear in ``globus-staging show JOB``.

Kinds that depend on the direction are looked up, never built from strings:
``SUBMITTED[direction]``, ``FAILED[direction]`` and so on.
"""

from .states import Direction, Word

__all__ = ["Kind", "History", "KINDS", "SITE_KINDS", "ALL_KINDS",
           "REQUESTED", "SUBMITTED", "SUCCEEDED", "FAILED", "DEFERRED", "GRAFTED",
           "ADOPTED", "RESUMED", "ACTIVE"]


class Kind(Word):
    """What an alert rule can be ``on`` (each is also written to the history)."""

    STAGEIN_SUBMITTED = "stagein_submitted"
    STAGEIN_SUCCEEDED = "stagein_succeeded"
    STAGEIN_FAILED = "stagein_failed"
    USER_ACTION = "user_action"            # Globus needs the user; the job stays held
    SLOW = "slow"                          # no progress for agent.slow_after
    STAGEOUT_SUBMITTED = "stageout_submitted"
    STAGEOUT_SUCCEEDED = "stageout_succeeded"
    STAGEOUT_FAILED = "stageout_failed"
    JOB_DELETED = "job_deleted"            # deleted while staging
    AGENT_UNHEALTHY = "agent_unhealthy"
    GLOBUS_UNREACHABLE = "globus_unreachable"


class History(Word):
    """Kinds written only to a job's history (never alerts)."""

    SEEN = "seen"                          # the agent first saw the job
    JOB_STARTED = "job_started"
    JOB_ENDED = "job_ended"                # its stage-out may start
    STAGEIN_REQUESTED = "stagein_requested"
    STAGEOUT_REQUESTED = "stageout_requested"
    STAGEIN_DEFERRED = "stagein_deferred"  # submission put off (limits, Globus refused for now)
    STAGEOUT_DEFERRED = "stageout_deferred"
    STAGEIN_GRAFTED = "stagein_grafted"    # task=<uuid>: waits on the user's own task
    STAGEOUT_GRAFTED = "stageout_grafted"
    STAGEIN_ADOPTED = "stagein_adopted"    # joined a transfer already moving the same data
    STAGEOUT_ADOPTED = "stageout_adopted"
    STAGEIN_ACTIVE = "stagein_active"
    STAGEOUT_ACTIVE = "stageout_active"
    STAGEIN_RESUMED = "stagein_resumed"    # active again after the user logged in
    STAGEOUT_RESUMED = "stageout_resumed"
    STAGEOUT_RETRY = "stageout_retry"
    STAGEOUT_SKIPPED = "stageout_skipped"
    STAGEOUT_RESTORED = "stageout_restored"
    RELEASED = "released"                  # system hold released: stage-in done
    DELETED = "deleted"                    # the agent deleted the job (failure policy)
    PBS_ERROR = "pbs_error"
    CLEANUP_SUBMITTED = "cleanup_submitted"
    CLEANUP_FAILED = "cleanup_failed"
    TRANSFER_CANCELED = "transfer_canceled"
    TRANSFER_REPLACED = "transfer_replaced"
    AGENT_ERROR = "agent_error"
    ADMIN_RELEASE = "admin_release"
    ADMIN_RETRY = "admin_retry"
    ADMIN_CANCEL = "admin_cancel"
    ADMIN_ADOPT = "admin_adopt"


KINDS = tuple(Kind)
# About the site, not one job: they go to the admins, never to a job owner.
SITE_KINDS = frozenset({Kind.AGENT_UNHEALTHY, Kind.GLOBUS_UNREACHABLE})
ALL_KINDS = KINDS + tuple(History)


def _by_direction(stagein, stageout):
    return {Direction.IN: stagein, Direction.OUT: stageout}


REQUESTED = _by_direction(History.STAGEIN_REQUESTED, History.STAGEOUT_REQUESTED)
SUBMITTED = _by_direction(Kind.STAGEIN_SUBMITTED, Kind.STAGEOUT_SUBMITTED)
SUCCEEDED = _by_direction(Kind.STAGEIN_SUCCEEDED, Kind.STAGEOUT_SUCCEEDED)
FAILED = _by_direction(Kind.STAGEIN_FAILED, Kind.STAGEOUT_FAILED)
DEFERRED = _by_direction(History.STAGEIN_DEFERRED, History.STAGEOUT_DEFERRED)
GRAFTED = _by_direction(History.STAGEIN_GRAFTED, History.STAGEOUT_GRAFTED)
ADOPTED = _by_direction(History.STAGEIN_ADOPTED, History.STAGEOUT_ADOPTED)
RESUMED = _by_direction(History.STAGEIN_RESUMED, History.STAGEOUT_RESUMED)
ACTIVE = _by_direction(History.STAGEIN_ACTIVE, History.STAGEOUT_ACTIVE)
