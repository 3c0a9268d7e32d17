"""Kill the agent (SIGKILL) right after every side effect of a job's whole
staging life, one kill per run, and check that the next runs repair it: one
Globus task per request, the job released only after its stage-in, the
stage-out done once, and the design's invariants hold."""
import json
import subprocess
import sys

from e2e_helpers import local, make_site, remote_file, request_state, tasks_for

from pbs_globus_staging_sim.invariants import violations


def run_agent(site, counter, crash_at):
    return subprocess.run([sys.executable, "-m", "pbs_globus_staging_sim.crashpoint",
                           "--config", str(site.config_path), "--counter", str(counter),
                           "--crash-at", str(crash_at), "--budget", "0.6"],
                          env=site.env(), capture_output=True, text=True, timeout=120)


def lifecycle(site, n, counter, crash_at):
    """One job's life (stage-in, run, stage-out) with the agent killed once."""
    remote_file(site, f"in{n}/a.dat", f"run {n}\n" * 50)
    job = site.submit("-l", f"stagein_globus={local(site, f'in{n}/')}@theta-dtn:~/{site.user}/in{n}/",
                      "-l", f"stageout_globus={local(site, f'out{n}/')}@theta-dtn:~/{site.user}/out{n}/",
                      script=(f"#!/bin/sh\ntest -s {local(site, f'in{n}/a.dat')} || exit 99\n"
                              f"mkdir -p {local(site, f'out{n}')}\n"
                              f"cp {local(site, f'in{n}/a.dat')} {local(site, f'out{n}/r.dat')}\n"))
    for _ in range(40):
        proc = run_agent(site, counter, crash_at)
        assert proc.returncode in (0, 3, -9), proc.stderr[-2000:]
        site.schedule()
        site.pbs.wait_jobs(timeout=30)
        if request_state(site, job, "out") in ("succeeded", "failed", "skipped"):
            break
    return job


def test_agent_killed_after_every_step_of_a_cycle(tmp_path):
    site = make_site(tmp_path, poll_interval=0.2, bytes_per_second=1e6)
    try:
        base = tmp_path / "steps-0.json"
        job0 = lifecycle(site, 0, base, 0)
        assert request_state(site, job0, "out") == "succeeded"
        labels = json.loads(base.read_text())["labels"]
        total = len(labels)
        assert total >= 15 and any(l == "globus:submit" for l in labels) \
            and any(l == "pbs:qrls" for l in labels)
        exercised = 0
        for n in range(1, total + 1):
            counter = tmp_path / f"steps-{n}.json"
            job = lifecycle(site, n, counter, n)
            state = json.loads(counter.read_text())
            crashed = state["crashed_at"]
            context = f"killed after step {n} ({crashed}) of {total}: {labels[n - 1]}"
            if crashed is None:
                # Timing (how many polls a transfer takes) varies the step count a
                # little: this life simply had no step n. Its end state still counts.
                assert state["steps"] < n, context
            else:
                exercised += 1
            q = site.qstat(job)
            assert q.get("job_state") == "F" and q.get("Exit_status") == 0, context
            assert request_state(site, job, "in") == "succeeded", context
            assert request_state(site, job, "out") == "succeeded", context
            assert (site.remote_dir / site.user / f"out{n}" / "r.dat").read_text() \
                == f"run {n}\n" * 50, context
            assert len(tasks_for(site, job)) == 2, (context, [t.label for t in tasks_for(site, job)])
            assert violations(site) == [], context
        assert exercised >= total - 5, f"only {exercised} of {total} kill points reached"
    finally:
        site.stop()
