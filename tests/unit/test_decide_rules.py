"""The agent's rules as pure functions (decide/): plain values in, decisions out."""
from __future__ import annotations

import types

from pbs_globus_staging import decide
from pbs_globus_staging.backend import TaskReport
from pbs_globus_staging.states import Outcome

NOW = 1_000_000.0


def row(**kw):
    base = dict(transfer_id=1, task_id="t1", status="active", identity="alice", grafted=False,
                deadline=None, submitted=NOW - 100, files=2, files_transferred=0,
                bytes_transferred=0, bytes_per_second=0.0, faults=0, fault_since=None,
                fatal_code=None, message="", nice_status="OK", options={}, last_progress=None,
                orphaned_since=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


def report(**kw):
    base = dict(task_id="t1", outcome=Outcome.RUNNING, status="ACTIVE", files=2)
    base.update(kw)
    return TaskReport(**base)


# ------------------------------------------------------------------ plan
def test_plan_wait_batch_window_then_slots_then_stage_ahead():
    kw = dict(direction="in", now=NOW, window=30.0, capacity=5, graft=False, rank=0, ahead=0)
    assert decide.plan_wait(queued=NOW - 10, **kw) == decide.WAIT_WINDOW
    assert decide.plan_wait(queued=NOW - 31, **kw) is None
    assert decide.plan_wait(queued=NOW - 31, **{**kw, "capacity": 0}) == decide.WAIT_SLOT
    assert decide.plan_wait(queued=NOW - 31, **{**kw, "capacity": 0, "graft": True}) is None
    ahead = {**kw, "window": 0.0, "ahead": 2}
    assert decide.plan_wait(queued=NOW, **{**ahead, "rank": 1}) is None
    assert decide.plan_wait(queued=NOW, **{**ahead, "rank": 2}) == decide.WAIT_AHEAD
    assert decide.plan_wait(queued=NOW, **{**ahead, "rank": None}) == decide.WAIT_AHEAD
    assert decide.plan_wait(queued=NOW, **{**ahead, "rank": None, "direction": "out"}) is None
    assert decide.WAIT_AHEAD not in decide.COUNTED_WAITS


def test_queue_ranks_and_who_could_run_next():
    assert decide.queue_ranks({"q": [(-5, 2.0, "b"), (0, 1.0, "a"), (-5, 1.0, "c")]}) == \
        {"c": 0, "b": 1, "a": 2}
    assert decide.could_run_next("H", "s") and decide.could_run_next("Q", "n")
    assert not decide.could_run_next("H", "u") and not decide.could_run_next("R", "n")


def test_an_inactive_or_paused_task_holds_no_slot():
    assert decide.holds_slot(status="active", nice_status="OK", backing_off=False,
                             awaits_user=False)
    assert not decide.holds_slot(status="active", nice_status="Paused", backing_off=False,
                                 awaits_user=False)
    assert not decide.holds_slot(status="inactive", nice_status=None, backing_off=False,
                                 awaits_user=False)
    assert not decide.holds_slot(status="new", nice_status=None, backing_off=True,
                                 awaits_user=False)


def test_api_rate():
    assert decide.within_rate(used=0, rate=2.0, elapsed=0.0)
    assert not decide.within_rate(used=3, rate=2.0, elapsed=0.5)
    assert decide.within_rate(used=3, rate=2.0, elapsed=2.0)


# ------------------------------------------------------------- fail fast
def test_fail_fast_only_after_the_whole_window():
    t = row(faults=1, fault_since=NOW - 59, fatal_code="PERMISSION_DENIED", message="denied")
    rep = report(faults=1)
    assert decide.fault_lookup(t, rep, now=NOW, window=60) == decide.FAULT_KEEP
    upd = decide.report_update(t, rep, late=None, fault=("PERMISSION_DENIED", "denied"),
                               explained="", now=NOW, window=60)
    assert not upd.cancel and upd.status == "active"
    upd = decide.report_update(t, rep, late=None, fault=("PERMISSION_DENIED", "denied"),
                               explained="", now=NOW + 1, window=60)
    assert upd.cancel and upd.status == "failed" and upd.fields["message"] == "denied"
    assert upd.log[0] == "fail_fast"


def test_a_moving_task_is_no_fault():
    t = row(faults=1, fault_since=NOW - 600)
    assert decide.fault_lookup(t, report(faults=2, bytes_transferred=10), now=NOW,
                               window=60) == decide.FAULT_NONE


def test_site_deadline_spares_user_deadlines_and_grafts():
    assert decide.past_site_deadline(row(submitted=NOW - 7200), limit=3600, now=NOW)
    assert decide.past_site_deadline(row(submitted=NOW - 7200, deadline="2030-01-01"),
                                     limit=3600, now=NOW) is None
    assert decide.past_site_deadline(row(submitted=NOW - 7200, grafted=True),
                                     limit=3600, now=NOW) is None
    assert decide.past_site_deadline(row(submitted=NOW - 60), limit=3600, now=NOW) is None


# ------------------------------------------------------------- verdicts
def req(**kw):
    base = dict(state="active", direction="in", attempts=0, action="", job_id="1.s")
    base.update(kw)
    return types.SimpleNamespace(**base)


def item(outcome, message=""):
    return types.SimpleNamespace(outcome=outcome, message=message)


def test_a_failed_stagein_fails_and_skips_the_stageout():
    v = decide.request_verdict(req(), [item("succeeded"), item("failed", "gone")],
                               [row(status="failed")], retries=3, retry_delay=10)
    assert v.state == "failed" and v.message == "gone" and v.skip_stageout and v.alert
    assert v.event_kind == "stagein_failed"


def test_success_only_when_every_item_succeeded():
    assert decide.request_verdict(req(), [item("succeeded"), item("pending")],
                                  [row()], retries=0, retry_delay=0).state == "active"
    v = decide.request_verdict(req(), [item("succeeded")] * 2, [row(status="succeeded")],
                               retries=0, retry_delay=0)
    assert v.state == "succeeded" and v.event_kind == "stagein_succeeded"


def test_a_failed_stageout_is_retried_with_a_growing_wait():
    v = decide.request_verdict(req(direction="out", attempts=2), [item("failed", "x")],
                               [row(status="failed")], retries=3, retry_delay=10)
    assert v.state == "pending" and v.retry_in == 40 and v.attempt == 3 and not v.alert
    v = decide.request_verdict(req(direction="out", attempts=3), [item("failed", "x")],
                               [row(status="failed")], retries=3, retry_delay=10)
    assert v.state == "failed"
    v = decide.request_verdict(req(direction="out"), [item("failed", "x")],
                               [row(status="failed", fatal_code="CANCELED_BY_ADMIN")],
                               retries=3, retry_delay=10)
    assert v.state == "failed"


def test_stageout_start_rules():
    assert decide.stageout_start(exit_status=0, stagein_state=None, when="ok").start
    assert decide.stageout_start(exit_status=0, stagein_state="failed", when="always").why == \
        decide.SKIP_STAGEIN_NOT_DONE
    assert decide.stageout_start(exit_status=1, stagein_state="succeeded", when="notok").start
    assert not decide.stageout_start(exit_status=1, stagein_state=None, when="ok").start


def test_stagein_actions_never_release_a_failed_stagein():
    job = decide.JobView(job_id="1.s", owner="alice", state="H", holds="s")
    acts = decide.stagein_actions(job, decide.RequestStatus(state="failed", message="gone"),
                                  failure_policy="hold")
    assert "release" not in [a.kind for a in acts]
    acts = decide.stagein_actions(job, decide.RequestStatus(state="succeeded"),
                                  failure_policy="hold")
    kinds = [a.kind for a in acts]
    assert kinds.index("set_state") < kinds.index("release")


# -------------------------------------------------------------- orphans
def test_a_job_left_pbs_only_when_pbs_says_so():
    assert decide.job_left(in_view=False, has_obit=False, pbs_state=None, pbs_known=False)
    assert decide.job_left(in_view=False, has_obit=False, pbs_state="F", pbs_known=True)
    assert not decide.job_left(in_view=False, has_obit=False, pbs_state="H", pbs_known=True)
    assert not decide.job_left(in_view=False, has_obit=True, pbs_state=None, pbs_known=False)


def test_vanished_orphans_live_transfers_once():
    plan = decide.vanished(request_state="active",
                           transfers=[row(transfer_id=1), row(transfer_id=1),
                                      row(transfer_id=2, status="succeeded"),
                                      row(transfer_id=3, orphaned_since=NOW)],
                           stageout_state="waiting-exit")
    assert plan.orphan == (1,) and not plan.cancel_request and plan.skip_stageout
    assert decide.vanished(request_state="queued", transfers=[],
                           stageout_state=None).cancel_request


def test_orphan_grace_and_who_may_be_canceled():
    assert not decide.orphan_due(row(orphaned_since=NOW - 299), now=NOW, grace=300)
    assert decide.orphan_due(row(orphaned_since=NOW - 300), now=NOW, grace=300)
    assert decide.orphan_fate(someone_waits=True) == decide.RELEASE
    assert not decide.may_cancel(row(options={"foreign": True}))
    assert not decide.may_cancel(row(grafted=True))


# ----------------------------------------------------------- conditions
def test_slow_alerts_only_for_unfinished_requests():
    t = row(last_progress=NOW - 601)
    live, done = req(), req(state="succeeded")
    out = decide.slow_alerts([t, row(last_progress=NOW - 10)], lambda _t: [live, done, None],
                             now=NOW, slow_after=600)
    assert [(x[0], x[1]) for x in out] == [(t, live)]
    assert out[0][2].startswith("no progress for 10 minutes")


def test_unhealthy_after_three_failed_runs():
    bad, good = types.SimpleNamespace(ok=False), types.SimpleNamespace(ok=True)
    assert decide.agent_unhealthy(ok=False, recent=[bad, bad])
    assert not decide.agent_unhealthy(ok=False, recent=[bad, good])
    assert not decide.agent_unhealthy(ok=True, recent=[bad, bad])
    assert not decide.agent_unhealthy(ok=False, recent=[bad])


def test_poll_delay_is_fast_only_while_a_task_may_end():
    kw = dict(now=NOW, fast=1.0, normal=5.0, pending=False)
    assert decide.poll_delay([row(submitted=NOW - 5)], **kw) == 1.0
    assert decide.poll_delay([row(submitted=NOW - 300)], **kw) == 5.0
    assert decide.poll_delay([row(status="inactive")], **kw) == 30.0
    assert decide.poll_delay([], **kw) == float("inf")
