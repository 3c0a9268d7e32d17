"""The PBS double against the facts in shared/reference/pbs-hook-api.md: hook runs."""
from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest


def add_hook(server, name, events, body, **kw):
    server.create_hook(name, events=events, script=textwrap.dedent(body), **kw)


def record_hook(out: Path) -> str:
    """Hook prologue: `rec(key, value)` stores observations in a JSON file.

    Indented like the hook bodies below so that add_hook's dedent lines them up."""
    return textwrap.indent(textwrap.dedent("""
        import json, os, pbs
        OUT = %r
        def rec(key, value):
            data = json.load(open(OUT)) if os.path.exists(OUT) else {}
            data[key] = value
            json.dump(data, open(OUT, "w"))
        def err(fn):
            try:
                fn()
            except BaseException as exc:
                return "%%s: %%s" %% (type(exc).__name__, exc)
            return None
        """ % str(out)), " " * 8)


def seen(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.fixture
def script(pbs_job_script):
    return pbs_job_script("echo out $PBS_JOBID\n")


def jobattrs(server, jobid, *, user=None):
    r = server.run(["qstat", "-x", "-f", "-F", "json", jobid], user=user)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["Jobs"][jobid]


# ---------------------------------------------------------------- queuejob
def test_queuejob_job_has_no_id_and_unsent_attributes_are_none(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "qj", "queuejob", record_hook(out) + """
        e = pbs.event()
        j = e.job
        rec("same_event", pbs.event() is e)
        rec("id", j.id)
        rec("unset", [getattr(j, a) is None for a in
                      ("Job_Owner", "euser", "egroup", "job_state", "ctime")])
        rec("name", str(j.Job_Name))
        rec("o_workdir", j.Variable_List["PBS_O_WORKDIR"])
        rec("queue", j.queue)
        rec("requestor", e.requestor)
        rec("logjobmsg", err(lambda: pbs.logjobmsg(j.id, "x")))
        rec("cwd", os.getcwd())
        rec("cfg", [pbs.hook_config_filename, os.environ.get("PBS_HOOK_CONFIG_FILE")])
        rec("freq", e.freq)
        rec("unknown_attr", err(lambda: setattr(j, "no_such", 1)))
        rec("set_id", err(lambda: setattr(j, "id", "5")))
        rec("set_param", err(lambda: setattr(e, "job", None)))
        rec("rerun", err(j.rerun))
        rec("ro_attr", err(lambda: setattr(j, "euser", "bob")))
        """)
    r = staged.run(["qsub", "-N", "named", str(script)], user="alice", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = seen(out)
    assert s["same_event"] is True
    assert s["id"] == ""
    assert s["unset"] == [True] * 5
    assert s["name"] == "named"
    assert s["o_workdir"] == str(tmp_path)
    assert s["queue"] == ""
    assert s["requestor"] == "alice"
    assert s["logjobmsg"] == "ValueError: no jobid given!"
    assert s["cwd"] == str(staged.home / "server_priv" / "hooks" / "tmp")
    assert s["cfg"] == [None, None]
    assert s["freq"] is None
    assert s["unknown_attr"] == "UnsetAttributeNameError: job attribute 'no_such' not found"
    assert s["set_id"] == "BadAttributeValueError: attribute 'id' is readonly"
    assert s["set_param"] == "BadAttributeValueError: event attribute 'job' is readonly"
    assert s["rerun"] == "NotImplementedError: rerun(): only for mom hooks"
    assert s["ro_attr"] == "BadAttributeValueError: job attribute 'euser' is readonly"


def test_hook_config_file_is_stored_verbatim_and_exposed(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "qj", "queuejob", record_hook(out) + """
        rec("cfg", [pbs.hook_config_filename, os.environ.get("PBS_HOOK_CONFIG_FILE"),
                    open(pbs.hook_config_filename).read()])
        """, config="{not json")
    assert staged.run(["qsub", str(script)]).returncode == 0
    cf = str(staged.home / "server_priv" / "hooks" / "qj.CF")
    assert seen(out)["cfg"] == [cf, cf, "{not json"]


def test_system_hold_from_queuejob_cannot_be_released_by_owner(staged, script):
    add_hook(staged, "qj", "queuejob", """
        import pbs
        e = pbs.event()
        if e.job.Resource_List["stagein_globus"] is not None:
            e.job.Hold_Types = pbs.hold_types("s")
            e.job.comment = "staging: waiting"
            e.job.Resource_List["globus_stage_state"] = "waiting"
            e.job.Variable_List["STAGED"] = "yes"
        """)
    r = staged.run(["qsub", "-l", "stagein_globus=x:/a/@b:/c", str(script)], user="alice")
    assert r.returncode == 0, r.stderr
    jid = r.stdout.strip()
    j = jobattrs(staged, jid)
    assert (j["job_state"], j["Hold_Types"], j["substate"]) == ("H", "s", 20)
    assert j["comment"] == "staging: waiting"
    assert j["Resource_List"]["globus_stage_state"] == "waiting"
    assert j["Resource_List"]["stagein_globus"] == "x:/a/@b:/c"
    assert j["Variable_List"]["STAGED"] == "yes"
    r = staged.run(["qrls", "-h", "s", jid], user="alice")
    assert (r.stderr, r.returncode) == ("qrls: Unauthorized Request  %s\n" % jid, 159)
    r = staged.run(["qrls", jid], user="alice")
    assert r.returncode == 0
    assert jobattrs(staged, jid)["job_state"] == "H"
    r = staged.run(["qrls", "-h", "s", jid])  # root
    assert r.returncode == 0, r.stderr
    j = jobattrs(staged, jid)
    assert (j["job_state"], j["Hold_Types"]) == ("Q", "n")
    assert "Holds s released at request of root@localhost" in staged.log_text()


def test_unquoted_comma_splits_a_resource_value(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "qj", "queuejob", record_hook(out) + """
        rec("v", pbs.event().job.Resource_List["stagein_globus"])
        """)
    r = staged.run(["qsub", "-l", "stagein_globus=a,b", str(script)])
    assert (r.stderr, r.returncode) == ("qsub: Unknown resource Resource_List.b\n", 187)
    assert seen(out)["v"] == "a"
    assert staged.jobs() == {}
    r = staged.run(["qsub", "-l", 'stagein_globus="a b,c"', str(script)])
    assert r.returncode == 0, r.stderr
    assert seen(out)["v"] == "a b,c"


def test_v_values_reach_hooks_with_commas_escaped(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "qj", "queuejob", record_hook(out) + """
        rec("v", pbs.event().job.Variable_List["X"])
        """)
    assert staged.run(["qsub", "-v", 'X="a,b"', str(script)]).returncode == 0
    assert seen(out)["v"] == "a\\,b"


@pytest.mark.parametrize("call, line", [
    ('e.reject("bad request: fix it")', "qsub: bad request: fix it"),
    ("e.reject()", "qsub: queuejob request rejected by 'qj'"),
    ("raise ValueError('boom')",
     "qsub: request rejected as filter hook 'qj' encountered an exception. Please inform Admin"),
])
def test_queuejob_rejections_as_the_user_sees_them(staged, script, call, line):
    add_hook(staged, "qj", "queuejob", """
        import pbs
        e = pbs.event()
        %s
        """ % call)
    r = staged.run(["qsub", str(script)], user="alice")
    assert (r.stderr, r.returncode, r.stdout) == (line + "\n", 32, "")
    assert staged.jobs() == {}


def test_exception_is_logged_as_two_lines(staged, script):
    add_hook(staged, "qj", "queuejob", """
        import pbs
        pbs.event().job.substate = 3
        """)
    staged.run(["qsub", str(script)])
    log = staged.log_text()
    prefix = "PBS server internal error (15011) in Error evaluating Python script, "
    assert prefix + "<class 'pbs.BadAttributeValueError'>" in log or \
        prefix + "<class 'pbs_globus_staging_sim.pbsdouble.pbs.BadAttributeValueError'>" in log
    assert prefix + "job attribute 'substate' is readonly" in log


def test_alarm_rejects_with_the_alarm_line(staged, script):
    add_hook(staged, "slow", "queuejob", """
        import time
        time.sleep(10)
        """, alarm=1)
    t0 = time.monotonic()
    r = staged.run(["qsub", str(script)])
    assert time.monotonic() - t0 < 5
    assert (r.stderr, r.returncode) == (
        "qsub: request rejected as filter hook 'slow' got an alarm call. Please inform Admin\n", 32)
    assert "alarm call while running queuejob hook 'slow', request rejected" in staged.log_text()


def test_hooks_run_in_order_and_the_first_reject_stops(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "second", "queuejob", record_hook(out) + """
        rec("second_saw", str(pbs.event().job.comment))
        pbs.event().reject("no")
        """, order=2)
    add_hook(staged, "third", "queuejob", record_hook(out) + '\n        rec("third", True)\n',
             order=3)
    add_hook(staged, "first", "queuejob", """
        import pbs
        pbs.event().job.comment = "from first"
        """, order=1)
    r = staged.run(["qsub", str(script)])
    assert r.stderr == "qsub: no\n"
    assert seen(out) == {"second_saw": "from first"}


def test_writes_after_accept_raise_assertion(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "qj", "queuejob", record_hook(out) + """
        e = pbs.event()
        try:
            e.accept()
        except SystemExit:
            pass
        rec("after", err(lambda: setattr(e.job, "comment", "x")))
        rec("after_res", err(lambda: e.job.Resource_List.__setitem__("stagein_globus", "x")))
        """)
    assert staged.run(["qsub", str(script)]).returncode == 0
    s = seen(out)
    assert s["after"] == ("AssertionError: Not permitted to modify attributes (name=comment,"
                          "res=None): an event.accept() or event.reject() already called.")
    assert s["after_res"].startswith("AssertionError: Not permitted to modify attributes "
                                     "(name=Resource_List,res=stagein_globus)")


def test_value_types_and_resource_rules(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "qj", "queuejob", record_hook(out) + """
        j = pbs.event().job
        h = pbs.hold_types("us")
        rec("hold_str", [str(h), str(h + pbs.hold_types("o")), str(h - "u"), str(h - "us")])
        rec("hold_eq", h == "us")
        rec("hold_bad", err(lambda: pbs.hold_types("x")))
        rec("hold_plain_str", err(lambda: setattr(j, "Hold_Types", "s")).split(":")[0])
        rec("res_ci", str(j.Resource_List["STAGEIN_GLOBUS"]))
        rec("res_type", type(j.Resource_List["stagein_globus"]).__name__)
        rec("res_undef_set", err(lambda: j.Resource_List.__setitem__("nope", "x")))
        rec("res_undef_get", err(lambda: j.Resource_List["nope"]).split(":")[0])
        j.Resource_List["stagein_globus"] = None
        rec("env_ro", err(lambda: j.Variable_List.__setitem__("PBS_O_HOME", "/x")))
        rec("env_whole", err(lambda: setattr(j, "Variable_List", {})))
        rec("walltime", [int(pbs.duration("1:02:03")), str(pbs.duration("1:02:03"))])
        rec("size", [pbs.size("1gb") == pbs.size("1024mb"), str(pbs.size("1gb") + "1gb"),
                     pbs.size("10kb") < pbs.size("1mb")])
        rec("select", err(lambda: pbs.select("2:ncpus=")))
        rec("state", [pbs.JOB_STATE_HELD, pbs.REVERSE_JOB_STATE[9], pbs.QUEUEJOB, pbs.RUNJOB,
                      pbs.JOBOBIT, pbs.PERIODIC, pbs.MODIFYJOB, pbs.JOB_SUBSTATE_TERMINATED])
        rec("logbad", err(lambda: pbs.logmsg(99, "x")))
        rec("incompat", isinstance(pbs.EventIncompatibleError(), AttributeError))
        rec("run_count", err(lambda: setattr(j, "run_count", -1)))
        """)
    r = staged.run(["qsub", "-l", "stagein_globus=v", str(script)])
    assert r.returncode == 0, r.stderr
    s = seen(out)
    assert s["hold_str"] == ["us", "uso", "s", "n"]
    assert s["hold_eq"] is False  # no __eq__ in OpenPBS either: compare str(...)
    assert s["hold_bad"] == ("BadAttributeValueError: input value x not of the right format "
                             "for 'Hold_Types'")
    assert s["hold_plain_str"] == "BadAttributeValueTypeError"
    assert s["res_ci"] == "v"
    assert s["res_type"] == "pbs_str"
    assert s["res_undef_set"] == "UnsetResourceNameError: resource attribute 'nope' not found"
    assert s["res_undef_get"] == "AttributeError"
    assert s["env_ro"] == "BadAttributeValueError: env variable 'PBS_O_HOME' is readonly"
    assert s["env_whole"] == ("BadAttributeValueError: attribute 'Variable_List' cannot be "
                              "directly set.")
    assert s["walltime"] == [3723, "1:02:03"]
    assert s["size"] == [True, "2gb", True]
    assert s["select"].startswith("BadAttributeValueError")
    assert s["state"] == [2, "JOB_STATE_FINISHED", 1, 0x10, 0x800000, 0x8000, 2, 91]
    assert s["logbad"] == "TypeError: Invalid severity or eventtype value 99"
    assert s["incompat"] is True
    assert s["run_count"] == "BadAttributeValueError: run_count value must be >= 0"
    # None unset the resource in the submitted job
    jid = r.stdout.strip()
    assert "stagein_globus" not in jobattrs(staged, jid)["Resource_List"]


def test_flag_r_resource_user_refused_hook_and_root_allowed(staged, script):
    r = staged.run(["qsub", "-l", "globus_stage_state=foo", str(script)], user="alice")
    assert (r.stderr, r.returncode) == (
        "qsub: Cannot set attribute, read only or insufficient permission  "
        "Resource_List.globus_stage_state\n", 155)
    jid = staged.run(["qsub", str(script)], user="alice").stdout.strip()
    r = staged.run(["qalter", "-l", "globus_stage_state=foo", jid], user="alice")
    assert r.returncode == 155
    assert r.stderr.startswith("qalter: Cannot set attribute, read only or insufficient "
                               "permission  Resource_List.globus_stage_state")
    r = staged.run(["qalter", "-l", "globus_stage_state=staging-in", jid])
    assert r.returncode == 0, r.stderr
    r = staged.run(["qalter", "-l", "stagein_globus=new", jid], user="alice")
    assert r.returncode == 0, r.stderr
    rl = jobattrs(staged, jid)["Resource_List"]
    assert (rl["globus_stage_state"], rl["stagein_globus"]) == ("staging-in", "new")


# ---------------------------------------------------------------- modifyjob
def test_modifyjob_sees_only_altered_attributes_and_can_reject(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "mj", "modifyjob", record_hook(out) + """
        e = pbs.event()
        rec("new", e.job.Resource_List["stagein_globus"])
        rec("name_in_job", e.job.Job_Name)
        rec("old_name", str(e.job_o.Job_Name))
        rec("o_ro", err(lambda: setattr(e.job_o, "comment", "x")))
        if e.job.Resource_List["stagein_globus"] == "bad":
            e.reject("stagein_globus: bad value")
        """)
    jid = staged.run(["qsub", "-N", "orig", str(script)], user="alice").stdout.strip()
    assert staged.run(["qalter", "-l", "stagein_globus=ok", jid], user="alice").returncode == 0
    s = seen(out)
    assert (s["new"], s["name_in_job"], s["old_name"]) == ("ok", None, "orig")
    assert s["o_ro"] == "BadAttributeValueError: attribute 'comment' is part of a readonly object"
    r = staged.run(["qalter", "-l", "stagein_globus=bad", jid], user="alice")
    assert (r.stderr, r.returncode) == ("qalter: stagein_globus: bad value %s\n" % jid, 32)
    assert jobattrs(staged, jid)["Resource_List"]["stagein_globus"] == "ok"


# ---------------------------------------------------------------- runjob
def test_runjob_reject_keeps_job_queued_with_pbs_error_comment(staged, script):
    add_hook(staged, "rj", "runjob", """
        import pbs
        pbs.event().reject("stage-in not done")
        """)
    jid = staged.run(["qsub", str(script)]).stdout.strip()
    assert staged.schedule() == []
    j = jobattrs(staged, jid)
    assert (j["job_state"], j["comment"]) == ("Q", "Not Running: PBS Error: stage-in not done")


def test_runjob_reject_with_hold_puts_job_in_h_with_hook_comment(staged, script, tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "rj", "runjob", record_hook(out) + """
        e = pbs.event()
        rec("req", [e.requestor, e.job.id, e.job.exec_vnode is not None])
        rec("comment", err(lambda: setattr(e.job, "comment", "x")))
        e.job.Hold_Types = pbs.hold_types("s")
        e.job.Resource_List["globus_stage_state"] = "guarded"
        e.reject("not staged")
        """)
    jid = staged.run(["qsub", str(script)]).stdout.strip()
    staged.schedule()
    s = seen(out)
    assert s["req"] == ["Scheduler", jid, True]
    assert s["comment"] == (
        "AssertionError: Can only set job's (Hold_Types|Execution_Time|project|Error_Path|"
        "Output_Path|Resource_List|Variable_List|depend|create_resv_from_job) attribute, or a "
        "vnode's (state) attribute under RUNJOB event - got <comment>")
    j = jobattrs(staged, jid)
    assert (j["job_state"], j["Hold_Types"]) == ("H", "s")
    # observed on OpenPBS 23.06: the run failure comment, not the hook-hold one
    assert j["comment"] == "Not Running: PBS Error: not staged"
    assert "'rj' hook set job's Hold_Types = s" in staged.log_text()
    assert j["Resource_List"]["globus_stage_state"] == "guarded"


def test_runjob_accept_after_setting_hold_rejects_the_run(staged, script):
    add_hook(staged, "rj", "runjob", """
        import pbs
        e = pbs.event()
        e.job.Hold_Types = pbs.hold_types("s")
        e.accept()
        """)
    jid = staged.run(["qsub", str(script)]).stdout.strip()
    assert staged.schedule() == []
    j = jobattrs(staged, jid)
    assert j["job_state"] == "Q"
    assert j["comment"] == ("Not Running: PBS Error: request rejected by filter hook 'rj': "
                            "cannot modify job after runjob request has been accepted.")


def test_runjob_accept_applies_variable_list_and_job_really_runs(staged, pbs_job_script,
                                                                 tmp_path):
    add_hook(staged, "rj", "runjob", """
        import pbs, sys
        e = pbs.event()
        sys.pbsdouble_runs = getattr(sys, "pbsdouble_runs", 0) + 1
        e.job.Variable_List["RUNS"] = str(sys.pbsdouble_runs)
        """)
    job = pbs_job_script('echo "id=$PBS_JOBID runs=$RUNS wd=$PBS_O_WORKDIR"\nexit 3\n')
    j1 = staged.run(["qsub", str(job)], cwd=tmp_path).stdout.strip()
    j2 = staged.run(["qsub", str(job)], cwd=tmp_path).stdout.strip()
    assert staged.schedule() == [j1, j2]
    # interpreter state persists between hook runs in one server process
    outs = sorted((tmp_path / ("job.sh.o" + j.split(".")[0])).read_text() for j in (j1, j2))
    assert outs == ["id=%s runs=1 wd=%s\n" % (j1, tmp_path),
                    "id=%s runs=2 wd=%s\n" % (j2, tmp_path)]
    j = jobattrs(staged, j1)
    assert (j["job_state"], j["substate"], j["Exit_status"]) == ("F", 93, 3)
    assert j["comment"].endswith(" and failed")


# ---------------------------------------------------------------- jobobit
def test_jobobit_is_read_only_and_not_fired_for_deleted_held_job(staged, pbs_job_script,
                                                                 tmp_path):
    out = tmp_path / "seen.json"
    add_hook(staged, "obit", "jobobit", record_hook(out) + """
        j = pbs.event().job
        rec(j.id, [int(j.Exit_status), int(j.job_state), int(j.substate),
                   err(lambda: setattr(j, "comment", "x")),
                   j.Resource_List["stagein_globus"]])
        """)
    job = pbs_job_script("exit 3\n")
    ran = staged.run(["qsub", "-l", "stagein_globus=x:/a", str(job)]).stdout.strip()
    held = staged.run(["qsub", "-h", str(job)]).stdout.strip()
    staged.schedule()
    assert staged.run(["qdel", held]).returncode == 0
    assert seen(out) == {ran: [3, 5, 53, "BadAttributeValueError: attribute 'comment' is part "
                                          "of a readonly object", "x:/a"]}


def test_qdel_of_held_job_terminates_it_and_qdel_x_purges(staged, script):
    jid = staged.run(["qsub", "-h", str(script)]).stdout.strip()
    staged.run(["qalter", "-W", "comment=staging: 45% (12/30 files)", jid])
    assert staged.run(["qdel", jid]).returncode == 0
    j = jobattrs(staged, jid)
    assert (j["job_state"], j["substate"]) == ("F", 91)
    assert j["comment"] == "staging: 45% (12/30 files) and terminated"
    assert "Exit_status" not in j and "history_timestamp" in j
    r = staged.run(["qstat", "-f", "-F", "json", jid])
    assert r.returncode == 35 and "Job has finished" in r.stderr
    assert staged.run(["qdel", "-x", jid]).returncode == 0
    assert staged.run(["qstat", "-x", jid]).returncode == 153


# ---------------------------------------------------------------- periodic
def test_periodic_hook_child_sees_snapshot_read_only_and_can_run_commands(staged, script,
                                                                         tmp_path):
    out = tmp_path / "seen.json"
    jid = staged.run(["qsub", "-h", "-l", "stagein_globus=x:/a", str(script)],
                     user="alice").stdout.strip()
    add_hook(staged, "per", "periodic", record_hook(out) + """
        import subprocess
        e = pbs.event()
        jobs = list(pbs.server().jobs())
        j = jobs[0]
        rec("view", [e.type == pbs.PERIODIC, hasattr(e, "job"), e.requestor, e.freq,
                     j.id, int(j.job_state), str(j.Hold_Types), j.Resource_List["stagein_globus"]])
        rec("ro", err(lambda: setattr(j, "comment", "x")))
        exe = os.path.join(pbs.pbs_conf["PBS_EXEC"], "bin", "qrls")
        rec("qrls", subprocess.run([exe, j.id]).returncode)
        rec("after", str(pbs.server().job(j.id).Hold_Types))
        rec("pid", os.getpid())
        """, freq=5, alarm=5)
    assert staged.run_periodic("per") == {"per": 1}
    s = seen(out)
    assert s["view"] == [True, False, None, 5, jid, 2, "u", "x:/a"]
    assert s["ro"] == "BadAttributeValueError: attribute 'comment' is part of a readonly object"
    assert s["qrls"] == 0
    assert s["after"] == "u"  # snapshot taken when the child started
    assert jobattrs(staged, jid)["job_state"] == "Q"
    import os
    assert s["pid"] != os.getpid()


def test_periodic_reject_and_alarm_and_skip_while_running(staged):
    add_hook(staged, "rej", "periodic", """
        import pbs
        pbs.event().reject("nothing to do")
        """, freq=5)
    assert staged.run_periodic("rej") == {"rej": 0}
    assert "periodic request rejected by 'rej'" in staged.log_text()
    add_hook(staged, "slow", "periodic", """
        import time
        time.sleep(30)
        """, freq=5, alarm=1)
    first = staged.run_periodic("slow", wait=False)
    assert first == {"slow": None}
    assert staged.run_periodic("slow", wait=False) == {"slow": None}
    assert "periodic hook still running, skipping this run" in staged.log_text()
    deadline = time.monotonic() + 5
    while "alarm call while running periodic hook 'slow'" not in staged.log_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_periodic_thread_fires_every_freq(staged, tmp_path):
    out = tmp_path / "count"
    add_hook(staged, "tick", "periodic", """
        with open(%r, "a") as fh:
            fh.write("x")
        """ % str(out), freq=1)
    staged.start_periodic_thread(tick=0.05)
    deadline = time.monotonic() + 6
    while not out.exists() or len(out.read_text()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    staged.stop()


def test_scheduler_thread_runs_jobs_and_enforces_alarm_off_the_main_thread(staged, script):
    add_hook(staged, "spin", "runjob", """
        import pbs
        if pbs.event().job.Resource_List["stagein_globus"] == "spin":
            while True:
                pass
        """, alarm=1)
    spin = staged.run(["qsub", "-l", "stagein_globus=spin", str(script)]).stdout.strip()
    runs = staged.run(["qsub", str(script)]).stdout.strip()
    staged.start_scheduler_thread(interval=0.1)
    deadline = time.monotonic() + 10
    while jobattrs(staged, runs)["job_state"] != "F":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    staged.stop()
    j = jobattrs(staged, spin)
    assert j["job_state"] == "Q"
    assert j["comment"] == ("Not Running: PBS Error: request rejected as filter hook 'spin' "
                            "got an alarm call. Please inform Admin")


def test_periodic_hook_children_inherit_blocked_signals(staged, tmp_path):
    """Seen on OpenPBS 23.06.06: a process a periodic hook starts has SIGHUP,
    SIGINT, SIGTERM and SIGCHLD blocked (SigBlk 0x14003), so a daemon it starts
    must unblock them before `kill` can reach it (serve.Server does)."""
    out = tmp_path / "mask"
    add_hook(staged, "mask", "periodic", """
        import subprocess
        with open(%r, "w") as fh:
            subprocess.run(["grep", "SigBlk", "/proc/self/status"], stdout=fh)
        """ % str(out), freq=5)
    assert staged.run_periodic("mask") == {"mask": 1}
    blocked = int(out.read_text().split()[1], 16)
    assert blocked & 0x14003 == 0x14003


def test_job_stays_exiting_a_moment_after_its_jobobit(staged, tmp_path):
    """Seen on OpenPBS 23.06.06: after the jobobit hooks ran, `qstat -f` (no -x)
    still lists the job in state E for about 0.25 s, then it is gone (history).
    An agent woken by the jobobit hook must not count on seeing it finished."""
    out = tmp_path / "obit"
    add_hook(staged, "ob", "jobobit", """
        import time
        open(%r, "w").write(repr(time.time()))
        """ % str(out))
    script = tmp_path / "s.sh"
    script.write_text("#!/bin/sh\nsleep 0.3\n")
    jid = staged.run(["qsub", str(script)]).stdout.strip()
    staged.schedule(wait=False)
    states = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = staged.run(["qstat", "-f", "-F", "json", jid])
        st = json.loads(r.stdout)["Jobs"][jid]["job_state"] if r.returncode == 0 else "gone"
        if out.exists() and st != "R" and (not states or states[-1][1] != st):
            states.append((time.time() - float(out.read_text()), st))
        if st == "gone":
            break
        time.sleep(0.02)
    staged.wait_jobs(timeout=10)
    assert states[0][1] == "E" and states[-1][1] == "gone", states
    assert states[-1][0] >= 0.15, states
