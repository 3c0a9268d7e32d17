"""Phase poll: Globus reports -> transfer rows; fail fast (phases/poll.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide
from pbs_globus_staging.errors import RetryableError, WaitingForUser
from pbs_globus_staging.phases import intake, poll, submit


def submitted(s, name="a.dat"):
    jid = s.qsub(stagein=s.stagein("alice", name))
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    (t,) = s.transfers(jid)
    return jid, t


def run(s):
    return poll.run_cycle(s.ctx, s.polling, s.settling, now=s.clock())


def test_one_task_list_per_identity_and_a_success_is_recorded(site):
    _, t = submitted(site)
    site.backend.succeed(t.task_id)
    site.clock.advance(2)
    assert run(site) == {t.transfer_id}
    row = site.journal.get_transfer(t.transfer_id)
    assert row.status == decide.T_SUCCEEDED and row.completed == site.clock()
    assert t.transfer_id in site.settling.nothing_skipped
    assert [n for n, _ in site.backend.log].count("poll") == 1


def test_a_fault_that_persists_for_the_window_fails_fast_and_cancels(make_site):
    s = make_site(fatal_fault_window=60.0)
    jid, t = submitted(s)
    task = s.backend.tasks[t.task_id]
    task.faults, task.fault = 1, ("PERMISSION_DENIED", "permission denied on /alice/a.dat")
    run(s)
    row = s.journal.get_transfer(t.transfer_id)
    assert row.status == decide.T_ACTIVE and row.fault_since == s.clock()
    assert not task.canceled
    s.clock.advance(30)
    run(s)                                        # still timing, Globus not asked again
    assert [n for n, _ in s.backend.log].count("fatal_fault") == 1
    s.clock.advance(31)
    assert run(s) == {t.transfer_id}
    row = s.journal.get_transfer(t.transfer_id)
    assert row.status == decide.T_FAILED and row.fatal_code == "PERMISSION_DENIED"
    assert task.canceled


def test_a_task_that_moves_again_is_not_failed(make_site):
    s = make_site(fatal_fault_window=60.0)
    _, t = submitted(s)
    task = s.backend.tasks[t.task_id]
    task.faults, task.fault = 1, ("PERMISSION_DENIED", "denied")
    run(s)
    task.bytes_transferred = 50
    s.clock.advance(61)
    run(s)
    row = s.journal.get_transfer(t.transfer_id)
    assert row.status == decide.T_ACTIVE and row.fault_since is None and not task.canceled


def test_the_site_default_deadline_cancels_a_task(make_site):
    s = make_site(default_deadline=3600.0)
    _, t = submitted(s)
    s.clock.advance(3601)
    run(s)
    row = s.journal.get_transfer(t.transfer_id)
    assert row.status == decide.T_FAILED and row.fatal_code == "DEADLINE"
    assert s.backend.tasks[t.task_id].canceled


def test_an_inactive_task_asks_its_user(site):
    jid, t = submitted(site)
    site.backend.needs_user(t.task_id, "consent required for theta-dtn")
    run(site)
    req = site.request(jid)
    assert req.state == decide.USER_ACTION and req.action == "globus-staging login"
    assert site.journal.get_transfer(t.transfer_id).status == decide.T_INACTIVE


def test_a_revoked_login_marks_every_task_of_the_identity(site):
    jid, t = submitted(site)
    site.backend.fail_next["poll"] = WaitingForUser("login expired", action="globus-staging login")
    run(site)
    assert site.request(jid).state == decide.USER_ACTION


def test_globus_down_changes_nothing_and_is_remembered(site):
    jid, t = submitted(site)
    site.backend.fail_next["poll"] = RetryableError("Globus 503")
    assert run(site) == set()
    assert site.journal.get_transfer(t.transfer_id).status == decide.T_ACTIVE
    assert site.journal.get_meta("globus_down_since")
    run(site)
    assert not site.journal.get_meta("globus_down_since")


def test_a_serving_agent_polls_at_most_once_per_poll_fast(make_site):
    s = make_site(poll_fast=1.0)
    submitted(s)
    s.ctx.run.served = True
    run(s)
    run(s)
    s.clock.advance(1.0)
    run(s)
    assert [n for n, _ in s.backend.log].count("poll") == 2
