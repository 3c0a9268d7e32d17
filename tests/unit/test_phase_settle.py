"""Phase settle: outcomes -> items -> requests -> jobs (phases/settle.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide, states
from pbs_globus_staging.backend import SkippedError
from pbs_globus_staging.errors import RetryableError
from pbs_globus_staging.phases import intake, poll, settle, submit


def submitted(s, stagein):
    jid = s.qsub(stagein=stagein)
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    return jid, s.transfers(jid)[0]


def cycle(s):
    """poll -> settle -> job actions, as a poll pass does."""
    s.clock.advance(2)
    changed = poll.run_cycle(s.ctx, s.polling, s.settling, now=s.clock())
    jobs = settle.run_cycle(s.ctx, s.settling, s.views, changed, now=s.clock())
    settle.apply_stagein(s.ctx, s.settling, s.views, [s.views.get(j) for j in jobs if j in s.views])
    return jobs


def test_a_failed_stagein_holds_the_job_with_the_reason_and_never_releases_it(site):
    jid, t = submitted(site, site.stagein("alice", "a.dat"))
    site.backend.fail(t.task_id, "FILE_NOT_FOUND", "/alice/a.dat does not exist")
    cycle(site)
    req = site.request(jid)
    assert req.state == decide.FAILED and "FILE_NOT_FOUND" in req.message
    job = site.job(jid)
    assert job["Hold_Types"] == "s" and job["job_state"] == "H"
    assert site.fake.state_word(jid) == states.Stage.STAGEIN_FAILED
    assert job["comment"].startswith("staging: stage-in FAILED: FILE_NOT_FOUND")
    assert site.fake.calls["qrls"] == 0
    assert "stagein_failed" in site.alert_kinds()
    cycle(site)                                     # and stays so
    assert site.fake.calls["qrls"] == 0 and site.job(jid)["Hold_Types"] == "s"


def test_onfail_delete_deletes_the_job_saying_why_first(site):
    jid, t = submitted(site, site.stagein("alice", "a.dat", options="+onfail=delete"))
    site.backend.fail(t.task_id, "PERMISSION_DENIED", "denied")
    cycle(site)
    assert jid not in site.fake.jobs and site.fake.history[jid]["job_state"] == "F"
    assert site.fake.history[jid]["comment"].startswith("staging: stage-in FAILED (job deleted)")
    assert "deleted" in site.kinds(jid) and site.fake.calls["qrls"] == 0


def test_a_failed_stagein_skips_the_stageout(site):
    jid = site.qsub(stagein=site.stagein("alice", "a.dat"),
                    stageout=site.stageout("alice", "r.dat"))
    intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())
    submit.run_cycle(site.ctx, site.submitting, site.views, site.settling, now=site.clock())
    site.backend.fail(site.transfers(jid)[0].task_id)
    cycle(site)
    out = site.request(jid, "out")
    assert out.state == decide.SKIPPED and out.message == decide.SKIP_STAGEIN_FAILED


def test_success_releases_only_once_every_item_is_known_to_have_arrived(site):
    jid, t = submitted(site, site.stagein("alice", "a.dat") + "+" +
                       site.stagein("alice", "b.dat"))
    site.backend.succeed(t.task_id)
    site.backend.tasks[t.task_id].skipped = [SkippedError("/alice/x", "/y", "FILE_NOT_FOUND")]
    site.backend.fail_next["skipped_errors"] = RetryableError("Globus 502")
    cycle(site)            # SUCCEEDED, but which items arrived is not known yet
    assert site.fake.calls["qrls"] == 0
    assert {i.outcome for i in site.journal.items_for_request(site.request(jid).request_id)} \
        == {"pending"}
    settle.repair(site.ctx, site.settling, site.views, now=site.clock())
    settle.apply_stagein(site.ctx, site.settling, site.views, [site.views.get(jid)])
    assert site.request(jid).state == decide.SUCCEEDED
    assert site.fake.calls["qrls"] == 1 and site.job(jid)["Hold_Types"] == "n"
    assert site.fake.state_word(jid) == states.Stage.STAGED_IN
    # the state word went to PBS before the hold was released
    assert site.kinds(jid)[-1] == "released"


def test_one_skipped_item_fails_the_request_and_the_job_stays_held(site):
    jid, t = submitted(site, site.stagein("alice", "a.dat") + "+" +
                       site.stagein("alice", "b.dat"))
    site.backend.succeed(t.task_id)
    site.backend.tasks[t.task_id].skipped = [
        SkippedError("/alice/b.dat", f"{site.fs}/alice/b.dat", "FILE_NOT_FOUND")]
    cycle(site)
    req = site.request(jid)
    assert req.state == decide.FAILED and "/alice/b.dat" in req.message
    assert site.fake.calls["qrls"] == 0 and site.job(jid)["Hold_Types"] == "s"


def stageout_failed_once(s, jid):
    s.finish(jid, 0)
    from pbs_globus_staging.phases import stageout
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    jobs = intake.read_pbs(s.ctx, s.views) or {}
    stageout.run_cycle(s.ctx, s.views, jobs, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    t = s.transfers(jid, "out")[-1]
    s.backend.fail(t.task_id, "ENDPOINT_ERROR", "disk full")
    cycle(s)
    return s.request(jid, "out")


def test_a_failed_stageout_is_retried_with_a_growing_wait_then_fails(make_site):
    s = make_site(stageout_retries=1, retry_delay=10.0)
    jid = s.qsub(stageout=s.stageout("alice", "r.dat"))
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    req = stageout_failed_once(s, jid)
    assert req.state == decide.PENDING and req.attempts == 1
    assert req.next_attempt == s.clock() + 10.0
    assert "stageout_retry" in s.kinds(jid)
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    assert s.journal.transfers(status=decide.LIVE_TRANSFER) == []   # not before its time
    s.clock.advance(11)
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    (t,) = s.journal.transfers(status=decide.LIVE_TRANSFER)          # a fresh transfer
    s.backend.fail(t.task_id, "ENDPOINT_ERROR", "disk full")
    cycle(s)
    req = s.request(jid, "out")
    assert req.state == decide.FAILED and "stageout_failed" in s.alert_kinds()


def test_an_admin_cancel_of_a_stageout_is_not_retried(make_site):
    s = make_site(stageout_retries=3)
    jid = s.qsub(stageout=s.stageout("alice", "r.dat"))
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    s.finish(jid, 0)
    from pbs_globus_staging.phases import stageout
    jobs = intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    stageout.run_cycle(s.ctx, s.views, jobs, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    t = s.transfers(jid, "out")[0]
    s.backend.fail(t.task_id, "CANCELED_BY_ADMIN", "canceled by the endpoint's admin")
    cycle(s)
    assert s.request(jid, "out").state == decide.FAILED


def test_an_expired_login_leaves_a_request_already_final_alone(site):
    """An admin released the job (stage-in SUCCEEDED) while its task still ran,
    then Globus suspended the task: the finished request does not go back to
    user-action (REQUEST_TRANSITIONS forbids it), and nothing raises."""
    jid, t = submitted(site, site.stagein("alice", "a.dat"))
    rid = site.request(jid).request_id
    site.journal.set_request_state(rid, decide.SUCCEEDED, message="released by admin")
    settle.transfer_needs_user(site.ctx, t, "credentials expired", "globus-staging login",
                               now=site.clock())
    req = site.request(jid)
    assert (req.state, req.message) == (decide.SUCCEEDED, "released by admin")
    assert "user_action" not in site.kinds(jid)
