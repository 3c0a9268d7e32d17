"""The command line through a whole staging site (PBS double + hooks + Globus
emulator + the agent run by the periodic hook): ``show``/``status``/``check``
for a job's whole life, the admin actions, and their exit codes."""
import json
import re
import stat
import sys

import pytest
import yaml

from e2e_helpers import (local, make_site, remote_file, request_state, site,  # noqa: F401
                         stagein_arg)
from pbs_globus_staging_sim.site import REMOTE_COLLECTION, SITE_COLLECTION

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def cli_json(site, *args, rc=0):
    proc = site.cli(*args, "--json", check=False)
    assert proc.returncode == rc, proc.stderr
    return json.loads(proc.stdout)


def kinds(view):
    return [e["kind"] for e in view["timeline"]]


def emulator_task(site, task_id):
    return site.emulator.tasks[task_id]


def test_whole_life_in_text_and_json_then_status_and_check(site):
    site.reconfigure(alerts={"rules": [{"name": "done-log", "on": ["stagein_succeeded"],
                                        "do": ["log"]}]})
    remote_file(site, "in/a.dat", "alpha\n" * 1000)
    out_dir = local(site, "out/")
    job = site.submit("-l", stagein_arg(site, "in/", "in/"),
                      "-l", f"stageout_globus={out_dir}@theta-dtn:~/{site.user}/results/",
                      script=f"#!/bin/sh\nmkdir -p {out_dir}\necho result > {out_dir}r.txt\n")
    site.run_until(lambda: request_state(site, job, "out") == "succeeded", timeout=60)

    view = cli_json(site, "show", job)
    assert view["job_id"] == job and view["owner"] == site.user and view["exit_status"] == 0
    stin, stout = view["requests"]
    assert (stin["direction"], stin["state"]) == ("in", "succeeded")
    assert (stout["direction"], stout["state"]) == ("out", "succeeded")
    in_task, out_task = stin["transfers"][0]["task_id"], stout["transfers"][0]["task_id"]
    # the task ids are Globus's own, and the progress is what Globus reported
    assert emulator_task(site, in_task).label.startswith(f"PBS {job} stage-in")
    assert stin["transfers"][0]["files_transferred"] == 1
    assert stin["transfers"][0]["bytes_transferred"] == 6000
    order = kinds(view)
    life = ["submitted", "stagein_submitted", "stagein_succeeded", "released", "started",
            "job_ended", "stageout_submitted", "stageout_succeeded"]
    assert [k for k in order if k in life] == life, order
    assert [a["kind"] for a in view["alerts"]] == ["stagein_succeeded"]
    assert "alert_sent" in order
    submitted = next(e for e in view["timeline"] if e["kind"] == "stagein_submitted")
    assert submitted["task_id"] == in_task

    text = site.cli("show", job).stdout
    assert text.startswith(f"job {job}  owner {site.user}")
    assert f"Globus task {in_task}: succeeded  1/1 files  5.9 KiB" in text
    assert f"Globus task {out_task}: succeeded" in text
    assert "alerts sent: stagein_succeeded (done-log/log)" in text
    for word in life:
        assert f"  {word} " in text

    # a bare sequence number finds the job, as qstat does
    assert cli_json(site, "show", job.split(".")[0])["job_id"] == job
    # journal only (the job purged from PBS history): the same story, minus PBS's times
    assert "started" not in kinds(cli_json(site, "show", "--no-pbs", job))

    st = cli_json(site, "status")
    assert st["jobs_by_state"] == {"stage-in succeeded": [job], "stage-out succeeded": [job]}
    assert st["transfers_in_flight"] == [] and st["last_cycles"][0]["ok"] is True
    status_text = site.cli("status").stdout
    assert "stage-in succeeded" in status_text and "last agent cycle:" in status_text

    # the owner's summary was written for them, root-only like a token file
    summary = site.root / "users" / site.user / f"{job}.json"
    assert stat.S_IMODE(summary.stat().st_mode) == 0o600
    assert json.loads(summary.read_text())["requests"][1]["state"] == "succeeded"
    assert stat.S_IMODE((site.root / "journal.sqlite").stat().st_mode) == 0o600

    proc = site.cli("check", check=False)
    assert proc.returncode == 0, proc.stdout
    assert "FAIL" not in proc.stdout and "hook globus_staging_runjob: enabled" in proc.stdout
    report = cli_json(site, "check")
    assert report["ok"] is True and len(report["checks"]) >= 15

    # break the install: no runjob guard, and a site config the hooks have not seen
    assert site.pbs.run(["qmgr", "-c", "delete hook globus_staging_runjob"]).returncode == 0
    cfg = yaml.safe_load(site.config_path.read_text())
    cfg["collections"]["eagle"] = "11111111-2222-4333-8444-555555555555"
    site.config_path.write_text(yaml.safe_dump(cfg))
    proc = site.cli("check", check=False)
    assert proc.returncode == 1
    assert "FAIL  hook globus_staging_runjob: missing -> run: globus-staging upgrade" \
        in proc.stdout
    assert re.search(r"FAIL  hook globus_staging_queuejob: .*its config is older than the "
                     r"site config", proc.stdout)
    site.cli("upgrade", "--python", sys.executable, "--freq", "1", "--alarm", "30")
    assert site.cli("check", check=False).returncode == 0


