# PBS periodic hook: keep the staging agent going.  The agent runs as a
# subprocess with the interpreter named in the hook config, so the project's
# dependencies (globus-sdk, PyYAML) never have to live in PBS's own Python.
#
# agent.serve (the default): one long-lived `agent --serve` per site; this hook
# only starts it when it is not running (its lock file is free) and returns at
# once.  agent.serve false: one bounded `agent --once` run per period, well
# inside this hook's alarm.  Stdlib only, Python 3.6+.
import fcntl
import json
import os
import subprocess

import pbs

e = pbs.event()
try:
    with open(pbs.hook_config_filename or "", encoding="utf-8") as fh:
        conf = json.load(fh)
    python = conf["python"]
    # installer.hook_config writes all three: their defaults live in siteconfig only
    budget = float(conf["cycle_budget"])
    alarm = float(conf["alarm"])
    serve = bool(conf["site"]["agent"]["serve"])
    state_dir = os.path.dirname(str(conf.get("journal") or ""))
except Exception as exc:
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: periodic hook config unusable: %s" % (exc,))
    e.reject("globus_staging: hook config unusable")
env = dict(os.environ)
env.update({k: str(v) for k, v in pbs.pbs_conf.items() if k in ("PBS_EXEC", "PBS_HOME", "PBS_SERVER") and v})
env.update({str(k): str(v) for k, v in (conf.get("env") or {}).items()})
cmd = [python, "-m", "pbs_globus_staging"]
if conf.get("site_config"):
    cmd += ["--config", str(conf["site_config"])]


def _serving(directory):
    """True when an agent holds the lock (a free lock is taken and let go)."""
    try:
        fd = os.open(os.path.join(directory, "agent.lock"), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)     # closing drops a lock we took
    return False


if serve and state_dir:
    if not _serving(state_dir):
        try:
            # Its own session, no inherited descriptors (pbs_server's sockets),
            # stdio on /dev/null: it outlives this hook's child by design.  Its
            # log is agent.log beside the journal.
            subprocess.Popen(cmd + ["agent", "--serve"], env=env, cwd="/",
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, close_fds=True,
                             start_new_session=True)
            pbs.logmsg(pbs.LOG_DEBUG, "globus_staging: started the serving agent")
        except OSError as exc:
            pbs.logmsg(pbs.LOG_ERROR, "globus_staging: cannot start the agent %s: %s" % (python, exc.strerror))
    e.accept()

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
