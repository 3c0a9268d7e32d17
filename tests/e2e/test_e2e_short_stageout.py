"""Issue 10.2: a stage-out-only job that ends before the agent ever looks at
PBS still has its results sent.  Nothing holds such a job, so on a real server
it often runs and ends between two agent passes; the jobobit hook records the
request with the exit status (one durable transaction), and the agent works
from that record alone -- also after a PBS server restart, and after an agent
killed while registering it."""
from e2e_helpers import local, make_site, request_state, site  # noqa: F401

RESULT = "#!/bin/sh\nmkdir -p {out}\necho done > {out}r.txt\nexit {rc}\n"


def _short_job(site, rel="out/", rc=0):
    out = local(site, rel)
    job = site.submit("-l", f"stageout_globus={out}@theta-dtn:~/{site.user}/results/",
                      script=RESULT.format(out=out, rc=rc))
    # The scheduler runs it and it ends before any agent run has seen it.
    site.schedule()
    site.pbs.wait_jobs(timeout=20)
    assert site.job_state(job) == "F"
    return job


def _never_seen(site, job):
    j = site.journal()
    try:
        assert j.requests_for_job(job) == []
        obit = j.obit(job)
        assert obit is not None and obit.stageout and obit.owner == site.user
    finally:
        j.close()


def test_stageout_only_job_that_ended_unseen_is_staged_out(site):
    job = _short_job(site)
    _never_seen(site, job)
    site.run_until(lambda: request_state(site, job, "out") == "succeeded", timeout=60,
                   schedule=False)
    assert (site.remote_dir / site.user / "results" / "r.txt").read_text() == "done\n"
    timeline = site.timeline(job)
    assert "job known from its end" in timeline and "stageout_succeeded" in timeline


def test_unseen_job_with_failing_exit_skips_per_policy(site):
    job = _short_job(site, rc=3)
    site.run_until(lambda: request_state(site, job, "out") == "skipped", timeout=60,
                   schedule=False)
    assert "exit status 3 does not match when=ok" in site.timeline(job)
    assert not (site.remote_dir / site.user / "results").exists()


def test_recorded_stageout_survives_a_server_restart(site):
    job = _short_job(site)
    site.pbs.restart()                            # PBS forgets comments, hook modules
    site.run_until(lambda: request_state(site, job, "out") == "succeeded", timeout=60,
                   schedule=False)
    assert (site.remote_dir / site.user / "results" / "r.txt").exists()


def test_stageout_changed_by_qalter_after_registration_uses_the_final_value(site):
    out = local(site, "out2/")
    job = site.submit("-h", "-l", f"stageout_globus={out}@theta-dtn:~/{site.user}/first/",
                      script=f"#!/bin/sh\nmkdir -p {out}\necho v > {out}v.txt\n")
    site.cycle()                                  # the agent registers the first value
    alter = site.pbs.run(["qalter", "-l",
                          f"stageout_globus={out}@theta-dtn:~/{site.user}/second/", job])
    assert alter.returncode == 0, alter.stderr
    assert site.pbs.run(["qrls", "-h", "u", job]).returncode == 0
    site.schedule()
    site.pbs.wait_jobs(timeout=20)
    site.run_until(lambda: request_state(site, job, "out") == "succeeded", timeout=60,
                   schedule=False)
    assert (site.remote_dir / site.user / "second" / "v.txt").exists()
    assert not (site.remote_dir / site.user / "first").exists()
