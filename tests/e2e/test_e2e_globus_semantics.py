"""Issue 11, points 1 and 3, end to end: the hooks in the PBS double, the agent
as the periodic hook runs it, the real globus-sdk and the emulator behaving as
Globus documents (docs/globus-fidelity.md, "Tasks, items and errors").  The
`site` fixture checks the invariants afterwards, including that a released
job has positive evidence of arrival for every item."""
import time

import globus_sdk
import pytest

from e2e_helpers import (REMOTE_COLLECTION, local, make_site, remote_file,  # noqa: F401
                         request_state, site, stagein_arg, tasks_for)
from pbs_globus_staging import hookcore, siteconfig
from pbs_globus_staging_sim.invariants import arrival_violations, assert_invariants
from pbs_globus_staging_sim.site import NATIVE_CLIENT

OTHER_COLLECTION = "5b6f8f36-3a10-4c2e-9d5e-0c8a4e7a1f21"


def comment(site, job):
    return site.qstat(job).get("comment", "")


def failure_words(site, job):
    text = comment(site, job)
    assert "stage-in FAILED: " in text, text
    return text.split("stage-in FAILED: ", 1)[1]


def needs_input(site, rel):
    return f"#!/bin/sh\ntest -e {local(site, rel)} || exit 99\n"


# -- point 1: per-item outcomes from positive evidence ---------------------------------


def test_batched_directory_with_an_unreadable_file_is_not_released(site):
    """Two jobs share one task (skip_source_errors); one file inside job A's
    directory cannot be read at the source.  Globus skips it and the task
    SUCCEEDS -- job A must fail with the skipped error's code, job B runs."""
    remote_file(site, "in/a.dat", "alpha\n")
    remote_file(site, "in/b.dat", "beta\n")
    remote_file(site, "other/c.dat", "gamma\n")
    site.emulator.make_ambiguous(REMOTE_COLLECTION, f"/{site.user}/in/b.dat")
    a = site.submit("-l", stagein_arg(site, "in/", "in/"), script=needs_input(site, "in/"))
    b = site.submit("-l", stagein_arg(site, "c/", "other/"),
                    script=needs_input(site, "c/c.dat"))
    site.run_until(lambda: request_state(site, a) == "failed"
                   and site.job_state(b) == "F", timeout=60)
    assert len({t.task_id for t in tasks_for(site, a) + tasks_for(site, b)}
               | {t.task_id for t in site.emulator.tasks.values()}) == 1   # batched
    words = failure_words(site, a)
    assert "AMBIGUOUS_PATH" in words and "in/b.dat" in words
    assert "AMBIGUOUS_PATH" in site.timeline(a)
    assert site.qstat(a)["job_state"] == "H"
    assert site.qstat(b)["Exit_status"] == 0
    # the task counted a skipped error (subtasks_skipped_errors): they were read
    assert any(c.path.endswith("/skipped_errors") for c in site.emulator.calls)


def test_a_task_that_skipped_nothing_costs_no_skipped_errors_call(site):
    """subtasks_skipped_errors 0 in the SUCCEEDED task document is Globus's word
    that nothing was skipped: no task_skipped_errors call, and the job runs."""
    remote_file(site, "in/a.dat", "alpha\n")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"), script=needs_input(site, "in/a.dat"))
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert site.qstat(job)["Exit_status"] == 0
    assert not [c for c in site.emulator.calls if c.path.endswith("/skipped_errors")]


def test_sync_up_to_date_and_empty_directory_count_as_arrived(site):
    """Sync-skipped files and an empty directory are not in
    task_successful_transfers; both requests still succeed."""
    remote_file(site, "in/same.dat", "unchanged\n")
    target = site.site_dir / site.user / "in" / "same.dat"
    target.parent.mkdir(parents=True)
    target.write_text("unchanged\n")
    (site.remote_dir / site.user / "empty").mkdir()
    a = site.submit("-l", stagein_arg(site, "in/same.dat", "in/same.dat", "+sync=checksum"))
    b = site.submit("-l", stagein_arg(site, "e/", "empty/", "+sync=checksum"))
    site.run_until(lambda: site.job_state(a) == "F" and site.job_state(b) == "F", timeout=60)
    assert request_state(site, a) == "succeeded" and request_state(site, b) == "succeeded"
    (task,) = site.emulator.tasks.values()
    assert task.files_skipped == 1 and not task.successful


