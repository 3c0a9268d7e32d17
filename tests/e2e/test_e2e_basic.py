"""End to end: scenario A (success), B (failed stage-in), stage-out, and the
guards, through the hooks in the PBS double, the real SDK and the emulator."""
from e2e_helpers import (REMOTE_COLLECTION, local, remote_file, request_state, site,  # noqa: F401
                         stagein_arg, tasks_for)


def check_input_script(path):
    # The job proves it ran with its data (exit 99 otherwise).
    return f"#!/bin/sh\ntest -s {path} || exit 99\ncp {path} {path}.seen\n"


def test_scenario_a_stage_in_run_stage_out(site):
    remote_file(site, "in/a.dat", "alpha\n" * 1000)
    remote_file(site, "in/b.dat", "beta\n")
    out_dir = local(site, "out/")
    script = (f"#!/bin/sh\ntest -s {local(site, 'in/a.dat')} || exit 99\nmkdir -p {out_dir}\n"
              f"cat {local(site, 'in/')}*.dat | wc -l > {out_dir}count\n"
              f"echo $GLOBUS_STAGEIN_TASKS > {out_dir}tasks\n")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"),
                      "-l", f"stageout_globus={out_dir}@theta-dtn:~/{site.user}/results/",
                      script=script)
    q = site.qstat(job)
    assert q["job_state"] == "H" and q["Hold_Types"] == "s"
    assert site.resource(job, "globus_stage_state") == "waiting"
    result = site.remote_dir / site.user / "results" / "count"
    site.run_until(lambda: request_state(site, job, "out") == "succeeded", timeout=60)
    assert result.read_text().strip() == "1001"
    final = site.qstat(job)
    assert final["job_state"] == "F" and final["Exit_status"] == 0
    # the job was told which Globus task brought its data
    stagein_task = site.resource(job, "globus_stage_tasks")
    assert (site.site_dir / site.user / "out" / "tasks").read_text().strip() == stagein_task
    assert len(tasks_for(site, job)) == 2          # one stage-in, one stage-out
    timeline = site.timeline(job)
    for word in ("stagein_submitted", "stagein_succeeded", "released", "job_ended",
                 "stageout_submitted", "stageout_succeeded"):
        assert word in timeline


def test_job_without_staging_is_untouched(site):
    job = site.submit(script="#!/bin/sh\nexit 0\n")
    q = site.qstat(job)
    assert q["job_state"] == "Q" and q.get("Hold_Types") == "n"
    assert "comment" not in q and "globus_stage_state" not in q.get("Resource_List", {})
    site.cycle()
    site.schedule()
    site.pbs.wait_jobs(timeout=20)
    assert site.qstat(job)["job_state"] == "F"
    j = site.journal()
    try:
        assert j.get_job(job) is None
    finally:
        j.close()


def test_bad_request_refused_with_one_qsub_line(site):
    proc = site.qsub("-l", "stagein_globus=/nowhere", check=False)
    assert proc.returncode == 32
    assert proc.stderr == ("qsub: stagein_globus: item 1 '/nowhere' has no '@'; expected "
                           "LOCAL@COLLECTION:REMOTE, e.g. /lus/alice/in/@theta-dtn:/~/in/\n")
    proc = site.qsub("-l", f"stagein_globus={local(site, 'x')}@nowhere-dtn:/x", check=False)
    assert proc.returncode == 32 and "unknown collection 'nowhere-dtn'" in proc.stderr
    assert "theta-dtn" in proc.stderr
    assert site.pbs.run(["qstat"]).stdout.strip() == ""          # no job was created


def test_owner_cannot_release_a_staged_job(site):
    job = site.submit("-l", f"stagein_globus={site.site_dir}/alice/in/@theta-dtn:~/alice/in/",
                      user="alice")
    proc = site.pbs.run(["qrls", "-h", "s", job], user="alice")
    assert proc.returncode == 159 and "Unauthorized Request" in proc.stderr
    assert site.pbs.run(["qrls", job], user="alice").returncode == 0
    assert site.qstat(job)["Hold_Types"] == "s"


def test_qalter_of_request_after_staging_began_is_refused(site):
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    # before the agent has started anything, the user may still change it
    ok = site.pbs.run(["qalter", "-l", stagein_arg(site, "in/b.dat", "in/a.dat"), job])
    assert ok.returncode == 0, ok.stderr
    bad = site.pbs.run(["qalter", "-l", "stagein_globus=junk", job])
    assert bad.returncode != 0 and bad.stderr.startswith("qalter: stagein_globus: item 1 'junk'")
    site.cycle()
    assert site.resource(job, "globus_stage_state") == "staging-in"
    late = site.pbs.run(["qalter", "-l", stagein_arg(site, "in/c.dat", "in/a.dat"), job])
    assert late.returncode != 0
    assert "cannot be changed once staging has started (state staging-in)" in late.stderr
    assert site.resource(job, "stagein_globus").startswith(local(site, "in/b.dat"))


def test_runjob_guard_reholds_a_job_released_by_hand(site):
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"),
                      script=check_input_script(local(site, "in/a.dat")))
    site.cycle()
    assert site.pbs.run(["qrls", "-h", "s", job]).returncode == 0     # an admin, by hand
    assert site.qstat(job)["job_state"] == "Q"
    site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and q["Hold_Types"] == "s"
    assert q["comment"].startswith("Not Running: PBS Error: stagein_globus: stage-in not "
                                   "complete (state staging-in)")
    assert "stime" not in q
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert site.qstat(job)["Exit_status"] == 0


def test_scenario_b_failed_stage_in_job_and_stage_out_never_run(site):
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "missing.dat"),
                      "-l", f"stageout_globus={local(site, 'out/')}@theta-dtn:~/{site.user}/r/",
                      script="#!/bin/sh\ntouch /tmp/should-not-run-$$\n")
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60)
    for _ in range(2):
        site.cycle()
        site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and "s" in q["Hold_Types"] and "stime" not in q
    assert site.resource(job, "globus_stage_state") == "stagein-failed"
    # Globus's own words reach the user
    assert "FILE_NOT_FOUND" in q["comment"] or "not transferred" in q["comment"]
    assert request_state(site, job, "out") == "skipped"
    assert len(tasks_for(site, job)) == 1          # the stage-in only; no stage-out


def test_failed_stage_in_with_onfail_delete(site):
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "missing.dat", "+onfail=delete"))
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    q = site.qstat(job)
    assert "stime" not in q and "Exit_status" not in q
    assert "stagein_failed" in site.timeline(job) and "deleted" in site.timeline(job)
    # The history comment says why (PBS appends "and terminated" to the last one).
    assert q["comment"].startswith("staging: stage-in FAILED (job deleted): ")
    assert q["comment"].endswith(" and terminated") and "missing.dat" in q["comment"]


def test_failed_stage_in_submits_cleanup_job_as_owner(site, tmp_path):
    marker = site.site_dir / site.user / "cleaned"
    cleanup = tmp_path / "cleanup.sh"
    cleanup.write_text(f"#!/bin/sh\necho $GLOBUS_STAGEIN_FAILED_JOB > {marker}\n")
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "missing.dat", f"+cleanup={cleanup}"))
    site.run_until(lambda: marker.exists(), timeout=60)
    assert marker.read_text().strip() == job
    assert site.job_state(job) == "F"
    assert "cleanup_submitted" in site.timeline(job)
