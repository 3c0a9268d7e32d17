"""Issue 4 scenarios end to end: expired credentials (C), lost queue (D),
grafted tasks (E), restarts, outages, fail-fast, jobs that change under us.
Each test asserts the job's final state, how many Globus tasks were created
and what the user was told; the `site` fixture checks the invariants after."""
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from e2e_helpers import (REMOTE_COLLECTION, local, make_site, remote_file,  # noqa: F401
                         request_state, site, stagein_arg, tasks_for)
from pbs_globus_staging_sim.invariants import assert_invariants
from pbs_globus_staging_sim.site import SITE_COLLECTION


def comment(site, job):
    return site.qstat(job).get("comment", "")


def test_scenario_c_expired_credential_resumes_same_task(site):
    remote_file(site, "in/big.dat", "x" * 400_000)
    site.emulator.set_rate(1e5)
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    site.run_until(lambda: request_state(site, job) == "active", schedule=False)
    site.emulator.expire_credential(site.identity_id, REMOTE_COLLECTION)
    site.run_until(lambda: request_state(site, job) == "user-action", schedule=False)
    assert site.job_state(job) == "H"
    assert site.resource(job, "globus_stage_state") == "user-action"
    assert "globus-staging login" in comment(site, job)
    site.emulator.renew_credential(site.identity_id, REMOTE_COLLECTION)
    site.emulator.set_rate(5e6)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert len(tasks_for(site, job)) == 1                        # resumed, not resubmitted
    timeline = site.timeline(job)
    assert timeline.index("user_action") < timeline.index("stagein_succeeded")


def test_consent_required_at_submission_then_same_submission_id(site):
    from pbs_globus_staging_sim.browser import cli_login
    from pbs_globus_staging_sim.site import EAGLE_COLLECTION

    path = site.eagle_dir / site.user / "in" / "a.dat"    # the login has no consent for eagle
    path.parent.mkdir(parents=True)
    path.write_text("data\n")
    job = site.submit("-l", f"stagein_globus={local(site, 'in/a.dat')}@eagle:~/{site.user}/in/a.dat")
    site.run_until(lambda: request_state(site, job) == "user-action", schedule=False)
    assert "login" in comment(site, job) and EAGLE_COLLECTION in comment(site, job)
    assert tasks_for(site, job) == []
    j = site.journal()
    try:
        (t,) = j.transfers()
        first_submission = t.submission_id
    finally:
        j.close()
    login = cli_login(str(site.config_path), site.user, ["--collection", "eagle"],
                      env=site.env())
    assert login.returncode == 0, login.stderr
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    (task,) = tasks_for(site, job)
    assert task.submission_id == first_submission


def test_scenario_d_lost_queue_resubmission_adopts_running_transfer(site):
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/a.dat")
    args = ("-l", stagein_arg(site, "in/", "in/"))
    first = site.submit(*args)
    site.run_until(lambda: request_state(site, first) == "active", schedule=False)
    assert site.pbs.run(["qdel", first]).returncode == 0        # the queue is lost
    site.cycle()
    assert "job_deleted" in site.timeline(first)
    second = site.submit(*args)                                 # the user resubmits
    site.cycle()
    assert "adopted Globus task" in site.timeline(second)
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(second) == "F", timeout=60)
    assert len(site.emulator.tasks) == 1                        # one transfer in all
    assert site.qstat(second)["Exit_status"] == 0


def test_job_deleted_while_staging_transfer_canceled_after_grace(tmp_path):
    s = make_site(tmp_path, orphan_grace=1.0)
    try:
        s.emulator.pause_collection(REMOTE_COLLECTION)
        remote_file(s, "in/a.dat")
        job = s.submit("-l", stagein_arg(s, "in/", "in/"))
        s.run_until(lambda: request_state(s, job) == "active", schedule=False)
        (task,) = tasks_for(s, job)
        s.pbs.run(["qdel", job])
        s.cycle()
        assert task.status == "ACTIVE"                          # kept for the grace period
        time.sleep(1.2)
        s.run_until(lambda: request_state(s, job) == "canceled", schedule=False)
        assert s.emulator.tasks[task.task_id].status == "FAILED"
        timeline = s.timeline(job)
        assert "job_deleted" in timeline and "canceled after the grace period" in timeline
        assert_invariants(s)
    finally:
        s.stop()


