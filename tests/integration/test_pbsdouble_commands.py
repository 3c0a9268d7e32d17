"""The PBS double's commands against real OpenPBS 23.06 outputs (tests/helpers/data/pbs-samples/,
captured on a running server; a copy of shared/reference/pbs-samples)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "helpers" / "data" / "pbs-samples"


@pytest.fixture
def script(pbs_job_script):
    return pbs_job_script("true\n")


def qsub(server, *args, user="alice"):
    r = server.run(["qsub", *args], user=user)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_fixture_sets_pbs_conf_file(pbs_server):
    conf = Path(os.environ["PBS_CONF_FILE"]).read_text()
    assert "PBS_HOME=%s\n" % pbs_server.home in conf
    assert os.environ["PATH"].startswith(str(pbs_server.exec_dir / "bin"))


def test_held_job_json_matches_the_real_shape(staged, script):
    jid = qsub(staged, "-h", "-l", "stagein_globus=theta:/~/in/@/lus/alice/in/", str(script))
    assert staged.run(["qhold", "-h", "s", jid]).returncode == 0
    assert staged.run(["qalter", "-l", "globus_stage_state=staging-in", jid]).returncode == 0
    r = staged.run(["qstat", "-f", "-F", "json", jid], user="alice")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    real = json.loads((SAMPLES / "qstat_held_job.json").read_text())
    assert set(doc) == set(real)
    mine, theirs = doc["Jobs"][jid], next(iter(real["Jobs"].values()))
    assert list(mine) == [k for k in theirs if k in mine]  # same order
    # the comment comes from qhold and the time fields may differ; everything else must exist
    assert set(theirs) - set(mine) <= {"mtime"} and set(mine) - set(theirs) <= {"etime"}
    for key, value in theirs.items():
        if key in mine:
            assert type(mine[key]) is type(value) or key == "queue_rank", key
    assert mine["Hold_Types"] == "su" and mine["job_state"] == "H" and mine["substate"] == 20
    assert mine["Resource_List"] == {"globus_stage_state": "staging-in", "ncpus": 1,
                                     "nodect": 1, "place": "pack", "select": "1:ncpus=1",
                                     "stagein_globus": "theta:/~/in/@/lus/alice/in/"}
    assert mine["comment"].startswith("Job held by root on ")
    # the raw text uses PBS's tab layout
    assert '\t"Jobs":\t{\n\t\t"%s":\t{\n\t\t\t"Job_Name":\t"job.sh",' % jid in r.stdout


def test_json_with_two_ids_prints_only_the_first(staged, script):
    a, b = qsub(staged, "-h", str(script)), qsub(staged, "-h", str(script))
    doc = json.loads(staged.run(["qstat", "-f", "-F", "json", a, b]).stdout)
    assert list(doc["Jobs"]) == [a]
    doc = json.loads(staged.run(["qstat", "-f", "-F", "json"]).stdout)
    assert list(doc["Jobs"]) == [a, b]


def test_unknown_job_id(staged):
    r = staged.run(["qstat", "-x", "-f", "-F", "json", "999"])
    assert (r.stderr, r.returncode) == ("qstat: Unknown Job Id 999.pbsdouble\n", 153)
    doc = json.loads(r.stdout)
    assert set(doc) == {"timestamp", "pbs_version", "pbs_server"}
    r = staged.run(["qrls", "-h", "s", "999.pbsdouble"])
    assert (r.stderr, r.returncode) == ("qrls: Unknown Job Id 999.pbsdouble\n", 153)


def test_numbers_in_values_come_out_as_json_numbers(staged, script):
    jid = qsub(staged, "-l", "stagein_globus=123", "-N", "42", str(script))
    j = json.loads(staged.run(["qstat", "-f", "-F", "json", jid]).stdout)["Jobs"][jid]
    assert j["Resource_List"]["stagein_globus"] == 123  # cJSON parses every value
    assert j["Job_Name"] == "42"  # except Job_Name, project, Account_Name


def test_array_parent_and_subjobs(staged, pbs_job_script):
    job = pbs_job_script("echo $PBS_ARRAY_INDEX\n", name="s.sh")
    pid = qsub(staged, "-J", "1-2", "-h", str(job))
    assert pid.endswith("[].pbsdouble")
    r = staged.run(["qstat", "-f", "-F", "json", "-t", pid])
    jobs = json.loads(r.stdout)["Jobs"]
    base = pid.split("[")[0]
    sub1, sub2 = "%s[1].pbsdouble" % base, "%s[2].pbsdouble" % base
    assert list(jobs) == [pid, sub1, sub2]
    real = json.loads((SAMPLES / "qstat_array_with_subjobs.json").read_text())["Jobs"]
    rp, rs = real["114[].vm"], real["114[1].vm"]
    p, s = jobs[pid], jobs[sub1]
    assert (p["job_state"], p["array"], p["array_state_count"], p["array_indices_remaining"]) \
        == (rp["job_state"], "True", rp["array_state_count"], "1-2")
    assert (s["job_state"], s["Hold_Types"], s["substate"]) == ("Q", "u", 10)
    assert set(s) - set(rs) == set() and "array" not in s
    assert p["Output_Path"].endswith(".o%s.^array_index^" % base)
    staged.run(["qrls", pid], user="alice")
    started = staged.schedule()
    assert started == [sub1, sub2]
    jobs = json.loads(staged.run(["qstat", "-x", "-f", "-F", "json", "-t", pid]).stdout)["Jobs"]
    assert jobs[pid]["job_state"] == "F"
    assert (jobs[sub1]["job_state"], jobs[sub2]["Exit_status"]) == ("X", 0)
    out = Path(jobs[sub2]["Output_Path"].split(":", 1)[1].replace("^array_index^", "2"))
    assert out.read_text() == "2\n"


def test_qmgr_duplicate_create_and_listing(staged):
    r = staged.run(["qmgr", "-c", "create resource stagein_globus type=string"])
    assert (r.stderr, r.returncode) == (
        (SAMPLES / "create_again.txt").read_text().rsplit("rc=", 1)[0], 207)
    r = staged.run(["qmgr", "-c", "list resource stagein_globus"])
    r2 = staged.run(["qmgr", "-c", "list resource globus_stage_state"])
    assert r.stdout + r2.stdout == (SAMPLES / "list_resource.txt").read_text()
    assert staged.run(["qmgr", "-c", "create hook h1 event=queuejob"]).returncode == 0
    r = staged.run(["qmgr", "-c", "create hook h1"])
    # observed on OpenPBS 23.06.06 (docs/real-pbs.md): a hook error, not PBSE_DUPLIST
    assert (r.stderr, r.returncode) == (
        "qmgr obj=h1 svr=default: hook name 'h1' already registered, try another name\n"
        "qmgr: hook error returned from server\n", 32)


def test_qmgr_resource_flag_validation_and_busy_delete(staged, script):
    r = staged.run(["qmgr", "-c", "create resource bad type=string,flag=ir"])
    assert r.returncode == 166 and "Illegal attribute or resource value" in r.stderr
    r = staged.run(["qmgr", "-c", "create resource bad2 type=string,flag=n"])
    assert r.returncode == 166
    jid = qsub(staged, "-l", "stagein_globus=x", str(script))
    staged.run(["qdel", jid])
    r = staged.run(["qmgr", "-c", "delete resource stagein_globus"])
    assert r.returncode == 15174 & 0xFF and "Resource busy on job" in r.stderr
    assert staged.run(["qdel", "-x", jid]).returncode == 0
    assert staged.run(["qmgr", "-c", "delete resource stagein_globus"]).returncode == 0


def test_qmgr_hook_import_checks(staged, tmp_path):
    staged.run(["qmgr", "-c", "create hook h event=queuejob"])
    bad = tmp_path / "bad.py"
    bad.write_text("def (:\n")
    r = staged.run(["qmgr", "-c", "import hook h application/x-python default %s" % bad])
    assert r.returncode == 32
    assert r.stderr == "Failed to compile script\nqmgr: hook error returned from server\n"
    ini = tmp_path / "c.ini"
    ini.write_text("[a]\n")
    r = staged.run(["qmgr", "-c", "import hook h application/x-config default %s" % ini])
    assert "Failed to validate config file, hook 'h' config file not overwritten" in r.stderr
    js = tmp_path / "c.json"
    js.write_text("{broken")
    r = staged.run(["qmgr", "-c", "import hook h application/x-config default %s" % js])
    assert r.returncode == 0
    assert (staged.home / "server_priv/hooks/h.CF").read_text() == "{broken"
    r = staged.run(["qmgr", "-c", "set hook h freq = 10"])
    assert r.returncode == 32
    r = staged.run(["qmgr", "-c", "set hook h event += runjob"])
    assert r.returncode == 0
    listing = staged.run(["qmgr", "-c", "list hook h"]).stdout
    assert "    event = queuejob,runjob\n" in listing and "    alarm = 30\n" in listing
    r = staged.run(["qmgr", "-c", "create hook x"], user="alice")
    assert r.returncode == 159


def test_qselect_on_string_resources_and_exact_holds(staged, script):
    a = qsub(staged, "-h", "-l", "stagein_globus=v", str(script))
    b = qsub(staged, "-h", str(script))
    staged.run(["qhold", "-h", "s", a])
    staged.run(["qalter", "-l", "globus_stage_state=staging-in", a])
    sel = lambda *args: staged.run(["qselect", *args]).stdout.split()  # noqa: E731
    assert sel("-l", "globus_stage_state.eq.staging-in") == [a]
    assert sel("-l", "stagein_globus.ne.none") == [a, b]
    assert sel("-h", "u") == [b]
    assert sel("-h", "s") == []
    assert sel("-u", "alice") == [a, b]


def test_user_sees_and_alters_only_own_jobs(staged, script):
    jid = qsub(staged, str(script), user="alice")
    r = staged.run(["qstat", "-f", "-F", "json", jid], user="bob")
    assert r.returncode == 159
    r = staged.run(["qalter", "-l", "stagein_globus=x", jid], user="bob")
    assert (r.stderr, r.returncode) == ("qalter: Unauthorized Request  %s\n" % jid, 159)
    assert staged.run(["qdel", jid], user="bob").returncode == 159


def test_unknown_w_attribute_fails_in_qsub(staged, pbs_job_script):
    job = pbs_job_script("#PBS -W stagein_globus=foo\ntrue\n")
    r = staged.run(["qsub", str(job)])
    assert (r.stderr, r.returncode) == ("qsub: Error (15002) submitting job\n", 154)


def test_directives_and_stdin(staged, pbs_job_script, tmp_path):
    job = pbs_job_script("#PBS -N dir_name\n#PBS -l stagein_globus=from_directive\n"
                         "echo hi\n#PBS -N ignored_after_command\n")
    jid = qsub(staged, "-l", "stagein_globus=cli", str(job))
    j = json.loads(staged.run(["qstat", "-f", "-F", "json", jid]).stdout)["Jobs"][jid]
    assert (j["Job_Name"], j["Resource_List"]["stagein_globus"]) == ("dir_name", "cli")
    r = staged.run(["qsub"], input="#PBS -h\ntrue\n")
    jid = r.stdout.strip()
    j = json.loads(staged.run(["qstat", "-f", "-F", "json", jid]).stdout)["Jobs"][jid]
    assert (j["Job_Name"], j["Hold_Types"]) == ("STDIN", "u")


def test_dependencies(staged, pbs_job_script):
    ok, bad = pbs_job_script("true\n", "ok.sh"), pbs_job_script("exit 1\n", "bad.sh")
    first = qsub(staged, str(ok))
    failing = qsub(staged, str(bad))
    after_ok = qsub(staged, "-W", "depend=afterok:%s" % first, str(ok))
    doomed = qsub(staged, "-W", "depend=afterok:%s" % failing, str(ok))
    j = json.loads(staged.run(["qstat", "-f", "-F", "json", after_ok]).stdout)["Jobs"][after_ok]
    assert (j["job_state"], j["substate"], j["Hold_Types"]) == ("H", 22, "s")
    assert staged.schedule() == [first, failing]
    assert staged.schedule() == [after_ok]
    r = staged.run(["qstat", "-x", "-f", "-F", "json", doomed])
    j = json.loads(r.stdout)["Jobs"][doomed]
    assert (j["job_state"], j["substate"]) == ("F", 91)


def test_restart_loses_comments_keeps_holds_resources_env(staged, script):
    jid = qsub(staged, "-h", "-v", "KEEP=1", "-l", "stagein_globus=v", str(script))
    staged.run(["qhold", "-h", "s", jid])
    staged.run(["qalter", "-W", "comment=staging: 10%", "-l", "globus_stage_state=s1", jid])
    staged.restart()
    j = json.loads(staged.run(["qstat", "-f", "-F", "json", jid]).stdout)["Jobs"][jid]
    assert "comment" not in j
    assert (j["job_state"], j["Hold_Types"]) == ("H", "su")
    assert j["Resource_List"]["globus_stage_state"] == "s1"
    assert j["Variable_List"]["KEEP"] == 1


def test_qdel_running_job_runs_jobobit_and_terminates(staged, pbs_job_script, tmp_path):
    marker = tmp_path / "obit"
    staged.create_hook("obit", events="jobobit", script=(
        "import pbs\nopen(%r, 'a').write(str(pbs.event().job.Exit_status))\n" % str(marker)))
    job = pbs_job_script("sleep 30\n")
    jid = qsub(staged, str(job), user="root")
    assert staged.schedule(wait=False) == [jid]
    assert staged.run(["qdel", jid]).returncode == 0
    staged.wait_jobs(timeout=10)
    j = json.loads(staged.run(["qstat", "-x", "-f", "-F", "json", jid]).stdout)["Jobs"][jid]
    assert (j["job_state"], j["substate"], j["Exit_status"]) == ("F", 91, 271)
    assert marker.read_text() == "271"


def test_plain_qstat_table_and_latency(staged, script):
    jid = qsub(staged, "-h", str(script))
    t0 = time.monotonic()
    r = staged.run(["qstat"])
    elapsed = time.monotonic() - t0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["Job", "id", "Name", "User", "Time", "Use", "S", "Queue"]
    assert lines[2].split() == [jid, "job.sh", "alice", "0", "H", "workq"]
    assert elapsed < 0.5  # ~30-60 ms normally; loose for loaded CI machines
