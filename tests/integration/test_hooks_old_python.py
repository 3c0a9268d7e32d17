"""What runs inside pbs_server must work on the Python PBS embeds -- 3.6 (EL8,
PBS Professional) through the newest -- with the standard library alone: the
hook scripts themselves and every module they reach.

Each interpreter runs the real hook scripts against a stand-in ``pbs`` module
(the PBS double's own ``pbs`` module needs the project's Python), with ``-I``
so that nothing but the standard library and the package path the hook config
names is importable.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOOKS = REPO / "lib" / "pbs_globus_staging" / "data" / "hooks"
PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"


def _version(exe):
    m = re.search(r"python(\d+)\.(\d+)$", exe) or re.search(r"/(\d+)\.(\d+)\.\d+/bin/", exe)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _newest():
    found = glob.glob(str(PYENV / "3.*" / "bin" / "python3.*")) + glob.glob("/usr/bin/python3.*")
    found = [p for p in found if re.search(r"python3\.\d+$", p) and os.access(p, os.X_OK)]
    return max(found, key=_version) if found else None


def _pyenv(minor):
    hits = sorted(glob.glob(str(PYENV / ("3.%d.*" % minor) / "bin" / ("python3.%d" % minor))))
    return hits[-1] if hits else None


INTERPRETERS = [("3.6", _pyenv(6)), ("3.9", _pyenv(9)), ("newest", _newest())]

# A stand-in for the ``pbs`` module: just what the five scripts touch, with
# accept/reject ending the script as pbs_server does.
FAKE_PBS = r'''
import json, sys
LOG_ERROR, LOG_WARNING, LOG_DEBUG = 2, 4, 8
hook_config_filename = None
logs = []
_spec = None
class _Done(BaseException):
    pass
class _Attrs(object):
    def __init__(self, d):
        self.__dict__.update(d)
    def __getattr__(self, name):
        return None
class _Res(dict):
    def __getitem__(self, k):
        return self.get(k)
class _Event(object):
    def __init__(self, spec):
        self.requestor = spec.get("requestor")
        self.job = _job(spec["job"])
        self.job_o = _job(spec["job_o"]) if "job_o" in spec else None
        self.verdict = None
    def accept(self):
        self.verdict = ["accept", None]
        raise _Done()
    def reject(self, msg=None):
        self.verdict = ["reject", msg]
        raise _Done()
def _job(d):
    d = dict(d)
    d["Resource_List"] = _Res(d.get("Resource_List") or {})
    d["Variable_List"] = _Res(d.get("Variable_List") or {})
    return _Attrs(d)
_event = None
def event():
    return _event
def logmsg(level, msg):
    logs.append(msg)
def hold_types(s):
    return s
class _Server(object):
    def job(self, jid):
        return None
def server():
    return _Server()
pbs_conf = {}
'''

RUNNER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
import pbs
out = []
for spec in json.loads(sys.stdin.read()):
    pbs.hook_config_filename = spec["config"]
    pbs._event = pbs._Event(spec)
    del pbs.logs[:]
    with open(spec["script"]) as fh:
        code = compile(fh.read(), spec["script"], "exec")
    try:
        exec(code, {"__name__": "__main__"})
    except pbs._Done:
        pass
    j = pbs._event.job
    out.append({"verdict": pbs._event.verdict, "hold": j.Hold_Types, "comment": j.comment,
                "res": dict(j.Resource_List), "env": dict(j.Variable_List),
                "logs": list(pbs.logs)})
third = sorted(m for m in sys.modules if m.split(".")[0] in ("yaml", "globus_sdk", "requests"))
print(json.dumps({"version": list(sys.version_info[:2]), "runs": out, "third": third}))
'''


@pytest.fixture(scope="module")
def hook_site(tmp_path_factory):
    """A hook config as ``install`` writes it, and a user manifest."""
    from pbs_globus_staging import installer, siteconfig
    tmp = tmp_path_factory.mktemp("oldpy")
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    data = tmp / "data"
    data.mkdir()
    site = siteconfig.from_dict(
        {"site": {"collection": "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e",
                  "roots": [str(data) + "/"]},
         "collections": {"theta-dtn": "08925f04-569f-11e7-bef8-22000b9a448b"}}, source="t")
    cf = tmp / "hook.CF"
    installer.write_hook_config(cf, installer.hook_config(
        site_config_path=tmp / "site.yaml", site=site, journal=str(tmp / "j.sqlite"),
        python=sys.executable, cycle_budget=10, alarm=30))
    from pbs_globus_staging.journal import Journal
    Journal.open(str(tmp / "j.sqlite")).close()
    manifest = data / "list.txt"
    manifest.write_text(str(data / "b") + "@theta-dtn:~/b\n")
    (tmp / "pbsmod").mkdir()
    (tmp / "pbsmod" / "pbs.py").write_text(FAKE_PBS)
    return {"tmp": tmp, "cf": str(cf), "user": user, "data": str(data),
            "manifest": str(manifest)}


def _run(python, site, specs):
    for s in specs:
        s.setdefault("config", site["cf"])
    proc = subprocess.run([python, "-I", "-c", RUNNER, str(site["tmp"] / "pbsmod")],
                          input=json.dumps(specs), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("label,python", INTERPRETERS, ids=[i[0] for i in INTERPRETERS])
def test_hook_scripts_run_on_old_and_new_python(label, python, hook_site):
    if not python or not shutil.which(python):
        pytest.skip("no Python %s interpreter on this machine (looked in %s and /usr/bin)"
                    % (label, PYENV))
    scripts = {p.stem.replace("globus_staging_", ""): str(p) for p in HOOKS.glob("*.py")}
    assert sorted(scripts) == ["jobobit", "modifyjob", "periodic", "queuejob", "runjob"]
    user, data = hook_site["user"], hook_site["data"]
    good = data + "/in/@theta-dtn:~/in/"
    specs = [
        {"script": scripts["queuejob"], "requestor": user,
         "job": {"Resource_List": {"stagein_globus": good}}},
        {"script": scripts["queuejob"], "requestor": user,
         "job": {"Resource_List": {"stagein_globus": "nope"}}},
        {"script": scripts["queuejob"], "requestor": user,
         "job": {"Resource_List": {"stagein_globus": "manifest=" + hook_site["manifest"]}}},
        {"script": scripts["queuejob"], "requestor": user, "job": {"Resource_List": {}}},
        {"script": scripts["queuejob"], "requestor": user, "config": "/nonexistent.CF",
         "job": {"Resource_List": {"stagein_globus": good}}},
        {"script": scripts["modifyjob"], "requestor": user,
         "job": {"Resource_List": {"stagein_globus": good}},
         "job_o": {"euser": user, "job_state": 2, "Hold_Types": "s",
                   "Resource_List": {"globus_stage_state": "staging-in",
                                     "stagein_globus": good}}},
        {"script": scripts["runjob"],
         "job": {"Resource_List": {"stagein_globus": good, "globus_stage_state": "waiting"}}},
        {"script": scripts["runjob"],
         "job": {"Resource_List": {"stagein_globus": good, "globus_stage_state": "staged-in",
                                   "globus_stage_tasks": "t1+t2"}}},
        {"script": scripts["jobobit"],
         "job": {"id": label + ".s", "Exit_status": 3, "Resource_List": {"stagein_globus": good}}},
    ]
    out = _run(python, hook_site, specs)
    if label != "newest":
        assert out["version"] == [3, int(label.split(".")[1])]
    qj_ok, qj_bad, qj_manifest, qj_plain, qj_noconf, mj, rj_wait, rj_ok, obit = out["runs"]
    assert qj_ok["verdict"] == ["accept", None] and qj_ok["hold"] == "s"
    assert qj_ok["res"]["globus_stage_state"] == "waiting"
    assert qj_bad["verdict"][0] == "reject"
    assert qj_bad["verdict"][1].startswith("stagein_globus: item 1 'nope'")
    assert qj_manifest["verdict"] == ["accept", None] and qj_manifest["hold"] == "s"
    assert qj_plain["verdict"] == ["accept", None] and qj_plain["hold"] is None
    assert qj_noconf["verdict"][0] == "reject" and "staging is unavailable" in qj_noconf["verdict"][1]
    assert mj["verdict"][0] == "reject" and "cannot be changed once staging" in mj["verdict"][1]
    assert rj_wait["verdict"][0] == "reject" and rj_wait["hold"] == "s"
    assert rj_ok["verdict"] == ["accept", None]
    assert rj_ok["env"]["GLOBUS_STAGEIN_TASKS"] == "t1:t2"
    assert obit["verdict"] == ["accept", None] and obit["logs"] == []
    assert out["third"] == []                      # stdlib only inside pbs_server
    from pbs_globus_staging.journal import Journal
    j = Journal.open(str(hook_site["tmp"] / "j.sqlite"))
    try:
        assert j.obit(label + ".s").exit_status == 3     # the jobobit hook's write landed
    finally:
        j.close()


SAME_ON_BOTH = r'''
import json, sys
if sys.argv[1] == "shim":
    sys.modules["dataclasses"] = None        # as on 3.6: the import fails
sys.path.insert(0, sys.argv[2])
from pbs_globus_staging import hookcore, request, siteconfig
from pbs_globus_staging._py36 import dataclasses
site = siteconfig.from_dict({"site": {"collection": "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e",
                                      "roots": ["/lus/{user}/"]},
                             "collections": {"dtn": "08925f04-569f-11e7-bef8-22000b9a448b"},
                             "limits": {"max_items": 7}}, source="a.yaml")
req = request.parse("/lus/a/x@dtn:/y+/lus/a/z@dtn:/w+sync=checksum", direction="in")
item = dataclasses.replace(req.items[0], origin="manifest line 1")
try:
    site.source = "no"
    frozen = "assigned"
except AttributeError as exc:
    frozen = type(exc).__name__
print(json.dumps({
    "stand_in": not hasattr(dataclasses, "__file__"),
    "site": repr(site), "hook": siteconfig.to_hook_config(site),
    "back": siteconfig.from_hook_config(siteconfig.to_hook_config(site)) == site,
    "renamed": repr(dataclasses.replace(site, source="b.yaml")),
    "req": repr(req), "eq": [item == req.items[0], hash(item) == hash(req.items[0]),
                             req.items[0] == req.items[1]],
    "answer": repr(hookcore.Answer(reject="x")), "accept": hookcore.Answer() == hookcore.ACCEPT,
    "fields": [(f.name, repr(f.default)) for f in dataclasses.fields(siteconfig.Limits)],
    "frozen": frozen}, sort_keys=True))
'''


def test_dataclass_stand_in_behaves_as_dataclasses():
    """The 3.6 stand-in for ``dataclasses`` gives what the real module gives, on the
    modules' own classes (same interpreter, the real module blocked for the second run)."""
    outs = {}
    for mode in ("real", "shim"):
        proc = subprocess.run([sys.executable, "-I", "-c", SAME_ON_BOTH, mode, str(REPO / "lib")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        outs[mode] = json.loads(proc.stdout)
    assert outs["real"].pop("stand_in") is False and outs["shim"].pop("stand_in") is True
    assert outs["real"]["frozen"] == "FrozenInstanceError"
    assert outs["real"]["eq"] == [True, True, False]
    assert outs["shim"] == outs["real"]
