# PBS periodic hook: run one staging agent cycle.  The agent runs as a
# subprocess with the interpreter named in the hook config, so the project's
# dependencies (globus-sdk, PyYAML) never have to live in PBS's own Python,
# and it is bounded well inside this hook's alarm.
import json
import os
import subprocess

import pbs

e = pbs.event()
try:
    with open(pbs.hook_config_filename or "", encoding="utf-8") as fh:
        conf = json.load(fh)
    python = conf["python"]
    budget = float(conf.get("cycle_budget", 15))
    alarm = float(conf.get("alarm", 30))
except Exception as exc:
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: periodic hook config unusable: %s" % (exc,))
    e.reject("globus_staging: hook config unusable")
env = dict(os.environ)
env.update({k: str(v) for k, v in pbs.pbs_conf.items() if k in ("PBS_EXEC", "PBS_HOME", "PBS_SERVER") and v})
env.update({str(k): str(v) for k, v in (conf.get("env") or {}).items()})
cmd = [python, "-m", "pbs_globus_staging"]
if conf.get("site_config"):
    cmd += ["--config", str(conf["site_config"])]
cmd += ["agent", "--once", "--budget", str(budget)]
try:
    # The agent stops itself at its budget; the timeout is the backstop that
    # keeps this child inside the alarm even if the agent hangs.
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=max(1.0, min(budget + 5.0, alarm - 2.0)))
    if proc.returncode not in (0, 3):
        tail = proc.stdout.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        pbs.logmsg(pbs.LOG_WARNING, "globus_staging: agent exited %d: %s" % (proc.returncode, tail[0][:300]))
except subprocess.TimeoutExpired:
    pbs.logmsg(pbs.LOG_WARNING, "globus_staging: agent cycle killed at the time limit; it resumes next cycle")
except OSError as exc:
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: cannot start the agent %s: %s" % (python, exc.strerror))
e.accept()