def test_exit_codes_for_unknown_jobs_bad_usage_and_outages(site, tmp_path):
    proc = site.cli("show", "999.pbsdouble", check=False)
    assert proc.returncode == 4
    assert proc.stderr.startswith("globus-staging: no staging record for job 999.pbsdouble")
    assert site.cli("retry", "999.pbsdouble", check=False).returncode == 4
    proc = site.cli("release", "999.pbsdouble", check=False)        # --reason is required
    assert proc.returncode == 2 and "--reason" in proc.stderr
    proc = site.cli("release", "999.pbsdouble", "--reason", "  ", check=False)
    assert proc.returncode == 2 and "--reason TEXT is required" in proc.stderr
    proc = site.cli("adopt", "999.pbsdouble", "not-a-task", check=False)
    assert proc.returncode == 2 and "is not a Globus task id" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {poll_interval: soon}\n")
    proc = site.cli("--config", str(bad), "status", check=False)
    assert proc.returncode == 2 and "poll_interval" in proc.stderr
    assert "Traceback" not in proc.stderr

    # PBS unreachable while retrying a failed stage-in: exit 3, nothing changed
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "missing.dat"))
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60)
    cfg = yaml.safe_load(site.config_path.read_text())
    cfg["pbs"]["exec"] = str(tmp_path / "no-pbs-here")
    down = tmp_path / "pbs-down.yaml"
    down.write_text(yaml.safe_dump(cfg))
    proc = site.cli("--config", str(down), "retry", job, check=False)
    assert proc.returncode == 3 and "try again later" in proc.stderr
    assert request_state(site, job) == "failed"
    # nothing to retry in a succeeded/pending request: bad state, exit 1
    proc = site.cli("retry", job, "--direction", "in", check=False)
    assert proc.returncode == 0
    proc = site.cli("retry", job, check=False)
    assert proc.returncode == 1 and "only a failed or canceled one" in proc.stderr


def test_retry_after_failed_stage_in_then_the_job_runs(site):
    data = local(site, "in/x.dat")
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "in/late.dat"),
                      "-l", f"stageout_globus={local(site, 'out/')}@theta-dtn:"
                            f"~/{site.user}/r/",
                      script=f"#!/bin/sh\ntest -s {data} || exit 99\nmkdir -p "
                             f"{local(site, 'out/')}\ncp {data} {local(site, 'out/')}\n")
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60)
    site.cycle()
    assert site.resource(job, "globus_stage_state") == "stagein-failed"
    assert request_state(site, job, "out") == "skipped"
    first = cli_json(site, "show", job)["requests"][0]["transfers"][0]["task_id"]

    remote_file(site, "in/late.dat", "now it is there\n")
    out = cli_json(site, "retry", job)
    assert out == {"ok": True, "by": "root", "action": "retry", "job_id": job,
                   "direction": "in", "previous_state": "failed", "stageout_restored": True}
    q = site.qstat(job)
    assert q["job_state"] == "H" and "s" in q["Hold_Types"]
    assert site.resource(job, "globus_stage_state") == "waiting"
    assert request_state(site, job, "out") == "waiting-exit"

    site.run_until(lambda: request_state(site, job, "out") == "succeeded", timeout=60)
    assert site.qstat(job)["Exit_status"] == 0
    assert (site.remote_dir / site.user / "r" / "x.dat").read_text() == "now it is there\n"
    view = cli_json(site, "show", job)
    transfers = view["requests"][0]["transfers"]
    # The first Globus task itself SUCCEEDED, skipping the missing file (every task
    # is sent with skip_source_errors); the request failed on that skipped error.
    assert [(t["task_id"] == first, t["status"], t["current"]) for t in transfers] == \
        [(True, "succeeded", False), (False, "succeeded", True)]
    assert view["requests"][0]["attempts"] == 1
    retry = next(e for e in view["timeline"] if e["kind"] == "admin_retry")
    assert retry["by"] == "root" and "was failed" in retry["message"]
    assert "transfer_replaced" in kinds(view)
    # the failure alert went out before the retry, and stays in the history
    assert any(a["kind"] == "stagein_failed" for a in view["alerts"])
    text = site.cli("show", job).stdout
    assert f"Globus task {first}: succeeded" in text and "[replaced]" in text
    failed = next(e for e in view["timeline"] if e["kind"] == "stagein_failed")
    assert "FILE_NOT_FOUND" in failed["message"] and "/in/late.dat" in failed["message"]


