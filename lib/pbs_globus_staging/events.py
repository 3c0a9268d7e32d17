"""The kinds of staging event an alert rule can be ``on``: defined once.

Stdlib only, Python 3.6+.  The agent emits these (``Agent._alert``), ``alerts``
validates every event and every rule's ``on:`` against ``KINDS``, and
docs/alerts.md lists exactly these.  A kind belongs here only if something
emits it: a rule on a kind nothing emits would silently never fire.
"""

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

KINDS = (
    STAGEIN_SUBMITTED, STAGEIN_SUCCEEDED, STAGEIN_FAILED,
    USER_ACTION, SLOW,
    STAGEOUT_SUBMITTED, STAGEOUT_SUCCEEDED, STAGEOUT_FAILED,
    JOB_DELETED, AGENT_UNHEALTHY, GLOBUS_UNREACHABLE,
)
# About the site, not one job: they go to the admins, never to a job owner.
SITE_KINDS = frozenset({AGENT_UNHEALTHY, GLOBUS_UNREACHABLE})