def test_a_missing_file_fails_with_the_same_words_batched_or_alone(site):
    remote_file(site, "other/c.dat")
    alone = site.submit("-l", stagein_arg(site, "in/x1.dat", "nope/x.dat"))
    site.run_until(lambda: request_state(site, alone) == "failed", timeout=60, schedule=False)
    batched = site.submit("-l", stagein_arg(site, "in/x2.dat", "nope/x.dat"))
    partner = site.submit("-l", stagein_arg(site, "c.dat", "other/c.dat"))
    site.run_until(lambda: request_state(site, batched) == "failed"
                   and request_state(site, partner) == "succeeded", timeout=60,
                   schedule=False)
    assert failure_words(site, alone) == failure_words(site, batched)
    assert "FILE_NOT_FOUND" in failure_words(site, alone)


def test_invariant_catches_a_release_without_evidence(site):
    """The checker itself: a job released although Globus skipped a file of its
    directory is reported."""
    remote_file(site, "in/a.dat")
    remote_file(site, "in/b.dat")
    site.emulator.make_ambiguous(REMOTE_COLLECTION, f"/{site.user}/in/b.dat")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60, schedule=False)
    assert arrival_violations(site) == []
    # what the old agent did: release it anyway
    j = site.journal()
    try:
        j.add_event(job, "released", "system hold released: stage-in done")
    finally:
        j.close()
    problems = arrival_violations(site)
    assert problems and "AMBIGUOUS_PATH" in problems[0]
    j = site.journal()
    try:   # leave the site as the fixture's own check expects it
        j._exec("DELETE FROM events WHERE job_id = ? AND kind = 'released'", (job,))
    finally:
        j.close()


# -- point 3: deadlines, slots, retries ---------------------------------------------------


def test_no_explicit_deadline_unless_asked_and_site_deadline_enforced(tmp_path):
    s = make_site(tmp_path, agent_overrides={"default_deadline": "4s"})
    try:
        remote_file(s, "in/a.dat")
        s.emulator.set_rate(0)                        # a stalled transfer
        asked = s.submit("-l", stagein_arg(s, "in/a1.dat", "in/a.dat", "+deadline=21d"))
        plain = s.submit("-l", stagein_arg(s, "in/a2.dat", "in/a.dat"))
        s.run_until(lambda: len(s.emulator.tasks) == 2, schedule=False)
        (ta,), (tp,) = tasks_for(s, asked), tasks_for(s, plain)
        assert ta.explicit_deadline and not tp.explicit_deadline
        left = tp.deadline - time.time()
        assert 23 * 3600 < left <= 24 * 3600          # Globus's own, extended while it moves
        s.run_until(lambda: "FAILED" in comment(s, plain), timeout=60, schedule=False)
        assert request_state(s, plain) == "failed"
        assert "default deadline of 4 s" in comment(s, plain)
        assert s.emulator.tasks[tp.task_id].status == "FAILED"          # canceled at Globus
        assert request_state(s, asked) == "active"   # its own deadline is Globus's to keep
        assert_invariants(s)
    finally:
        s.stop()


def test_an_inactive_task_does_not_hold_a_slot(tmp_path):
    s = make_site(tmp_path, agent_overrides={"max_tasks_per_identity": 1},
                  extra_config={"collections": {"other-dtn": OTHER_COLLECTION}})
    try:
        other_dir = tmp_path / "other-fs"
        s.emulator.add_collection("other-dtn", collection_id=OTHER_COLLECTION,
                                  directory=other_dir,
                                  # guest: no data_access consent needed (auth.py)
                                  entity_type="GCSv5_guest_collection")
        s.emulator.grant(s.identity_id, OTHER_COLLECTION, f"/{s.user}/")
        (other_dir / s.user).mkdir(parents=True)
        (other_dir / s.user / "o.dat").write_text("o\n")
        remote_file(s, "in/a.dat")
        s.emulator.expire_credential(s.identity_id, OTHER_COLLECTION)
        stuck = s.submit("-l", f"stagein_globus={local(s, 'o.dat')}@other-dtn:~/{s.user}/o.dat")
        s.run_until(lambda: request_state(s, stuck) == "user-action", timeout=60,
                    schedule=False)
        free = s.submit("-l", stagein_arg(s, "a.dat", "in/a.dat"))
        s.run_until(lambda: s.job_state(free) == "F", timeout=60)
        assert request_state(s, stuck) == "user-action"
        s.emulator.renew_credential(s.identity_id, OTHER_COLLECTION)
        s.run_until(lambda: s.job_state(stuck) == "F", timeout=60)
        assert_invariants(s)
    finally:
        s.stop()


