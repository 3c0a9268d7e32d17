"""Opt-in whole scenarios on a REAL OpenPBS server on this host (issue 10).

The suite is installed into the real server with a site config pointing at the
bundled Globus emulator (in this process, on loopback); the agent is what the
periodic hook starts (the serving agent); jobs are submitted as an ordinary user
(``su``).  One install for the module: uninstalled, the agent stopped and every
job purged at the end.  Same opt-in as ``test_real_pbs.py``:

    GLOBUS_STAGING_REAL_PBS=1 PATH=/opt/pbs/bin:$PATH flock /tmp/realpbs.lock \\
        .venv/bin/python -m pytest tests/real/test_real_pbs_scenarios.py -v

What was seen is recorded in ``docs/real-pbs.md``.
"""
import os
import sys
import tempfile
from pathlib import Path

import pytest

from pbs_globus_staging_sim.realpbs import RealSite, skip_reason
from pbs_globus_staging_sim.site import REMOTE_COLLECTION, SITE_COLLECTION
from test_real_pbs import REPO, bindir, qmgr, run, suite_installed

USER = os.environ.get("GLOBUS_STAGING_REAL_PBS_USER", "alice")
pytestmark = pytest.mark.skipif(skip_reason(USER) is not None, reason=str(skip_reason(USER)))

CHECKS_INPUT = "#!/bin/sh\ntest -s {path} || exit 99\n"


@pytest.fixture(scope="module")
def real():
    if suite_installed():
        pytest.skip("the suite is already installed on this server: these scenarios install "
                    "their own and would replace it")
    root = Path(tempfile.mkdtemp(prefix="gst-real-", dir="/tmp"))
    site = RealSite(root, user=USER).start()
    try:
        site.wait_agent(timeout=30)              # first periodic run starts the agent
        yield site
    finally:
        site.stop()
    assert not suite_installed()


def ended(site, job, timeout=90):
    try:
        site.wait(lambda: site.job_state(job) == "F", timeout=timeout, what=f"{job} finished")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{site.timeline(job)}\n{site.qstat(job)}\n"
                             f"{site.server_log_tail(40)}") from None
    return site.qstat(job)


def test_real_latency_bench():
    """The issue-10 targets, on this server: a short run of the bench, on a fresh site
    of its own (first in the module, before the shared site is installed)."""
    import contextlib
    import io
    sys.path.insert(0, str(REPO / "bench"))
    import bench_real_pbs_latency as bench
    if suite_installed():
        pytest.skip("the suite is already installed on this server")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = bench.main(["--jobs", "10", "--outs", "10", "--idle", "5"])
    print(out.getvalue())
    assert rc == 0, out.getvalue()
    assert not suite_installed()


def test_real_scenario_a_stage_in_run_stage_out(real):
    real.remote_file("a/in/x.dat", "alpha\n")
    real.user_dir("a/out")
    script = (f"#!/bin/sh\ntest -s {real.local('a/x.dat')} || exit 99\n"
              f"cp {real.local('a/x.dat')} {real.local('a/out/')}y.dat\n")
    job = real.submit("-l", real.stagein_arg("a/", "a/in/"),
                      "-l", real.stageout_arg("a/out/", "a/results/"), script=script)
    q = real.qstat(job)
    assert q["job_state"] == "H" and q["Hold_Types"] == "s"
    assert ended(real, job)["Exit_status"] == 0
    real.wait(lambda: real.request_state(job, "out") == "succeeded", timeout=30,
              what="stage-out")
    assert (real.remote_dir / real.user / "a" / "results" / "y.dat").read_text() == "alpha\n"


def test_real_scenario_b_failed_stage_in_never_runs(real):
    job = real.submit("-l", real.stagein_arg("b/x.dat", "b/missing.dat"))
    real.wait(lambda: real.request_state(job) == "failed", timeout=60, what="stage-in failed")
    real.wait(lambda: real.qstat(job).get("Resource_List", {}).get("globus_stage_state")
              == "stagein-failed", timeout=15, what="state word")
    q = real.qstat(job)
    assert q["job_state"] == "H" and "stime" not in q
    assert q["comment"].startswith("staging: stage-in FAILED")


def test_real_scenario_b_onfail_delete_says_why(real):
    job = real.submit("-l", real.stagein_arg("b2/x.dat", "b2/missing.dat", "+onfail=delete"))
    q = ended(real, job)
    assert "stime" not in q and "Exit_status" not in q
    assert q["comment"].startswith("staging: stage-in FAILED (job deleted): ")
    assert q["comment"].endswith(" and terminated")


def test_real_scenario_c_expired_credential_resumes(real):
    real.remote_file("c/big.dat", "x" * 3_000_000)
    real.emulator.set_rate(2e5)
    try:
        job = real.submit("-l", real.stagein_arg("c/", "c/"))
        real.wait(lambda: real.request_state(job) == "active", timeout=20, what="active")
        real.emulator.expire_credential(real.identity_id, REMOTE_COLLECTION)
        real.wait(lambda: real.request_state(job) == "user-action", timeout=30,
                  what="user-action")
        q = real.qstat(job)
        assert q["job_state"] == "H" and "globus-staging login" in q["comment"]
        real.emulator.renew_credential(real.identity_id, REMOTE_COLLECTION)
    finally:
        real.emulator.set_rate(5e6)
    assert ended(real, job)["Exit_status"] == 0
    assert len(real.tasks_for(job)) == 1                  # resumed, not resubmitted