@pytest.fixture
def forced_site(tmp_path):
    """A site without the end-of-test invariant check: ``release`` is the one
    action that lets a job start without its stage-in, on purpose (the
    checker counts only ``stagein_succeeded`` as permission to start)."""
    s = make_site(tmp_path)
    try:
        yield s
    finally:
        s.stop()


def test_release_is_forced_logged_and_not_undone_by_the_agent(forced_site):
    site = forced_site
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"),
                      script="#!/bin/sh\nexit 7\n")
    site.cycle()
    assert site.resource(job, "globus_stage_state") == "staging-in"
    out = cli_json(site, "release", job, "--reason", "data already on scratch (ticket 42)")
    assert out["hold_released"] is True and out["previous_state"] == "active"
    q = site.qstat(job)
    assert q["job_state"] == "Q" and q["Resource_List"]["globus_stage_state"] == "staged-in"
    assert "released by admin root: data already on scratch" in q["comment"]
    site.cycle()                            # the agent must not put the hold back
    site.schedule()
    site.pbs.wait_jobs(timeout=20)
    assert site.qstat(job)["Exit_status"] == 7
    view = cli_json(site, "show", job)
    ev = next(e for e in view["timeline"] if e["kind"] == "admin_release")
    assert ev["by"] == "root" and "ticket 42" in ev["message"]
    proc = site.cli("release", job, "--reason", "again", check=False)
    assert proc.returncode == 1 and "finished" in proc.stderr


def test_cancel_cancels_the_task_and_the_failure_policy_applies(site):
    site.emulator.pause_collection(REMOTE_COLLECTION)
    remote_file(site, "in/a.dat")
    job = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    site.cycle()
    task = cli_json(site, "show", job)["requests"][0]["transfers"][0]["task_id"]
    out = cli_json(site, "cancel", job, "--reason", "wrong data set")
    assert out["canceled_tasks"] == [task] and out["directions"] == ["in"]
    assert emulator_task(site, task).status in ("FAILED", "CANCELED")
    assert request_state(site, job) == "failed"
    site.cycle()
    q = site.qstat(job)
    assert q["job_state"] == "H" and "s" in q["Hold_Types"]
    assert site.resource(job, "globus_stage_state") == "stagein-failed"
    assert "canceled by admin root: wrong data set" in q["comment"]
    proc = site.cli("cancel", job, check=False)
    assert proc.returncode == 1 and "nothing to cancel" in proc.stderr


def test_adopt_an_existing_task_for_a_failed_stage_in(site):
    from pbs_globus_staging.backend import TransferItem, TransferSpec
    from pbs_globus_staging.cli import load_site, make_backend
    data = local(site, "in/x.dat")
    job = site.submit("-l", stagein_arg(site, "in/x.dat", "in/missing.dat"),
                      script=f"#!/bin/sh\ntest -s {data} || exit 99\n")
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60)
    proc = site.cli("adopt", job, "0b0b0b0b-0000-4000-8000-000000000000", check=False)
    assert proc.returncode == 4 and "not visible to" in proc.stderr

    # the user moved the data by hand with their own Globus task
    remote_file(site, "in/other.dat", "by hand\n")
    backend = make_backend(load_site(str(site.config_path)))
    spec = TransferSpec(submission_id=backend.new_submission_id(site.user),
                        source_collection=REMOTE_COLLECTION,
                        destination_collection=SITE_COLLECTION,
                        items=(TransferItem(f"/{site.user}/in/other.dat",
                                            f"/{site.user}/in/x.dat"),), label="by hand")
    task = backend.submit(site.user, spec).task_id
    out = cli_json(site, "adopt", job, task, "--reason", "user copied it")
    assert out["task_id"] == task and out["previous_state"] == "failed"
    assert site.resource(job, "globus_stage_state") == "staging-in"
    assert site.resource(job, "globus_stage_tasks") == task
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert site.qstat(job)["Exit_status"] == 0
    view = cli_json(site, "show", job)
    current = [t for t in view["requests"][0]["transfers"] if t["current"]]
    assert [(t["task_id"], t["grafted"], t["status"]) for t in current] == \
        [(task, True, "succeeded")]
    assert "admin_adopt" in kinds(view)
    proc = site.cli("adopt", job, task, check=False)
    assert proc.returncode == 1 and "already succeeded" in proc.stderr
