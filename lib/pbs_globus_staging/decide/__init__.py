"""Pure staging decisions: (job view, request, transfers, settings, now) -> actions.

Stdlib only, Python 3.6+, free of I/O, so every scenario of the seed (success,
failed stage-in, expired credential, lost queue, graft) is a fast unit test.
The agent's phases (``phases/``) gather the inputs, call these and apply what
they return; each action is idempotent, so a crash between any two of them is
repaired by the next cycle.  One module per phase's rules:

``facts``       JobView (what PBS says), request/transfer words, Action, RequestStatus
``plan``        submit: batch window, stage-ahead, slots, batches, labels, API rate
``outcomes``    poll+settle: fail-fast, site deadline, item outcomes, request verdict,
                stage-out retry and skip rules, stagein_actions (hold/release/delete)
``pacing``      how soon to poll Globus again
``orphans``     jobs that left PBS while staging, orphaned transfers
``conditions``  slow / unhealthy alerts, housekeeping schedule
"""
from .facts import (ACTIVE, CANCELED, FAILED, FINAL, LIVE_TRANSFER, PENDING,  # noqa: F401
                    QUEUED, SKIPPED, SUBSTATE_DEPNHOLD, SUCCEEDED, T_ACTIVE, T_CANCELED,
                    T_FAILED, T_INACTIVE, T_NEW, T_SUCCEEDED, USER_ACTION, WAITING_EXIT,
                    Action, JobView, RequestStatus, human_bytes, parse_pbs_time,
                    progress_text, short, status_for)
from .plan import (COUNTED_WAITS, RESYNC_LEVEL, WAIT_AHEAD, WAIT_SLOT,  # noqa: F401
                   WAIT_WINDOW, Batch, PendingItem, content_tag, could_run_next,
                   full_batches, holds_slot, options_key, plan_batches, plan_order,
                   plan_wait, queue_ranks, resync_key, slots_free, task_label, task_options,
                   within_rate)
from .outcomes import (FAULT_ASK, FAULT_KEEP, FAULT_NONE,  # noqa: F401
                       SKIP_DELETED_BEFORE_RUN, SKIP_LEFT_BEFORE_RUN, SKIP_STAGEIN_FAILED,
                       SKIP_STAGEIN_NOT_DONE, SKIP_UNKNOWN_JOB, StageoutStart, TransferUpdate,
                       Verdict, duration_text, fault_expired, fault_lookup, fault_unknown,
                       item_failure, item_outcomes, needs_explain, past_site_deadline,
                       report_update, request_verdict, source_error_text, stagein_actions,
                       stageout_start, stageout_wanted, summarize)
from .pacing import by_identity, near_end, poll_delay, poll_due  # noqa: F401
from .orphans import (CANCEL, RELEASE, UNFINISHED, Vanished, job_left,  # noqa: F401
                      may_cancel, orphan_due, orphan_fate, request_waits, vanished)
from .conditions import (agent_unhealthy, prune_due, slow_alerts,  # noqa: F401
                         unhealthy_message)