def test_real_scenario_d_lost_queue_resubmission_adopts(real):
    real.emulator.pause_collection(REMOTE_COLLECTION)
    try:
        real.remote_file("d/a.dat")
        args = ("-l", real.stagein_arg("d/", "d/"))
        first = real.submit(*args)
        real.wait(lambda: real.request_state(first) == "active", timeout=20, what="active")
        assert real.run("qdel", first).returncode == 0        # the queue is lost
        real.wait(lambda: "job_deleted" in [e.kind for e in real.events(first)], timeout=30,
                  what="agent notices the deletion")
        second = real.submit(*args, script=CHECKS_INPUT.format(path=real.local("d/a.dat")))
        real.wait(lambda: "stagein_adopted" in [e.kind for e in real.events(second)],
                  timeout=20, what="adopted")
    finally:
        real.emulator.resume_collection(REMOTE_COLLECTION)
    assert ended(real, second)["Exit_status"] == 0
    assert len(real.tasks_for(second)) == 1 and real.tasks_for(second) == real.tasks_for(first)


def _out_of_band(site, rel):
    import globus_sdk
    from pbs_globus_staging_sim.site import NATIVE_CLIENT
    tokens = site.emulator.issue_tokens(site.identity_id, client_id=NATIVE_CLIENT)
    tc = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(tokens["access_token"]),
        base_url=site.emulator.url + "/")
    td = globus_sdk.TransferData(REMOTE_COLLECTION, SITE_COLLECTION, label="by hand")
    td.add_item(f"/{site.user}/{rel}", f"/{site.user}/{rel}", recursive=True)
    return tc.submit_transfer(td)["task_id"]


def test_real_scenario_e_graft(real):
    real.remote_file("e/oob.dat", "out of band\n")
    real.emulator.pause_collection(REMOTE_COLLECTION)
    try:
        task = _out_of_band(real, "e/")
        job = real.submit("-l", f"stagein_globus=task={task}",
                          script=CHECKS_INPUT.format(path=real.local("e/oob.dat")))
        real.wait(lambda: "stagein_grafted" in [e.kind for e in real.events(job)], timeout=20,
                  what="grafted")
        assert real.job_state(job) == "H"
    finally:
        real.emulator.resume_collection(REMOTE_COLLECTION)
    assert ended(real, job)["Exit_status"] == 0


def test_real_resubmission_after_success_gets_data_again(real):
    real.remote_file("r/in.dat", "input\n")
    real.user_dir("r")                     # the job may remove what is staged into it
    path = real.local("r/in.dat")
    script = f"#!/bin/sh\ntest -s {path} || exit 99\nrm -f {path}\n"
    first = real.submit("-l", real.stagein_arg("r/", "r/"), script=script)
    assert ended(real, first)["Exit_status"] == 0
    second = real.submit("-l", real.stagein_arg("r/", "r/"), script=script)
    assert ended(real, second)["Exit_status"] == 0, real.timeline(second)
    assert "stagein_adopted" not in [e.kind for e in real.events(second)]
    (task,) = real.tasks_for(second)
    assert task.sync_level == 3 and task.files_transferred == 1


def test_real_stageout_only_job_of_under_a_second(real):
    out = real.local("s/")
    job = real.submit("-l", real.stageout_arg("s/", "s-results/"),
                      script=f"#!/bin/sh\nmkdir -p {out}\necho quick > {out}q.txt\n")
    q = ended(real, job, timeout=30)
    assert q["Exit_status"] == 0
    real.wait(lambda: real.request_state(job, "out") == "succeeded", timeout=20,
              what="stage-out")
    assert (real.remote_dir / real.user / "s-results" / "q.txt").read_text() == "quick\n"
    j = real.journal()
    try:
        obit = j.obit(job)
    finally:
        j.close()
    assert obit.stageout and obit.owner == real.user     # recorded by the jobobit hook


def test_real_server_restart_mid_stage(real):
    real.emulator.pause_collection(REMOTE_COLLECTION)
    try:
        real.remote_file("m/a.dat", "mid\n")
        job = real.submit("-l", real.stagein_arg("m/", "m/"),
                          script=CHECKS_INPUT.format(path=real.local("m/a.dat")))
        real.wait(lambda: real.request_state(job) == "active", timeout=20, what="active")
        pid = real.agent_pid()
        proc = run(["/etc/init.d/pbs", "restart"], timeout=180)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        real.wait(lambda: run([bindir() / "qstat", "-B"]).returncode == 0, timeout=60,
                  what="server back")
        q = real.qstat(job)
        assert q["job_state"] == "H" and q["Hold_Types"] == "s"
        # Right after a restart the node is not free yet ("Not Running: Not enough free
        # nodes available") and nothing triggers the next scheduling cycle for up to
        # scheduler_iteration (600 s): a job released then waits.  Wait for the node.
        real.wait(lambda: "state = free" in run([bindir() / "pbsnodes", "-a"]).stdout,
                  timeout=120, what="node free again")
    finally:
        real.emulator.resume_collection(REMOTE_COLLECTION)
    assert ended(real, job, timeout=60)["Exit_status"] == 0
    assert len(real.tasks_for(job)) == 1
    assert real.agent_pid() == pid        # the serving agent rode out the restart
