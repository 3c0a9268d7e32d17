# PBS queuejob hook: validate stagein_globus/stageout_globus and hold staged jobs.
# Runs inside pbs_server for every qsub: stdlib only, no network, no PBS commands.
import sys

import pbs

e = pbs.event()
try:
    res = e.job.Resource_List
    stagein, stageout = res["stagein_globus"], res["stageout_globus"]
except AttributeError:      # resources not created: the suite is not installed
    e.accept()
if stagein is None and stageout is None:
    e.accept()              # the common case costs two lookups


def _core():
    # Repeated in each hook on purpose: PBS loads every hook script on its own, and
    # where the package lives is known only from this hook's config file.
    import json
    with open(pbs.hook_config_filename or "", encoding="utf-8") as fh:
        path = json.load(fh).get("package_path")
    if path and path not in sys.path:
        # Appended, not prepended: pbs_server's interpreter is shared by every hook
        # of the site, and a venv's site-packages must not shadow what they import.
        sys.path.append(path)
    from pbs_globus_staging import hookcore
    return hookcore


try:
    core = _core()
    config, why = core.load_config(pbs.hook_config_filename), None
except Exception as exc:    # a missing or broken config refuses staged jobs, never crashes
    core, config, why = None, None, type(exc).__name__ + ": " + str(exc).splitlines()[0][:200]
if core is None:
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: hook config unusable: %s" % why)
    e.reject("stagein_globus: staging is unavailable: the site's Globus staging hooks are "
             "not configured; please tell your PBS administrator")
try:
    project = e.job.project
    answer = core.queuejob(stagein=stagein, stageout=stageout, user=str(e.requestor or ""),
                           config=config, config_error=why,
                           project=str(project) if project is not None else None)
except Exception as exc:
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: queuejob failed: %r" % (exc,))
    e.reject("stagein_globus: the staging request could not be checked; please tell your "
             "PBS administrator")
if answer.reject:
    e.reject(answer.reject)
if answer.add_system_hold:
    e.job.Hold_Types = pbs.hold_types(core.merged_holds(e.job.Hold_Types, "s"))
for name, value in answer.resources.items():
    e.job.Resource_List[name] = value
if answer.comment:
    e.job.comment = answer.comment
try:
    core.wake_agent(config.journal)     # a byte into the serving agent's FIFO
except Exception:
    pass
e.accept()
