# PBS runjob hook: the guard.  A job whose Globus stage-in has not succeeded
# never starts: reject the run and put the system hold back.  Stdlib only.
import sys

import pbs

e = pbs.event()
j = e.job
try:
    stagein = j.Resource_List["stagein_globus"]
except AttributeError:
    e.accept()
if stagein is None:
    e.accept()
state = j.Resource_List["globus_stage_state"]
parent_state = None
if state != "staged-in" and j.array_id:
    parent = pbs.server().job(str(j.array_id))     # subjobs may carry the parent's state
    if parent is not None:
        parent_state = parent.Resource_List["globus_stage_state"]


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
    answer = _core().runjob(stagein=stagein, state=state,
                            tasks=j.Resource_List["globus_stage_tasks"], parent_state=parent_state)
except Exception as exc:
    # Without the package the guard still holds: only the one state word lets a job run.
    pbs.logmsg(pbs.LOG_ERROR, "globus_staging: runjob check failed: %r" % (exc,))
    ok = state == "staged-in" or parent_state == "staged-in"
    answer = None
    if not ok:
        j.Hold_Types = pbs.hold_types("s")
        e.reject("stagein_globus: stage-in not complete; the job stays held until its data "
                 "are in place")
    e.accept()
if answer.reject:
    if answer.add_system_hold:
        letters = str(j.Hold_Types or "").replace("n", "") + "s"
        j.Hold_Types = pbs.hold_types("".join(c for c in "soup" if c in letters))
    e.reject(answer.reject)
for name, value in answer.env.items():
    j.Variable_List[name] = value
e.accept()
