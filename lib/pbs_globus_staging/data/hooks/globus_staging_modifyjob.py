# PBS modifyjob hook: a qalter of a staging request is re-validated before
# staging starts and refused after.  Runs inside pbs_server: stdlib only.
import sys

import pbs

e = pbs.event()
try:
    res = e.job.Resource_List
    new_in, new_out = res["stagein_globus"], res["stageout_globus"]
except AttributeError:
    e.accept()
if new_in is None and new_out is None:
    e.accept()              # e.g. the agent's own qalter of globus_stage_state


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
except Exception as exc:
    core, config, why = None, None, type(exc).__name__
if core is None:
    e.reject("stagein_globus: staging is unavailable: the site's Globus staging hooks are "
             "not configured; please tell your PBS administrator")
old = e.job_o
old_res = old.Resource_List
owner = str(old.euser or str(old.Job_Owner or "").split("@")[0] or e.requestor or "")
state_letter = core.state_letter(old.job_state)
try:
    answer = core.modifyjob(new_stagein=new_in, new_stageout=new_out,
                            state=old_res["globus_stage_state"], job_state=state_letter,
                            owner=owner, had_stagein=old_res["stagein_globus"] is not None,
                            config=config, config_error=why,
                            project=str(old.project) if old.project is not None else None)
except Exception as exc:
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: modifyjob failed: %r" % (exc,))
    e.reject("stagein_globus: the change could not be checked; please tell your PBS administrator")
if answer.reject:
    e.reject(answer.reject)
if answer.add_system_hold:
    e.job.Hold_Types = pbs.hold_types(core.merged_holds(old.Hold_Types, "s"))
for name, value in answer.resources.items():
    e.job.Resource_List[name] = value
if answer.comment:
    e.job.comment = answer.comment
e.accept()
