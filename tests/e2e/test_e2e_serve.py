"""Issue 10.3: the serving agent (``agent.serve``, the default).  The periodic
hook only keeps one long-lived agent alive; the queuejob and jobobit hooks
wake it through its FIFO, so a qsub's transfer starts and a job's results
leave within seconds, not a hook period.  Here the double's periodic hook
fires once (its period is far longer than the test), so every reaction seen
comes from the served agent."""
import json
import os
import signal
import time

import pytest

from e2e_helpers import local, make_site, remote_file, request_state, stagein_arg
from pbs_globus_staging import serve
from pbs_globus_staging_sim.invariants import assert_invariants


def _wait(pred, timeout=30.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    raise AssertionError(f"not reached in {timeout:.0f} s")


@pytest.fixture
def served(tmp_path):
    s = make_site(tmp_path, agent_overrides={"serve": True, "rescan_interval": 30})
    try:
        s.cycle()                                     # the periodic hook starts the agent
        _wait(lambda: serve.is_serving(s.root) not in (None, -1))
        s.pbs.start_scheduler_thread(interval=0.2)
        yield s
        assert_invariants(s)
    finally:
        pid = serve.is_serving(s.root)
        if pid and pid > 0:
            os.kill(pid, signal.SIGTERM)
            _wait(lambda: serve.is_serving(s.root) is None, timeout=20)
        s.stop()


def _event_time(site, job, kind):
    j = site.journal()
    try:
        times = [e.time for e in j.events(job) if e.kind == kind]
    finally:
        j.close()
    return times[0] if times else None


def test_served_agent_stages_in_within_seconds_of_qsub(served):
    site = served
    remote_file(site, "in/a.dat", "a\n")
    t0 = time.time()
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    _wait(lambda: _event_time(site, job, "stagein_submitted") is not None, timeout=10)
    assert _event_time(site, job, "stagein_submitted") - t0 < 3.0
    _wait(lambda: site.job_state(job) == "F", timeout=30)
    assert site.qstat(job)["Exit_status"] == 0


def test_served_agent_sends_a_short_jobs_results_within_seconds(served):
    site = served
    out = local(site, "out/")
    job = site.submit("-l", f"stageout_globus={out}@theta-dtn:~/{site.user}/res/",
                      script=f"#!/bin/sh\nmkdir -p {out}\necho r > {out}r.txt\n")
    _wait(lambda: site.job_state(job) == "F", timeout=20)
    ended = time.time()
    _wait(lambda: _event_time(site, job, "stageout_submitted") is not None, timeout=10)
    assert _event_time(site, job, "stageout_submitted") - ended < 3.0
    _wait(lambda: request_state(site, job, "out") == "succeeded", timeout=20)


def test_one_agent_per_site_and_status_shows_it(served):
    site = served
    pid = serve.is_serving(site.root)
    site.cycle()                                      # the hook again: nothing new starts
    time.sleep(0.5)
    assert serve.is_serving(site.root) == pid
    beat = json.loads((site.root / serve.HEARTBEAT_NAME).read_text())
    assert beat["pid"] == pid and beat["state"] == "serving"
    out = site.cli("status").stdout
    assert f"agent: serving, pid {pid}, heartbeat" in out


def test_killed_agent_is_restarted_by_the_periodic_hook(served):
    site = served
    pid = serve.is_serving(site.root)
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: serve.is_serving(site.root) is None, timeout=10)
    remote_file(site, "in/k.dat")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    site.cycle()                                      # the next period brings it back
    _wait(lambda: serve.is_serving(site.root) not in (None, pid), timeout=10)
    _wait(lambda: site.job_state(job) == "F", timeout=30)
