"""Issue 10.1: a resubmitted job never starts on the strength of an earlier
job's finished transfer.  The earlier job ran and removed its inputs (as jobs
do); the same script submitted again must get its data again -- by a new
transfer with a sync level, so what is in place is skipped, not trusted.  The
lost-queue case (scenario D: the first job left PBS without ever running) may
still adopt the finished transfer.  The ``site`` fixture checks the invariants
(among them: a job starts only on a transfer that ended after it was submitted)."""
from e2e_helpers import (local, make_site, remote_file, request_state, site,  # noqa: F401
                         stagein_arg, tasks_for)
from pbs_globus_staging_sim.invariants import violations

# The job checks its own input, uses it, then removes it.
SCRIPT = """#!/bin/sh
test -s {path} || exit 99
cat {path} > {path}.seen
rm -f {path}
"""


def _job_script(site, rel):
    return SCRIPT.format(path=local(site, rel))


def test_resubmission_after_success_gets_its_data_again(site):
    remote_file(site, "in/a.dat", "input\n")
    args = ("-l", stagein_arg(site, "in/", "in/"))
    script = _job_script(site, "in/a.dat")
    first = site.submit(*args, script=script)
    site.run_until(lambda: site.job_state(first) == "F", timeout=60)
    assert site.qstat(first)["Exit_status"] == 0
    assert not (site.site_dir / site.user / "in" / "a.dat").exists()   # the job removed it

    second = site.submit(*args, script=script)
    site.run_until(lambda: site.job_state(second) == "F", timeout=60)
    assert site.qstat(second)["Exit_status"] == 0, site.timeline(second)  # 99: no input
    timeline = site.timeline(second)
    assert "stagein_adopted" not in timeline
    (task,) = tasks_for(site, second)
    assert task.sync_level == 3                   # checksum: only what differs is copied
    assert task.files_transferred == 1 and task.files_skipped == 0
    assert len(site.emulator.tasks) == 2


def test_resubmission_with_data_in_place_is_synced_not_copied(site):
    remote_file(site, "in/b.dat", "kept\n" * 100)
    args = ("-l", stagein_arg(site, "in/", "in/"))
    first = site.submit(*args)                    # leaves its input in place
    site.run_until(lambda: site.job_state(first) == "F", timeout=60)
    second = site.submit(*args)
    site.run_until(lambda: site.job_state(second) == "F", timeout=60)
    (task,) = tasks_for(site, second)
    # Globus compared the checksums and skipped the file: the positive evidence.
    assert task.sync_level == 3 and task.files_skipped == 1 and task.files_transferred == 0
    assert site.qstat(second)["Exit_status"] == 0


def test_lost_queue_may_adopt_a_finished_transfer_of_a_job_that_never_ran(site):
    from e2e_helpers import REMOTE_COLLECTION
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/c.dat")
    args = ("-l", stagein_arg(site, "in/", "in/"))
    first = site.submit(*args)
    site.run_until(lambda: request_state(site, first) == "active", schedule=False)
    assert site.pbs.run(["qdel", first]).returncode == 0       # the queue is lost
    site.cycle()
    site.emulator.resume_collection(REMOTE_COLLECTION)
    (task,) = tasks_for(site, first)
    site.run_until(lambda: site.emulator.tasks[task.task_id].status == "SUCCEEDED",
                   schedule=False)
    site.cycle()
    second = site.submit(*args)                                # ...and resubmitted
    site.run_until(lambda: site.job_state(second) == "F", timeout=60)
    assert "adopted Globus task" in site.timeline(second)
    assert len(site.emulator.tasks) == 1
    assert site.qstat(second)["Exit_status"] == 0


def test_invariant_flags_a_start_on_a_transfer_older_than_the_job(site):
    """The checker itself: rewrite history so a job's only transfer ended
    before the job was submitted, and the checker must say so."""
    remote_file(site, "in/d.dat")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert violations(site) == []
    j = site.journal()
    try:
        (t,) = j.transfers()
        j.update_transfer(t.transfer_id, completed=t.completed - 3600)
    finally:
        j.close()
    (problem,) = violations(site)
    assert f"{job} (submitted" in problem and "before it was submitted" in problem
    j = site.journal()
    try:
        j.update_transfer(t.transfer_id, completed=t.completed)
    finally:
        j.close()