def test_a_submission_waiting_for_a_login_does_not_hold_a_slot(tmp_path):
    """A mapped collection whose consent the login lacks: the submission is
    refused (ConsentRequired) until the owner logs in; meanwhile the owner's
    other job is staged and runs."""
    from pbs_globus_staging_sim.browser import cli_login

    s = make_site(tmp_path, agent_overrides={"max_tasks_per_identity": 1})
    try:
        path = s.eagle_dir / s.user / "in" / "e.dat"
        path.parent.mkdir(parents=True)
        path.write_text("e\n")
        remote_file(s, "in/a.dat")
        stuck = s.submit("-l", f"stagein_globus={local(s, 'e.dat')}@eagle:~/{s.user}/in/e.dat")
        s.run_until(lambda: request_state(s, stuck) == "user-action", timeout=60,
                    schedule=False)
        free = s.submit("-l", stagein_arg(s, "a.dat", "in/a.dat"))
        s.run_until(lambda: s.job_state(free) == "F", timeout=60)
        assert request_state(s, stuck) == "user-action"
        login = cli_login(str(s.config_path), s.user, ["--collection", "eagle"], env=s.env())
        assert login.returncode == 0, login.stderr
        s.run_until(lambda: s.job_state(stuck) == "F", timeout=60)
        assert_invariants(s)
    finally:
        s.stop()


def test_fail_fast_reads_the_event_list_not_nice_status(tmp_path):
    """nice_status shows an error only for nice_status_expires_in; here it
    never does.  The destination refuses writes (PERMISSION_DENIED, not
    skippable): the stage-out still fails fast, with Globus's code."""
    s = make_site(tmp_path, agent_overrides={"stageout_retries": 0})
    try:
        s.emulator.set_nice_status_window(0.0)
        out = local(s, "out/")
        job = s.submit("-l", f"stageout_globus={out}@theta-dtn:/elsewhere/",
                       script=f"#!/bin/sh\nmkdir -p {out}\necho r > {out}r.txt\n")
        s.run_until(lambda: request_state(s, job, "out") == "failed", timeout=60)
        (task,) = tasks_for(s, job)
        assert s.emulator.task_doc(task.task_id)["status"] == "FAILED"   # canceled
        assert "PERMISSION_DENIED" in s.timeline(job)
        assert_invariants(s)
    finally:
        s.stop()


def _foreign_task(site, raw, *, label):
    """Start, as the web app would, a transfer of exactly the paths the agent
    will ask for, owned by the same Globus identity."""
    cfg = siteconfig.load(str(site.config_path))
    resolved = hookcore.validate(raw, direction="in", user=site.user, site=cfg,
                                 resource="stagein_globus")
    token = site.emulator.issue_tokens(site.identity_id, client_id=NATIVE_CLIENT)
    tc = globus_sdk.TransferClient(base_url=site.emulator.url + "/",
                                   authorizer=globus_sdk.AccessTokenAuthorizer(
                                       token["access_token"]))
    first = resolved.items[0]
    data = globus_sdk.TransferData(first.source_collection, first.destination_collection,
                                   label=label)
    for it in resolved.items:
        data.add_item(it.source_path, it.destination_path, recursive=bool(it.recursive))
    return tc, tc.submit_transfer(data)["task_id"]


def test_conflict_with_a_task_started_elsewhere_adopts_it(site):
    remote_file(site, "in/a.dat", "from the web app\n")
    site.emulator.set_rate(0)
    arg = stagein_arg(site, "in/a.dat", "in/a.dat")
    _tc, web = _foreign_task(site, arg.split("=", 1)[1], label="copied in the web app")
    job = site.submit("-l", arg, script=needs_input(site, "in/a.dat"))
    site.run_until(lambda: "started outside PBS" in site.timeline(job), timeout=60,
                   schedule=False)
    site.emulator.set_rate(5e6)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert list(site.emulator.tasks) == [web]               # no second task was made
    assert site.resource(job, "globus_stage_tasks") == web
    j = site.journal()
    try:
        assert j.transfer_by_task_id(web).options.get("foreign") is True   # never canceled
    finally:
        j.close()


