"""Staging state words, kept by PBS in the ``globus_stage_state`` resource.

Stdlib only.  PBS saves custom resources across a server restart (comments it
loses), so this word is the durable, PBS-visible summary of where a job is.
Users can read it (``qstat -f``) but not set it (the resource has flag=r).
"""

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

ALL = (
    WAITING, STAGING_IN, USER_ACTION, STAGED_IN, STAGEIN_FAILED,
    STAGEOUT_PENDING, STAGING_OUT, STAGED_OUT, STAGEOUT_FAILED, STAGEOUT_SKIPPED,
)

# Once a job's stage-in has succeeded (or it had none), it may run.
RUNNABLE = frozenset({STAGED_IN, STAGEOUT_PENDING, STAGING_OUT, STAGED_OUT,
                      STAGEOUT_FAILED, STAGEOUT_SKIPPED})
# Before this point a user may still change the request with qalter.
EDITABLE = frozenset({WAITING, ""})

# Resource names (an admin recognises these in `qmgr -c "list resource"`).
RES_STAGEIN = "stagein_globus"
RES_STAGEOUT = "stageout_globus"
RES_STATE = "globus_stage_state"
RES_TASKS = "globus_stage_tasks"
