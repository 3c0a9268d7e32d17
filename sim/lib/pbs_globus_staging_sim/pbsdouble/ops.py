"""Request handlers: what pbs_server does for each batch request.

Every handler runs under the server lock (``core.locked_state``) and runs event hooks
in-process.  Failures raise ``PbsError`` carrying the exact stderr line(s) and pbs_errno; the
command exits with ``errno & 0xff`` like the real clients.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time

from . import core
from .core import (PBSE_ATTRRO, PBSE_BADATVAL, PBSE_BADDEPEND, PBSE_BADSTATE, PBSE_DUPLIST,
                   PBSE_HISTJOBID, PBSE_HOOKERROR, PBSE_MODATRRUN, PBSE_NOATTR, PBSE_PERM,
                   PBSE_RESCBUSY, PBSE_UNKJOBID, PBSE_UNKQUE, PBSE_UNKRESC)


class PbsError(Exception):
    def __init__(self, message: str, errno: int, *, stdout: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.stdout = stdout

    @property
    def exit_code(self) -> int:
        return self.errno & 0xFF


class Requestor:
    def __init__(self, user: str, host: str = "localhost") -> None:
        self.user = user
        self.host = host

    def is_manager(self, state: dict) -> bool:
        return self.user in state.get("managers", ["root"])

    def __str__(self) -> str:
        return "%s@%s" % (self.user, self.host)


def _pbs():
    from . import pbs as pbsmod
    return pbsmod


def _hookrun():
    from . import hookrun
    return hookrun


_USER_SETTABLE_W = ("depend", "group_list", "stagein", "stageout", "umask", "sandbox",
                    "block", "run_count", "tolerate_node_failures", "max_run_subjobs",
                    "create_resv_from_job", "release_nodes_on_stageout", "pwd", "cred",
                    "Account_Name", "project", "Priority", "Rerunable")
_MANAGER_ONLY_ATTRS = ("comment",)


def resource_def(state: dict, name: str):
    pbsmod = _pbs()
    low = name.lower()
    for k, v in pbsmod._BUILTIN_RESOURCES.items():
        if k == low:
            return k, v, ""
    for k, r in state["resources"].items():
        if k.lower() == low:
            return k, r.get("type", "string"), r.get("flag", "")
    return None


def _check_resources(state: dict, req: Requestor, resources: dict, *, hook_set: set,
                     prefix: str, suffix: str = "") -> None:
    """Unknown names, then user permission (flag r/i) for values the hooks did not set."""
    for name in resources:
        if resource_def(state, name) is None:
            raise PbsError("%s: Unknown resource Resource_List.%s%s" % (prefix, name, suffix),
                           PBSE_UNKRESC)
    if req.is_manager(state):
        return
    for name in resources:
        canon, _, flags = resource_def(state, name)
        if ("r" in flags or "i" in flags) and canon.lower() not in hook_set:
            raise PbsError("%s: Cannot set attribute, read only or insufficient permission  "
                           "Resource_List.%s%s" % (prefix, canon, suffix), PBSE_ATTRRO)


def _canon_resources(state: dict, resources: dict) -> dict:
    out = {}
    for name, val in resources.items():
        d = resource_def(state, name)
        out[d[0] if d else name] = val
    return out


# ---------------------------------------------------------------- dependencies
def _dep_entries(text: str):
    for part in str(text or "").split(","):
        kind, _, ids = part.partition(":")
        if kind and ids:
            yield kind, ids.split(":")


def _dep_status(state: dict, kind: str, dep_id: str) -> str:
    """'ok', 'wait' or 'never' for one dependency."""
    _, attrs, _ = core.find_job(state, dep_id)
    if attrs is None:
        return "ok" if kind in ("afterany",) else "never"
    st = attrs.get("job_state")
    if kind == "after":
        return "ok" if st in ("R", "E", "F", "X", "B") else "wait"
    if st not in ("F", "X"):
        return "wait"
    status = attrs.get("Exit_status")
    ran = status is not None
    if kind == "afterany":
        return "ok"
    if kind == "afterok":
        return "ok" if ran and int(status) == 0 else "never"
    if kind == "afternotok":
        return "ok" if not ran or int(status) != 0 else "never"
    return "ok"


def evaluate_dependencies(conf: core.Conf, state: dict) -> None:
    """Release dependency holds that are now satisfied; delete jobs that never can run."""
    for jid, attrs in list(state["jobs"].items()):
        if not attrs.get("_dep_wait") or attrs.get("job_state") in ("F", "X"):
            continue
        results = [_dep_status(state, kind, d)
                   for kind, ids in _dep_entries(attrs.get("depend")) for d in ids
                   if kind.startswith("after")]
        if "never" in results:
            _terminate_unstarted(conf, state, jid, attrs,
                                 comment="Job deleted as result of dependency on job")
        elif all(r == "ok" for r in results):
            attrs.pop("_dep_wait", None)
            holds = attrs.get("Hold_Types", "n").replace("s", "")
            attrs["Hold_Types"] = core.hold_text(holds)
            core.eval_hold_state(attrs)


# ---------------------------------------------------------------- qsub
def submit(conf: core.Conf, req: Requestor, sent: dict, *, script: str,
           unknown_resources: dict) -> str:
    """`sent` holds what qsub sends (attribute -> value; Resource_List/Variable_List dicts)."""
    pbsmod = _pbs()
    hookrun = _hookrun()
    with core.locked_state(conf) as state:
        queue = sent.get("queue", "")
        if queue and queue != "workq":
            raise PbsError("qsub: Unknown queue", PBSE_UNKQUE)
        known = {k: v for k, v in sent["Resource_List"].items()
                 if resource_def(state, k) is not None}
        unknown = dict(unknown_resources)
        unknown.update({k: v for k, v in sent["Resource_List"].items() if k not in known})
        attrs = dict(sent)
        attrs["Resource_List"] = _canon_resources(state, known)
        hook_set: set = set()
        for hook in hookrun.hooks_for(state, "queuejob"):
            view = {k: v for k, v in attrs.items() if not k.startswith("_")}
            view.setdefault("queue", "")
            job = pbsmod._job("", view, mode="queuejob", defs=hookrun.resource_defs(state))
            out = hookrun.run_hook(conf, state, hook, event="queuejob", params={"job": job},
                                   requestor=req.user, requestor_host=req.host)
            if not out.accepted:
                raise PbsError("qsub: %s" % out.message, PBSE_HOOKERROR)
            for key in hookrun.apply_changes(job, attrs):
                if key.startswith("Resource_List."):
                    hook_set.add(key.split(".", 1)[1].lower())
        user_res = {k: v for k, v in attrs["Resource_List"].items()
                    if k.lower() not in hook_set}
        user_res.update(unknown)
        _check_resources(state, req, user_res, hook_set=hook_set, prefix="qsub")
        attrs["Resource_List"].update(unknown)
        deps = list(_dep_entries(attrs.get("depend")))
        for kind, ids in deps:
            for i, d in enumerate(ids):
                fid, dattrs, _ = core.find_job(state, d)
                if dattrs is None:
                    raise PbsError("qsub: Unknown Job Id %s" % fid, PBSE_UNKJOBID)
                ids[i] = fid
        if deps:
            attrs["depend"] = ",".join("%s:%s" % (k, ":".join(ids)) for k, ids in deps)
        num = state["next_id"]
        state["next_id"] = num + 1
        is_array = bool(attrs.get("array_indices_submitted"))
        jid = "%d%s.%s" % (num, "[]" if is_array else "", state["server_name"])
        _fill_defaults(state, attrs, jid, num, req, is_array)
        script_path = conf.priv / "jobs" / ("%d.SC" % num)
        script_path.write_text(script, encoding="utf-8")
        attrs["_script"] = str(script_path)
        if any(_dep_status(state, k, d) != "ok" for k, ids in deps for d in ids
               if k.startswith("after")):
            attrs["_dep_wait"] = True
            attrs["Hold_Types"] = core.hold_text(attrs.get("Hold_Types", "n") + "s")
        if attrs["Hold_Types"] != "n":
            core.set_state(attrs, "H", 22 if attrs.get("_dep_wait") else 20)
        else:
            core.set_state(attrs, "Q", 10)
            attrs["etime"] = attrs["ctime"]
        if is_array:
            core.array_counts(attrs)
        state["jobs"][jid] = attrs
        core.log(conf, "Job", jid, "enqueuing into workq, state %s hop 1" % attrs["job_state"],
                 0x0100)
        core.log(conf, "Job", jid, "Job Queued at request of %s, owner = %s, job name = %s, "
                 "queue = workq" % (req, attrs["Job_Owner"], attrs["Job_Name"]), 0x0008)
        return jid


def _fill_defaults(state: dict, attrs: dict, jid: str, num: int, req: Requestor,
                   is_array: bool) -> None:
    now = int(time.time())
    sname = state["server_name"]
    name = str(attrs.get("Job_Name") or "STDIN")
    attrs["Job_Name"] = name
    attrs["Job_Owner"] = "%s@%s" % (req.user, req.host)
    attrs["queue"] = "workq"
    attrs["server"] = sname
    attrs.setdefault("Checkpoint", "u")
    attrs["ctime"] = attrs["qtime"] = attrs["mtime"] = now
    workdir = attrs.get("Variable_List", {}).get("PBS_O_WORKDIR", os.getcwd())
    suffix = ".^array_index^" if is_array else ""
    attrs.setdefault("Error_Path", "%s:%s/%s.e%d%s" % (req.host, workdir, name, num, suffix))
    attrs.setdefault("Output_Path", "%s:%s/%s.o%d%s" % (req.host, workdir, name, num, suffix))
    attrs["Hold_Types"] = core.hold_text(str(attrs.get("Hold_Types", "n")))
    attrs.setdefault("Join_Path", "n")
    attrs.setdefault("Keep_Files", "n")
    attrs.setdefault("Mail_Points", "a")
    attrs.setdefault("Priority", 0)
    attrs.setdefault("Rerunable", "True")
    rl = attrs["Resource_List"]
    if "select" not in rl:
        rl["select"] = "1:ncpus=%s" % rl.get("ncpus", 1)
        rl.setdefault("ncpus", 1)
    else:
        chunks = [c for c in str(rl["select"]).split("+") if c]
        nodes, cpus = 0, 0
        for c in chunks:
            head, _, rest = c.partition(":")
            n = int(head) if head.isdigit() else 1
            m = re.search(r"(?:^|:)ncpus=(\d+)", c if not head.isdigit() else rest)
            nodes += n
            cpus += n * (int(m.group(1)) if m else 1)
        rl["ncpus"] = cpus
        rl["nodect"] = nodes
    rl.setdefault("nodect", 1)
    rl.setdefault("place", "pack")
    attrs["schedselect"] = rl["select"]
    vl = attrs.setdefault("Variable_List", {})
    vl["PBS_O_QUEUE"] = "workq"
    attrs["euser"] = req.user
    attrs["egroup"] = _group_of(req.user)
    attrs["queue_rank"] = int(time.time() * 1e6)
    attrs["queue_type"] = "E"
    if is_array:
        attrs["array"] = "True"
    attrs.setdefault("project", "_pbs_project_default")
    attrs["Submit_Host"] = req.host


def _group_of(user: str) -> str:
    try:
        import grp
        import pwd
        return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    except (KeyError, ImportError):
        return user


# ---------------------------------------------------------------- lookups
def _lookup(state: dict, jobid: str, cmd: str, *, allow_finished: bool = False):
    fid, attrs, parent = core.find_job(state, jobid)
    if attrs is None:
        raise PbsError("%s: Unknown Job Id %s" % (cmd, fid), PBSE_UNKJOBID)
    if not allow_finished and core.is_finished(attrs):
        raise PbsError("%s: Job has finished %s" % (cmd, fid), PBSE_HISTJOBID)
    return fid, attrs, parent


def _may_touch(state: dict, req: Requestor, attrs: dict) -> bool:
    return req.is_manager(state) or core.owner_of(attrs) == req.user


# ---------------------------------------------------------------- qhold / qrls
def _check_hold_perm(state: dict, req: Requestor, attrs: dict, letters: str, cmd: str,
                     fid: str) -> None:
    if not _may_touch(state, req, attrs):
        raise PbsError("%s: Unauthorized Request  %s" % (cmd, fid), PBSE_PERM)
    if not req.is_manager(state) and any(c in letters for c in "so"):
        raise PbsError("%s: Unauthorized Request  %s" % (cmd, fid), PBSE_PERM)


def hold(conf: core.Conf, req: Requestor, jobid: str, letters: str = "u") -> None:
    with core.locked_state(conf) as state:
        fid, attrs, parent = _lookup(state, jobid, "qhold")
        _check_hold_perm(state, req, attrs, letters, "qhold", fid)
        if parent is not None:
            raise PbsError("qhold: Request invalid for state of job %s" % fid, PBSE_BADSTATE)
        attrs["Hold_Types"] = core.hold_text(attrs.get("Hold_Types", "n").replace("n", "")
                                             + letters)
        if attrs["job_state"] in ("Q", "H"):
            core.eval_hold_state(attrs)
            attrs["comment"] = "Job held by %s on %s" % (req.user, time.ctime())
        core.log(conf, "Job", fid, "Holds %s set at request of %s" % (letters, req), 0x0008)


def release(conf: core.Conf, req: Requestor, jobid: str, letters: str = "u") -> None:
    with core.locked_state(conf) as state:
        fid, attrs, parent = _lookup(state, jobid, "qrls")
        _check_hold_perm(state, req, attrs, letters, "qrls", fid)
        if parent is not None:
            raise PbsError("qrls: Request invalid for state of job %s" % fid, PBSE_BADSTATE)
        holds = attrs.get("Hold_Types", "n")
        for c in letters:
            holds = holds.replace(c, "")
        attrs["Hold_Types"] = core.hold_text(holds)
        core.eval_hold_state(attrs)
        core.log(conf, "Job", fid, "Holds %s released at request of %s" % (letters, req),
                 0x0008)


# ---------------------------------------------------------------- qalter
def alter(conf: core.Conf, req: Requestor, jobid: str, changes: dict) -> None:
    """`changes`: attribute -> value; Resource_List -> {name: value}; Hold_Types letters."""
    pbsmod = _pbs()
    hookrun = _hookrun()
    with core.locked_state(conf) as state:
        fid, attrs, parent = _lookup(state, jobid, "qalter")
        if not _may_touch(state, req, attrs):
            raise PbsError("qalter: Unauthorized Request  %s" % fid, PBSE_PERM)
        mgr = req.is_manager(state)
        for key in changes:
            if key in _MANAGER_ONLY_ATTRS and not mgr:
                raise PbsError("qalter: Cannot set attribute, read only or insufficient "
                               "permission  %s %s" % (key, fid), PBSE_ATTRRO)
        if "Hold_Types" in changes:
            _check_hold_perm(state, req, attrs, changes["Hold_Types"], "qalter", fid)
        if attrs["job_state"] in ("R", "E", "B") and not mgr and \
                set(changes) - {"comment"}:
            raise PbsError("qalter: Cannot modify attribute while job running  %s" % fid,
                           PBSE_MODATRRUN)
        res = changes.get("Resource_List", {})
        unknown = {k: v for k, v in res.items() if resource_def(state, k) is None}
        sent = dict(changes)
        if res:
            sent["Resource_List"] = _canon_resources(
                state, {k: v for k, v in res.items() if k not in unknown})
        hook_set: set = set()
        for hook in hookrun.hooks_for(state, "modifyjob"):
            job = pbsmod._job(fid, sent, mode="modifyjob", defs=hookrun.resource_defs(state))
            job_o = pbsmod._job(fid, {k: v for k, v in attrs.items()
                                      if not k.startswith("_")}, mode="readonly",
                                 defs=hookrun.resource_defs(state))
            out = hookrun.run_hook(conf, state, hook, event="modifyjob",
                                   params={"job": job, "job_o": job_o},
                                   requestor=req.user, requestor_host=req.host)
            if not out.accepted:
                raise PbsError("qalter: %s %s" % (out.message, fid), PBSE_HOOKERROR)
            for key in hookrun.apply_changes(job, sent):
                if key.startswith("Resource_List."):
                    hook_set.add(key.split(".", 1)[1].lower())
        user_res = {k: v for k, v in sent.get("Resource_List", {}).items()
                    if k.lower() not in hook_set}
        user_res.update(unknown)
        _check_resources(state, req, user_res, hook_set=hook_set, prefix="qalter",
                         suffix=" " + fid)
        for key, val in sent.items():
            if key == "Resource_List":
                rl = attrs.setdefault("Resource_List", {})
                for rk, rv in val.items():
                    for k in [k for k in rl if k.lower() == rk.lower()]:
                        del rl[k]
                    if rv is not None and rv != "":
                        rl[rk] = rv
                    core.log(conf, "Job", fid, "Resource_List.%s=%s" % (rk, rv), 0x0008)
            elif key == "Variable_List":
                attrs.setdefault("Variable_List", {}).update(val)
            elif key == "Hold_Types":
                attrs["Hold_Types"] = core.hold_text(str(val))
                core.eval_hold_state(attrs)
            elif val is None:
                attrs.pop(key, None)
            else:
                attrs[key] = val
                if key == "comment":
                    core.log(conf, "Job", fid, 'comment="%s"' % val, 0x0008)
        attrs["mtime"] = int(time.time())
        core.log(conf, "Job", fid, "Job Modified at request of %s" % req, 0x0008)


# ---------------------------------------------------------------- qdel
def _terminate_unstarted(conf, state, jid, attrs, *, comment: str | None = None) -> None:
    now = int(time.time())
    if comment:
        attrs["comment"] = comment
    elif attrs.get("comment"):
        attrs["comment"] = "%s and terminated" % attrs["comment"]
    core.set_state(attrs, "F", 91)
    attrs["history_timestamp"] = now
    for sub in attrs.get("_subjobs", {}).values():
        if not core.is_finished(sub):
            core.set_state(sub, "X", 91)
    if str(state["server"].get("job_history_enable", "True")).lower() not in ("true", "1"):
        state["jobs"].pop(jid, None)


def delete(conf: core.Conf, req: Requestor, jobid: str, *, purge: bool = False) -> None:
    with core.locked_state(conf) as state:
        fid, attrs, parent = _lookup(state, jobid, "qdel", allow_finished=purge)
        if not _may_touch(state, req, attrs):
            raise PbsError("qdel: Unauthorized Request  %s" % fid, PBSE_PERM)
        core.log(conf, "Job", fid, "delete job request received", 0x0100)
        core.log(conf, "Job", fid, "Job to be deleted at request of %s" % req, 0x0100)
        if parent is not None:
            if attrs.get("job_state") == "R":
                _kill(attrs)
            else:
                raise PbsError("qdel: Request invalid for state of job %s" % fid,
                               PBSE_BADSTATE)
            return
        if core.is_finished(attrs):
            if purge:
                state["jobs"].pop(fid, None)
            return
        running = [a for a in [attrs] + list(attrs.get("_subjobs", {}).values())
                   if a.get("job_state") in ("R", "E")]
        if running:
            for a in running:
                _kill(a)
            attrs["_deleted"] = True
            if purge:
                attrs["_purge"] = True
            return
        _terminate_unstarted(conf, state, fid, attrs)
        if purge:
            state["jobs"].pop(fid, None)


def _kill(attrs: dict) -> None:
    attrs["_deleted"] = True
    pgid = attrs.get("_pgid")
    if pgid:
        try:
            os.killpg(int(pgid), signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


# ---------------------------------------------------------------- qselect
_OPS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "lt": lambda a, b: a < b,
        "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b}


def select_jobs(conf: core.Conf, req: Requestor, *, resources: list, holds: str | None,
                user: str | None, states: str | None, history: bool) -> list:
    with core.locked_state(conf, write=False) as state:
        out = []
        for jid, attrs in state["jobs"].items():
            if core.is_finished(attrs) and not history:
                continue
            if holds is not None and attrs.get("Hold_Types", "n") != core.hold_text(holds):
                continue
            if user is not None and core.owner_of(attrs) != user:
                continue
            if states is not None and attrs.get("job_state") not in states:
                continue
            ok = True
            for name, op, value in resources:
                rl = {k.lower(): v for k, v in attrs.get("Resource_List", {}).items()}
                have = rl.get(name.lower())
                if have is None:
                    ok = op == "ne"
                    if not ok:
                        break
                    continue
                a, b = str(have), value
                if str(have).isdigit() and value.isdigit():
                    a, b = int(have), int(value)
                if not _OPS[op](a, b):
                    ok = False
                    break
            if ok:
                out.append(jid)
        return out


# ---------------------------------------------------------------- runjob / obit
_RUNJOB_ACCEPT_FORBIDDEN = ("Execution_Time", "Hold_Types", "project", "depend")
_RUNJOB_ON_ACCEPT = ("Output_Path", "Error_Path", "Resource_List", "Variable_List",
                     "create_resv_from_job")
_RUNJOB_ON_REJECT = ("Execution_Time", "Hold_Types", "project", "depend", "Variable_List",
                     "Resource_List")


def run_runjob_hooks(conf: core.Conf, state: dict, jid: str, attrs: dict, *,
                     requestor: str = "Scheduler", host: str | None = None) -> tuple:
    """Run runjob hooks on a job about to start.  Returns (accepted, message)."""
    pbsmod = _pbs()
    hookrun = _hookrun()
    for hook in hookrun.hooks_for(state, "runjob"):
        view = {k: v for k, v in attrs.items() if not k.startswith("_")}
        job = pbsmod._job(jid, view, mode="runjob", defs=hookrun.resource_defs(state))
        out = hookrun.run_hook(conf, state, hook, event="runjob", params={"job": job},
                               requestor=requestor, requestor_host=host or conf.server_name)
        if out.status in ("exception", "alarm"):
            return False, out.message
        if out.status == "reject":
            h_flags = {k.lower() for k, r in state["resources"].items()
                       if "h" in r.get("flag", "")}
            changed = hookrun.apply_changes(job, attrs, only=_RUNJOB_ON_REJECT,
                                            skip_resources={"nodect"} | h_flags)
            if "Hold_Types" in changed:
                # The source sets "Job held by '<h>' hook on <ctime>" (HF:2682), but on a
                # running OpenPBS 23.06 the scheduler's "Not Running: PBS Error: <msg>"
                # comes after it and is what qstat shows: observed wins.
                core.eval_hold_state(attrs)
                core.log(conf, "Job", jid, "'%s' hook set job's Hold_Types = %s"
                         % (hook, attrs.get("Hold_Types")), 0x0008)
            return False, out.message
        bad = [k for k in _RUNJOB_ACCEPT_FORBIDDEN if k in job._changed]
        if bad:
            msg = ("request rejected by filter hook '%s': cannot modify job after runjob "
                   "request has been accepted." % hook)
            core.log(conf, "Hook", hook, msg, 0x0100)
            return False, msg
        h_flags = {k.lower() for k, r in state["resources"].items()
                   if "h" in r.get("flag", "")}
        hookrun.apply_changes(job, attrs, only=_RUNJOB_ON_ACCEPT,
                              skip_resources={"select", "place", "nodect"} | h_flags)
    return True, None


def run_jobobit_hooks(conf: core.Conf, state: dict, jid: str, attrs: dict) -> None:
    pbsmod = _pbs()
    hookrun = _hookrun()
    for hook in hookrun.hooks_for(state, "jobobit"):
        view = {k: v for k, v in attrs.items() if not k.startswith("_")}
        job = pbsmod._job(jid, view, mode="readonly", defs=hookrun.resource_defs(state))
        hookrun.run_hook(conf, state, hook, event="jobobit", params={"job": job},
                         requestor="", requestor_host="")


# ---------------------------------------------------------------- qmgr
HOOK_DEFAULTS = {"type": "site", "enabled": True, "event": [], "order": 1, "alarm": 30,
                 "freq": 120, "user": "pbsadmin", "fail_action": "none", "debug": False}
_KNOWN_EVENTS = ("queuejob", "postqueuejob", "modifyjob", "resvsub", "modifyresv", "movejob",
                 "runjob", "jobobit", "management", "modifyvnode", "provision", "periodic",
                 "resv_confirm", "resv_begin", "resv_end", "execjob_begin",
                 "execjob_prologue", "execjob_epilogue", "execjob_preterm", "execjob_end",
                 "exechost_periodic", "execjob_launch", "exechost_startup",
                 "execjob_attach", "execjob_resize", "execjob_abort",
                 "execjob_postsuspend", "execjob_preresume", "")
_RES_TYPES = ("string", "long", "float", "size", "boolean", "string_array", "time")
_RES_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _qmgr_err(obj: str, msg: str, errno: int) -> PbsError:
    return PbsError("qmgr obj=%s svr=default: %s\nqmgr: Error (%d) returned from server"
                    % (obj, msg, errno), errno)


def _hook_err(msg: str) -> PbsError:
    return PbsError("%s\nqmgr: hook error returned from server" % msg, PBSE_HOOKERROR)


def _set_hook_attr(hook: dict, name: str, key: str, op: str, value: str) -> None:
    value = value.strip().strip('"')
    if key == "event":
        events = [e.strip() for e in value.split(",") if e.strip()]
        for e in events:
            if e not in _KNOWN_EVENTS:
                raise _hook_err("invalid argument (%s) to event. Should be one or more "
                                "of: %s" % (e, ",".join(x for x in _KNOWN_EVENTS if x)))
        cur = list(hook["event"])
        if op == "+=":
            cur += [e for e in events if e not in cur]
        elif op == "-=":
            cur = [e for e in cur if e not in events]
        else:
            cur = events
        hook["event"] = cur
        return
    if op != "=":
        raise _hook_err("only event takes += and -=")
    if key == "enabled" or key == "debug":
        low = value.lower()
        if low not in ("true", "false", "t", "f", "y", "n", "1", "0"):
            raise _hook_err("%s value of a hook must be true or false" % key)
        hook[key] = low in ("true", "t", "y", "1")
    elif key == "alarm":
        if not value.lstrip("-").isdigit() or int(value) <= 0:
            raise _hook_err("set_hook_alarm: alarm value '%s' of a hook must be > 0" % value)
        hook["alarm"] = int(value)
    elif key == "freq":
        if not value.lstrip("-").isdigit() or int(value) <= 0:
            raise _hook_err("set_hook_freq: freq value '%s' of a hook must be > 0" % value)
        if not set(hook["event"]) & {"periodic", "exechost_periodic"}:
            raise _hook_err("set_hook_freq: can't set freq: hook event is not periodic")
        hook["freq"] = int(value)
    elif key == "order":
        if not value.lstrip("-").isdigit() or not 1 <= int(value) <= 1000:
            raise _hook_err("set_hook_order: order value '%s' of a hook must be between "
                            "1 and 1000" % value)
        hook["order"] = int(value)
    elif key == "user":
        if value not in ("pbsadmin", "pbsuser"):
            raise _hook_err("set_hook_user: user value '%s' must be pbsadmin or pbsuser"
                            % value)
        if value == "pbsuser":
            raise _hook_err("set_hook_user: user value 'pbsuser' is only for execjob_"
                            "prologue, execjob_epilogue, execjob_preterm hooks")
        hook["user"] = value
    elif key == "fail_action":
        if value != "none":
            raise _hook_err("set_hook_fail_action: fail_action '%s' needs an "
                            "execjob_begin, exechost_startup or execjob_prologue event"
                            % value)
        hook["fail_action"] = value
    elif key == "type":
        if value != "site":
            raise _hook_err("set_hook_type: can only set type to site")
        hook["type"] = value
    else:
        raise _hook_err("%s: invalid hook attribute name" % key)


def _parse_attr_list(text: str) -> list:
    out = []
    for part in re.split(r",(?=\s*\w+\s*[+-]?=)", text):
        m = re.match(r"\s*(\w+)\s*([+-]?=)\s*(.*?)\s*$", part)
        if not m:
            raise PbsError("qmgr: Syntax error\n%s" % text, PBSE_BADATVAL)
        out.append(m.groups())
    return out


def qmgr(conf: core.Conf, req: Requestor, line: str) -> str:
    """Run one qmgr directive; return what goes to stdout."""
    line = line.strip()
    if not line or line.startswith("#"):
        return ""
    words = line.split(None, 3)
    verbs = {"c": "create", "create": "create", "s": "set", "set": "set", "d": "delete",
             "delete": "delete", "l": "list", "list": "list", "p": "print",
             "print": "print", "i": "import", "import": "import", "e": "export",
             "export": "export", "u": "unset", "unset": "unset"}
    verb = verbs.get(words[0].lower())
    if verb is None or len(words) < 2:
        raise PbsError("qmgr: Illegal operation: %s\nTry 'help' if you are having trouble."
                       % words[0], PBSE_BADATVAL)
    otype = words[1].lower()
    if otype in ("h", "hook"):
        otype = "hook"
    elif otype in ("r", "resource"):
        otype = "resource"
    elif otype in ("s", "server"):
        otype = "server"
    else:
        raise PbsError("qmgr: Illegal object type: %s" % words[1], PBSE_BADATVAL)
    name = words[2] if len(words) > 2 else ""
    rest = words[3] if len(words) > 3 else ""
    if otype == "server":
        return _qmgr_server(conf, req, verb, " ".join(words[2:]))
    with core.locked_state(conf, write=verb not in ("list", "print", "export")) as state:
        if verb not in ("list", "print") and not req.is_manager(state):
            raise _qmgr_err(name, "Unauthorized Request ", PBSE_PERM)
        if otype == "hook":
            return _qmgr_hook(conf, state, verb, name, rest)
        return _qmgr_resource(conf, state, verb, name, rest)


def _qmgr_server(conf: core.Conf, req: Requestor, verb: str, rest: str) -> str:
    with core.locked_state(conf, write=verb in ("set", "unset")) as state:
        if verb in ("list", "print"):
            lines = ["Server %s" % state["server_name"]]
            lines += ["    %s = %s" % kv for kv in sorted(state["server"].items())]
            return "\n".join(lines) + "\n\n"
        if not req.is_manager(state):
            raise _qmgr_err(state["server_name"], "Unauthorized Request ", PBSE_PERM)
        if verb == "set":
            for key, _, value in _parse_attr_list(rest):
                state["server"][key] = value.strip('"')
        elif verb == "unset":
            for key in rest.split(","):
                state["server"].pop(key.strip(), None)
        return ""


def _hook_listing(name: str, h: dict) -> str:
    lines = ["Hook %s" % name, "    type = %s" % h["type"],
             "    enabled = %s" % str(h["enabled"]).lower(),
             "    event = %s" % ",".join(h["event"]), "    user = %s" % h["user"],
             "    alarm = %d" % h["alarm"]]
    if "periodic" in h["event"]:
        lines.append("    freq = %d" % h["freq"])
    lines += ["    order = %d" % h["order"], "    debug = %s" % str(h["debug"]).lower(),
              "    fail_action = %s" % h["fail_action"]]
    return "\n".join(lines) + "\n\n"


def _qmgr_hook(conf: core.Conf, state: dict, verb: str, name: str, rest: str) -> str:
    hooks = state["hooks"]
    if verb in ("list", "print") and not name:
        if verb == "list":
            return "".join(_hook_listing(n, h) for n, h in hooks.items())
        return "".join(_hook_print(conf, n, h) for n, h in hooks.items())
    if verb == "create":
        if name in hooks:
            # as a real OpenPBS 23.06.06 answers (docs/real-pbs.md), exit 32
            raise _hook_err("qmgr obj=%s svr=default: hook name '%s' already registered, "
                            "try another name" % (name, name))
        if name.startswith("PBS") or not _RES_NAME.fullmatch(name):
            raise _hook_err("hook name '%s' is invalid" % name)
        hook = json.loads(json.dumps(HOOK_DEFAULTS))
        pairs = _parse_attr_list(rest) if rest.strip() else []
        # user, fail_action and freq apply after event
        pairs.sort(key=lambda p: p[0] in ("user", "fail_action", "freq"))
        for key, op, val in pairs:
            _set_hook_attr(hook, name, key, op, val)
        hook["has_script"] = False
        hook["created"] = time.time()
        hooks[name] = hook
        core.log(conf, "Hook", name, "created", 0x0004)
        return ""
    if name not in hooks:
        raise _hook_err("hook '%s' not registered" % name)
    hook = hooks[name]
    if verb == "list":
        return _hook_listing(name, hook)
    if verb == "print":
        return _hook_print(conf, name, hook)
    if verb == "delete":
        del hooks[name]
        for suffix in (".PY", ".CF", ".HK"):
            try:
                (conf.hooks_dir / (name + suffix)).unlink()
            except FileNotFoundError:
                pass
        return ""
    if verb == "set":
        for key, op, val in _parse_attr_list(rest):
            was_enabled = hook["enabled"]
            _set_hook_attr(hook, name, key, op, val)
            if key in ("enabled", "freq", "event") and hook["enabled"] and \
                    (not was_enabled or key != "enabled"):
                hook["created"] = time.time()
        return ""
    if verb == "unset":
        for key in rest.split(","):
            key = key.strip()
            if key in HOOK_DEFAULTS:
                hook[key] = json.loads(json.dumps(HOOK_DEFAULTS[key]))
        return ""
    if verb in ("import", "export"):
        parts = rest.split()
        if len(parts) < 2 or parts[0] not in ("application/x-python", "application/x-config") \
                or parts[1] not in ("default", "base64"):
            raise PbsError("qmgr: %s hook NAME application/x-python|application/x-config "
                           "default|base64 FILE" % verb, PBSE_BADATVAL)
        ctype, enc = parts[0], parts[1]
        target = conf.hooks_dir / (name + (".PY" if ctype == "application/x-python" else ".CF"))
        fname = parts[2] if len(parts) > 2 else "-"
        if verb == "export":
            if not target.exists():
                return ""
            data = target.read_bytes()
            if enc == "base64":
                import base64
                data = base64.b64encode(data) + b"\n"
            if fname == "-":
                return data.decode("utf-8", "replace")
            with open(fname, "wb") as fh:
                fh.write(data)
            return ""
        return _import_hook(conf, hook, name, ctype, enc, fname, target)
    raise PbsError("qmgr: Illegal operation on hook", PBSE_BADATVAL)


def _import_hook(conf, hook, name, ctype, enc, fname, target) -> str:
    import sys
    try:
        data = sys.stdin.buffer.read() if fname == "-" else open(fname, "rb").read()
    except OSError as exc:
        raise _hook_err("%s: %s" % (fname, exc.strerror))
    if enc == "base64":
        import base64
        import binascii
        try:
            data = base64.b64decode(data)
        except binascii.Error:
            raise _hook_err("Failed to decode base64 input")
    if ctype == "application/x-python":
        existed = hook.get("has_script")
        try:
            compile(data, name, "exec")
        except (SyntaxError, ValueError):
            raise _hook_err("Failed to compile script" + (
                ", hook '%s' contents not overwritten" % name if existed else ""))
        target.write_bytes(data)
        hook["has_script"] = True
        hook["created"] = time.time()
        return "hook '%s' contents overwritten\n" % name if existed else ""
    suffix = os.path.splitext(fname)[1].lower() if fname != "-" else ""
    if suffix not in ("", ".json", ".py", ".txt", ".xml", ".ini"):
        raise _hook_err("%s: config file suffix must be one of .json .py .txt .xml .ini, "
                        "or none; hook '%s' config file not overwritten" % (fname, name))
    if suffix == ".py":
        try:
            compile(data, fname, "exec")
        except (SyntaxError, ValueError):
            raise _hook_err("Failed to validate config file, hook '%s' config file not "
                            "overwritten" % name)
    if suffix == ".ini":
        # PBS validates .ini with a Python 2 `import ConfigParser`, which fails on Python 3
        raise _hook_err("Failed to validate config file, hook '%s' config file not "
                        "overwritten" % name)
    # observed: .json is NOT validated on 23.06 -- the file is stored verbatim
    target.write_bytes(data)
    return ""


def _hook_print(conf: core.Conf, name: str, h: dict) -> str:
    import base64
    lines = ["#", "# Create and define hook %s" % name, "#", "create hook %s" % name]
    for key in ("type", "enabled", "event", "user", "alarm", "freq", "order", "debug",
                "fail_action"):
        if key == "freq" and "periodic" not in h["event"]:
            continue
        val = h[key]
        if isinstance(val, bool):
            val = str(val).lower()
        elif isinstance(val, list):
            val = ",".join(val)
        lines.append("set hook %s %s = %s" % (name, key, val))
    script = conf.hooks_dir / (name + ".PY")
    if script.exists():
        lines.append("import hook %s application/x-python base64 -" % name)
        lines.append(base64.b64encode(script.read_bytes()).decode())
    return "\n".join(lines) + "\n\n"


def _qmgr_resource(conf: core.Conf, state: dict, verb: str, name: str, rest: str) -> str:
    resources = state["resources"]
    if verb in ("list", "print") and not name:
        return "".join(_res_listing(n, r, verb) for n, r in resources.items())
    if verb == "create":
        if name in resources or name.lower() in _pbs()._BUILTIN_RESOURCES:
            raise _qmgr_err(name, "Duplicate entry in list ", PBSE_DUPLIST)
        if not _RES_NAME.fullmatch(name):
            raise _qmgr_err(name, "Illegal attribute or resource value", PBSE_BADATVAL)
        r = {"type": "long", "flag": ""}
        for key, op, val in (_parse_attr_list(rest) if rest.strip() else []):
            _set_res_attr(name, r, key, val)
        resources[name] = r
        return ""
    if name not in resources:
        raise _qmgr_err(name, "Unknown resource", PBSE_UNKRESC)
    if verb in ("list", "print"):
        return _res_listing(name, resources[name], verb)
    if verb == "delete":
        for jid, attrs in state["jobs"].items():
            users = [attrs] + list(attrs.get("_subjobs", {}).values())
            if any(name in a.get("Resource_List", {}) for a in users):
                raise _qmgr_err(name, "Resource busy on job", PBSE_RESCBUSY)
        del resources[name]
        return ""
    if verb == "set":
        r = dict(resources[name])
        for key, op, val in _parse_attr_list(rest):
            _set_res_attr(name, r, key, val)
        resources[name] = r
        return ""
    if verb == "unset":
        for key in rest.split(","):
            if key.strip() == "flag":
                resources[name]["flag"] = ""
        return ""
    raise PbsError("qmgr: Illegal operation on resource", PBSE_BADATVAL)


def _set_res_attr(name: str, r: dict, key: str, val: str) -> None:
    val = val.strip().strip('"')
    if key == "type":
        if val not in _RES_TYPES:
            raise _qmgr_err(name, "Illegal attribute or resource value", PBSE_BADATVAL)
        r["type"] = val
    elif key == "flag":
        if any(c not in "hmnfqri" for c in val) or ("i" in val and "r" in val) or \
                (r["type"] in ("string", "string_array", "boolean")
                 and any(c in val for c in "nfq")):
            raise _qmgr_err(name, "Illegal attribute or resource value", PBSE_BADATVAL)
        r["flag"] = "".join(dict.fromkeys(val))
    else:
        raise _qmgr_err(name, "Undefined attribute ", PBSE_NOATTR)


def _res_listing(name: str, r: dict, verb: str) -> str:
    if verb == "print":
        flag = ", flag = %s" % r["flag"] if r.get("flag") else ""
        return "create resource %s type = %s%s\n" % (name, r["type"], flag)
    lines = ["Resource %s" % name, "    type = %s" % r["type"]]
    if r.get("flag"):
        lines.append("    flag = %s" % r["flag"])
    return "\n".join(lines) + "\n\n"


__all__ = ["PbsError", "Requestor", "submit", "hold", "release", "alter", "delete",
           "select_jobs", "qmgr", "run_runjob_hooks", "run_jobobit_hooks",
           "evaluate_dependencies", "PBSE_BADDEPEND", "PBSE_NOATTR"]
