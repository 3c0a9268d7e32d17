"""What runs inside pbs_server must work on the distribution's Python 3.9+
with the standard library alone: the hook scripts and every module they reach."""
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"


def oldest_python():
    # The oldest Python at hand: 3.9 where installed (as on the dev machines), else ours.
    return PY39 if os.path.exists(PY39) else sys.executable


def test_hook_scripts_compile_and_core_runs_on_oldest_python(tmp_path):
    scripts = sorted(str(p) for p in (REPO / "hooks").glob("*.py"))
    assert len(scripts) == 5
    site = {"site": {"collection": "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e",
                     "roots": ["/lus/{user}/"]},
            "collections": {"theta-dtn": "08925f04-569f-11e7-bef8-22000b9a448b"}}
    code = f"""
import sys, json, py_compile
sys.path.insert(0, {str(REPO / 'lib')!r})
for s in {scripts!r}:
    py_compile.compile(s, doraise=True)
from pbs_globus_staging import hookcore, siteconfig, decide, journal, states
cfg = hookcore.HookConfig(package_path="", site=siteconfig.from_dict({site!r}, source="t"),
                          journal={str(tmp_path / 'j.sqlite')!r}, raw={{}})
a = hookcore.queuejob(stagein="/lus/alice/in/@theta-dtn:~/in/", stageout=None, user="alice",
                      config=cfg)
b = hookcore.queuejob(stagein="nope", stageout=None, user="alice", config=cfg)
r = hookcore.runjob(stagein="/lus/alice/in/@theta-dtn:~/in/", state="staged-in", tasks="t1")
assert hookcore.jobobit(job_id="1.s", exit_status=0, has_request=True, config=cfg) is None
third = [m for m in sys.modules if m.split('.')[0] in ('yaml', 'globus_sdk', 'requests')]
print(json.dumps([sys.version_info[:2], a.add_system_hold, b.reject, r.env, third]))
"""
    out = subprocess.run([oldest_python(), "-I", "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    version, held, refusal, env, third_party = json.loads(out.stdout)
    assert held is True and refusal.startswith("stagein_globus: item 1 'nope'")
    assert env["GLOBUS_STAGEIN_TASKS"] == "t1"
    assert third_party == []                       # stdlib only inside pbs_server
