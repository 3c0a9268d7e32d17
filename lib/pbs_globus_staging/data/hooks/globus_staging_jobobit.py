# PBS jobobit hook: remember the exit status the stage-out decision needs.
# The job is read-only here and PBS commands would hang pbs_server, so the
# status goes into the journal (SQLite, short timeout).  Stdlib only.
import sys

import pbs

e = pbs.event()
j = e.job
try:
    staged = j.Resource_List["stageout_globus"] is not None or \
        j.Resource_List["stagein_globus"] is not None
except AttributeError:
    e.accept()
if not staged:
    e.accept()


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


def _text(value):
    return None if value is None else str(value)


try:
    core = _core()
    # The request is recorded with the exit status: the agent may never have
    # seen this job queued or running (it can end within a second).
    owner = _text(j.euser) or (_text(j.Job_Owner) or "").split("@")[0] or None
    problem = core.jobobit(job_id=str(j.id), exit_status=j.Exit_status, has_request=True,
                           config=core.load_config(pbs.hook_config_filename),
                           stageout=_text(j.Resource_List["stageout_globus"]),
                           owner=owner, project=_text(j.project))
except Exception as exc:
    problem = "jobobit: %s" % (type(exc).__name__,)
if problem:
    pbs.logmsg(pbs.LOG_WARNING, "globus_staging: " + problem)
e.accept()