def test_conflict_that_cannot_be_adopted_backs_off_that_request_alone(tmp_path):
    s = make_site(tmp_path, agent_overrides={"retry_delay": 0.5})
    try:
        remote_file(s, "in/a.dat")
        remote_file(s, "free/f.dat")
        remote_file(s, "x/x.dat")
        s.emulator.set_rate(0)
        arg = stagein_arg(s, "in/a.dat", "in/a.dat")
        tc, web1 = _foreign_task(s, arg.split("=", 1)[1], label="web app 1")
        _tc, web2 = _foreign_task(s, stagein_arg(s, "x.dat", "x/x.dat").split("=", 1)[1],
                                  label="web app 2")
        blocked = s.submit("-l", arg)
        free = s.submit("-l", stagein_arg(s, "f.dat", "free/f.dat", "+checksum=yes"))
        s.cycle()
        assert tasks_for(s, free)                            # not held up by the other
        assert not tasks_for(s, blocked)
        assert "identical paths" in comment(s, blocked)
        assert "stagein_deferred" in s.timeline(blocked)
        for tid in (web1, web2):
            tc.cancel_task(tid)
        s.emulator.set_rate(5e6)
        s.run_until(lambda: s.job_state(blocked) == "F" and s.job_state(free) == "F",
                    timeout=60)
        assert_invariants(s)
    finally:
        s.stop()


@pytest.fixture
def site_retrying_soon(tmp_path):
    """``site`` with ``agent.retry_delay`` 5 s instead of the default 60 s: still
    longer than one agent run (cycle_budget 3 s), so a deferred request waits out
    the run, but the test does not wait a real minute for its retry."""
    s = make_site(tmp_path, agent_overrides={"retry_delay": 5})
    try:
        yield s
        assert_invariants(s)
    finally:
        s.stop()


def test_endpoint_error_backs_off_one_request_not_the_run(site_retrying_soon):
    site = site_retrying_soon
    remote_file(site, "in/a.dat")
    remote_file(site, "in/b.dat")
    one = site.submit("-l", stagein_arg(site, "a.dat", "in/a.dat"))
    two = site.submit("-l", stagein_arg(site, "b.dat", "in/b.dat", "+checksum=yes"))
    site.emulator.fail_requests(502, path_prefix="/v0.10/transfer", method="POST",
                                code="ExternalError.DirListingFailed.Connect", count=1)
    site.cycle()
    hit = [j for j in (one, two) if "ExternalError" in site.timeline(j)]
    spared = [j for j in (one, two) if j not in hit]
    assert len(hit) == 1 and len(spared) == 1
    assert tasks_for(site, spared[0])              # submitted in the same run
    assert "stagein_deferred" in site.timeline(hit[0])
    j = site.journal()
    try:
        assert not j.get_meta("globus_down_since")
        assert not any("globus_unreachable" in (c.error or "") for c in j.last_cycles(3))
    finally:
        j.close()
    site.run_until(lambda: site.job_state(one) == "F" and site.job_state(two) == "F",
                   timeout=90)


def test_canceled_by_admin_fails_with_the_admins_words_and_is_not_retried(site):
    remote_file(site, "in/a.dat")
    site.emulator.set_rate(0)
    job_in = site.submit("-l", stagein_arg(site, "a.dat", "in/a.dat"))
    out = local(site, "out/")
    job_out = site.submit("-l", f"stageout_globus={out}@theta-dtn:~/{site.user}/res/",
                          script=f"#!/bin/sh\nmkdir -p {out}\necho r > {out}r.txt\n")
    site.run_until(lambda: len(tasks_for(site, job_in)) == 1
                   and len(tasks_for(site, job_out)) == 1, timeout=60)
    for job in (job_in, job_out):
        (task,) = tasks_for(site, job)
        site.emulator.admin_cancel(task.task_id, "disk replacement in progress")
    site.run_until(lambda: request_state(site, job_in) == "failed"
                   and request_state(site, job_out, "out") == "failed", timeout=60)
    assert "disk replacement in progress" in failure_words(site, job_in)
    timeline = site.timeline(job_out)
    assert "disk replacement in progress" in timeline and "stageout_retry" not in timeline
    assert len(tasks_for(site, job_out)) == 1


def test_a_comment_with_an_apostrophe_reaches_pbs():
    from pbs_globus_staging.pbsctl import safe_comment
    from pbs_globus_staging_sim.pbsdouble.cmd import split_pbs_list
    text = safe_comment("the site's \"default\" deadline, 4 s")
    assert split_pbs_list(f"comment={text}", allow_space=True) == [f"comment={text}"]