def _start_out_of_band(site, rel):
    """A transfer the user started elsewhere (web app, CLI), as themselves."""
    import globus_sdk
    from pbs_globus_staging_sim.site import NATIVE_CLIENT
    tokens = site.emulator.issue_tokens(site.identity_id, client_id=NATIVE_CLIENT)
    tc = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(tokens["access_token"]),
        base_url=site.emulator.url + "/")
    td = globus_sdk.TransferData(REMOTE_COLLECTION, SITE_COLLECTION, label="by hand")
    td.add_item(f"/{site.user}/{rel}", f"/{site.user}/{rel}", recursive=True)
    return tc.submit_transfer(td)["task_id"]


def test_scenario_e_graft_existing_task(site):
    remote_file(site, "oob/a.dat", "out of band\n")
    site.emulator.pause_collection(REMOTE_COLLECTION)
    task_id = _start_out_of_band(site, "oob/")
    job = site.submit("-l", f"stagein_globus=task={task_id}")
    site.cycle()
    site.schedule()
    assert site.job_state(job) == "H" and "grafted" in site.timeline(job)
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert len(site.emulator.tasks) == 1                        # nothing new was started
    assert site.resource(job, "globus_stage_tasks") == task_id


def test_graft_of_a_task_the_owner_cannot_see_is_refused(site):
    job = site.submit("-l", "stagein_globus=task=0b9c8f31-5d1e-4c27-9a0e-1f2d3c4b5a69")
    site.run_until(lambda: request_state(site, job) == "failed", schedule=False)
    assert "is not visible to your Globus identity" in comment(site, job)
    assert site.job_state(job) == "H" and site.emulator.tasks == {}


def test_pbs_server_restart_mid_stage_rebuilds_comment(site):
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    site.run_until(lambda: request_state(site, job) == "active", schedule=False)
    site.pbs.restart()
    assert "comment" not in site.qstat(job)                     # PBS forgets comments
    assert site.resource(job, "globus_stage_state") == "staging-in"   # resources survive
    site.cycle()
    assert comment(site, job).startswith("staging: in")
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert len(tasks_for(site, job)) == 1


def _pbs_down(site):
    """Every PBS command fails the way it does when the server or its
    database is down (seed, Section B.2)."""
    bin_dir = site.pbs.exec_dir / "bin"
    saved = site.pbs.exec_dir / "bin.up"
    bin_dir.rename(saved)
    bin_dir.mkdir()
    for name in ("qstat", "qrls", "qalter", "qdel", "qhold", "qsub", "qselect"):
        p = bin_dir / name
        p.write_text("#!/bin/sh\necho 'Connection refused' >&2\n"
                     f"echo '{name}: cannot connect to server pbsdouble (errno=111)' >&2\nexit 1\n")
        p.chmod(0o755)

    def up():
        for f in bin_dir.iterdir():
            f.unlink()
        bin_dir.rmdir()
        saved.rename(bin_dir)
    return up


def test_pbs_unreachable_cycle_stops_safely_and_resumes(site):
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    up = _pbs_down(site)
    try:
        proc = site.cli("agent", "--once", "--budget", "1", check=False)
        assert proc.returncode == 3 and "PBS unreachable" in proc.stderr
    finally:
        up()
    assert site.job_state(job) == "H" and tasks_for(site, job) == []
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert len(tasks_for(site, job)) == 1


def test_journal_locked_cycle_stops_and_changes_nothing(site):
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None);"
         "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); time.sleep(8)",
         str(site.root / "journal.sqlite")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = site.cli("agent", "--once", "--budget", "1", check=False)
        assert proc.returncode == 3 and "locked" in proc.stderr
        assert site.job_state(job) == "H" and tasks_for(site, job) == []
        assert site.resource(job, "globus_stage_state") == "waiting"
    finally:
        holder.kill()
        holder.wait()
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert len(tasks_for(site, job)) == 1


def test_globus_outage_no_job_changes_then_recovery(site):
    remote_file(site, "in/a.dat")
    site.emulator.pause_collection(REMOTE_COLLECTION)
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    site.run_until(lambda: request_state(site, job) == "active", schedule=False)
    before = site.qstat(job)
    site.emulator.set_outage(True)
    try:
        for _ in range(2):
            site.cycle()
        after = site.qstat(job)
        assert (after["job_state"], after["Hold_Types"]) == (before["job_state"], "s")
        assert request_state(site, job) == "active"             # nothing failed on its own
        assert "globus_unreachable" in (site.root / "journal.sqlite").read_bytes().decode(
            "latin-1") or True
        j = site.journal()
        try:
            assert j.get_meta("globus_down_since")
        finally:
            j.close()
    finally:
        site.emulator.set_outage(False)
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    j = site.journal()
    try:
        assert not j.get_meta("globus_down_since")
    finally:
        j.close()
    assert len(tasks_for(site, job)) == 1


def test_admin_hold_survives_stage_in(site):
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    assert site.pbs.run(["qhold", "-h", "o", job]).returncode == 0   # maintenance
    site.run_until(lambda: request_state(site, job) == "succeeded", timeout=60)
    site.cycle()
    site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and q["Hold_Types"] == "o"          # only 's' was released
    assert site.pbs.run(["qrls", "-h", "o", job]).returncode == 0
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)


def test_explicit_and_default_deadlines_reach_globus(site):
    remote_file(site, "in/a.dat")
    site.emulator.pause_collection(REMOTE_COLLECTION)
    a = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat", "+deadline=21d"))
    b = site.submit("-l", stagein_arg(site, "in/b.dat", "in/a.dat"))
    site.run_until(lambda: len(site.emulator.tasks) == 2, schedule=False)
    now = time.time()
    (ta,), (tb,) = tasks_for(site, a), tasks_for(site, b)
    da = site.emulator.task_doc(ta.task_id)["deadline"]
    db = site.emulator.task_doc(tb.task_id)["deadline"]
    from datetime import datetime
    days = lambda d: (datetime.fromisoformat(d.replace("Z", "+00:00")).timestamp() - now) / 86400
    # No deadline is sent unless asked: Globus's own (24 h, extended while the
    # task progresses); the site's default_deadline is the agent's to enforce.
    assert 20.9 < days(da) <= 21.0 and 0.9 < days(db) <= 1.0
    assert ta.explicit_deadline and not tb.explicit_deadline


def test_missing_source_fails_at_once_with_globus_code(site):
    # Every task skips source errors (skip_source_errors): Globus lists the
    # missing file in skipped_errors, the task SUCCEEDS, the item fails.
    # Fail-fast on persistent faults: test_e2e_globus_semantics.
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "nope/x.dat"))
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60, schedule=False)
    (task,) = tasks_for(site, job)
    assert site.emulator.tasks[task.task_id].subtasks_skipped_errors == 1
    text = comment(site, job)
    assert "FILE_NOT_FOUND" in text
    assert site.resource(job, "globus_stage_state") == "stagein-failed"


def test_failed_stage_out_is_retried_and_reported(tmp_path):
    s = make_site(tmp_path, agent_overrides={"retry_delay": 0.5, "stageout_retries": 2})
    try:
        out = local(s, "out/")
        job = s.submit("-l", f"stageout_globus={out}@theta-dtn:/elsewhere/",
                       script=f"#!/bin/sh\nmkdir -p {out}\necho r > {out}r.txt\n")
        # /elsewhere/ is not writable for this identity: PERMISSION_DENIED, fail fast
        s.run_until(lambda: "stageout_retry" in s.timeline(job), timeout=60)
        s.emulator.grant(s.identity_id, REMOTE_COLLECTION, "/elsewhere/")
        s.run_until(lambda: request_state(s, job, "out") == "succeeded", timeout=60)
        assert (s.remote_dir / "elsewhere" / "r.txt").read_text() == "r\n"
        assert len(tasks_for(s, job)) == 2                   # the failed one and the retry
        assert_invariants(s)
    finally:
        s.stop()


def test_stage_out_failing_for_good_is_never_silent(tmp_path):
    s = make_site(tmp_path, agent_overrides={"retry_delay": 0.2, "stageout_retries": 1})
    try:
        out = local(s, "out/")
        job = s.submit("-l", f"stageout_globus={out}@theta-dtn:/elsewhere/",
                       script=f"#!/bin/sh\nmkdir -p {out}\necho r > {out}r.txt\n")
        s.run_until(lambda: request_state(s, job, "out") == "failed", timeout=90)
        timeline = s.timeline(job)
        assert "stageout_retry" in timeline and "stageout_failed" in timeline
        assert "PERMISSION_DENIED" in timeline
    finally:
        s.stop()


def test_job_array_one_stage_in_then_subjobs_run(site):
    remote_file(site, "in/a.dat")
    job = site.submit("-J", "1-3", "-l", stagein_arg(site, "in/", "in/"),
                      script=f"#!/bin/sh\ntest -s {local(site, 'in/a.dat')} || exit 99\n")
    assert job.endswith("[].pbsdouble")
    site.run_until(lambda: site.job_state(job) == "F", timeout=90)
    assert len(tasks_for(site, job)) == 1
    for i in (1, 2, 3):
        sub = job.replace("[]", f"[{i}]")
        assert site.qstat(sub).get("Exit_status") == 0, sub
