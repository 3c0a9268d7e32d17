"""Run one server hook script the way pbs_server does (HF:4280-4610).

Fresh globals per run, shared interpreter (``sys.modules`` persists), cwd
``server_priv/hooks/tmp``, ``PBS_HOOK_CONFIG_FILE`` set, ``alarm`` seconds enforced by
raising ``KeyboardInterrupt`` inside the hook (SIGALRM in the main thread; an asynchronous
exception in other threads, which cannot interrupt a blocking system call).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

from . import core
from . import pbs as pbsmod

EVENT_TYPES = {
    "queuejob": pbsmod.QUEUEJOB, "modifyjob": pbsmod.MODIFYJOB, "runjob": pbsmod.RUNJOB,
    "jobobit": pbsmod.JOBOBIT, "periodic": pbsmod.PERIODIC,
    "postqueuejob": pbsmod.POSTQUEUEJOB,
}

_compiled: dict = {}
# names imported by hook code, so that restart() can drop them like a new interpreter
hook_imported_modules: set = set()


class HookOutcome:
    def __init__(self, status: str, message: str | None, ctx) -> None:
        self.status = status  # accept | reject | exception | alarm
        self.message = message
        self.ctx = ctx

    @property
    def accepted(self) -> bool:
        return self.status == "accept"


def resource_defs(state: dict) -> dict:
    defs = {k.lower(): (k, v, "") for k, v in pbsmod._BUILTIN_RESOURCES.items()}
    for name, r in state.get("resources", {}).items():
        defs[name.lower()] = (name, r.get("type", "string"), r.get("flag", ""))
    return defs


def all_jobs(state: dict) -> dict:
    out = {}
    for jid, attrs in state["jobs"].items():
        out[jid] = attrs
        base, _, server = core.split_id(jid)
        for idx, sub in attrs.get("_subjobs", {}).items():
            out["%s[%s].%s" % (base, idx, server)] = sub
    return out


def hooks_for(state: dict, event: str) -> list:
    """Enabled pbsadmin hooks with a script for `event`, in `order`."""
    found = []
    for name, h in state["hooks"].items():
        if event in h.get("event", []) and h.get("enabled", True) and \
                h.get("user", "pbsadmin") == "pbsadmin" and h.get("has_script"):
            found.append((int(h.get("order", 1)), name))
    return [name for _, name in sorted(found)]


def _load_code(conf: core.Conf, hook_name: str):
    path = conf.hooks_dir / (hook_name + ".PY")
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    code = _compiled.get(key)
    if code is None:
        code = compile(path.read_bytes(), "<hook %s>" % hook_name, "exec")
        _compiled.clear()
        _compiled[key] = code
    return code


class _Alarm:
    """Raise KeyboardInterrupt in the running thread after `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = max(float(seconds), 0.001)
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = None
        self._old = None
        self._main = threading.current_thread() is threading.main_thread()

    def _on_signal(self, signum, frame):
        if not self._done:
            self.fired = True
            raise KeyboardInterrupt

    def _on_timer(self, ident: int) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident),
                                                       ctypes.py_object(KeyboardInterrupt))

    def __enter__(self):
        if self._main:
            self._old = signal.signal(signal.SIGALRM, self._on_signal)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        else:
            self._timer = threading.Timer(self.seconds, self._on_timer,
                                          args=(threading.get_ident(),))
            self._timer.daemon = True
            self._timer.start()
        return self

    def disarm(self) -> None:
        with self._lock:
            self._done = True
        if self._main:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old or signal.SIG_DFL)
        elif self._timer is not None:
            self._timer.cancel()

    def __exit__(self, *exc) -> bool:
        self.disarm()
        return False


def run_hook(conf: core.Conf, state: dict, hook_name: str, *, event: str, params: dict,
             requestor, requestor_host, server_view=None, freq=None) -> HookOutcome:
    hook = state["hooks"][hook_name]
    defs = resource_defs(state)
    if server_view is None:
        server_view = pbsmod._server(state["server_name"], lambda: all_jobs(state), defs)
    cf = conf.hooks_dir / (hook_name + ".CF")
    cf_name = str(cf) if cf.exists() else None
    ev = pbsmod._event(type=EVENT_TYPES[event], hook_name=hook_name, requestor=requestor,
                       requestor_host=requestor_host, params=params, freq=freq)

    def logger(objtype, objname, msg, mask):
        core.log(conf, objtype, objname, msg, mask)

    ctx = pbsmod._Context(event=ev, server=server_view, hook_name=hook_name,
                          hook_config_filename=cf_name, pbs_conf=conf.pbs_conf_dict(),
                          logger=logger, resource_defs=defs, nodename=conf.server_name)
    # jobs built before the context existed must see these definitions too
    for p in params.values():
        if isinstance(p, pbsmod._job):
            for key in ("Resource_List", "resources_used"):
                r = p._values.get(key)
                if isinstance(r, pbsmod.pbs_resource):
                    r.__dict__["_defs"] = defs
    sys.modules["pbs"] = pbsmod
    pbsmod._ctx = ctx
    pbsmod.hook_config_filename = cf_name
    pbsmod.pbs_conf = ctx.pbs_conf
    tmpdir = conf.hooks_dir / "tmp"
    old_cwd = os.getcwd()
    old_env = os.environ.get("PBS_HOOK_CONFIG_FILE")
    if cf_name:
        os.environ["PBS_HOOK_CONFIG_FILE"] = cf_name
    else:
        os.environ.pop("PBS_HOOK_CONFIG_FILE", None)
    before = set(sys.modules)
    core.log(conf, "Hook", hook_name, "started", 0x0400)
    status, exc = "accept", None
    alarm = _Alarm(int(hook.get("alarm", 30)))
    try:
        os.chdir(str(tmpdir))
        code = _load_code(conf, hook_name)
        try:
            with alarm:
                try:
                    exec(code, {"__builtins__": __builtins__})
                except SystemExit:
                    pass
        except KeyboardInterrupt:
            status = "alarm" if alarm.fired else "exception"
        except BaseException as e:  # noqa: BLE001 -- any hook failure rejects, like PBS
            status, exc = "exception", e
    except KeyboardInterrupt:
        # the alarm landed between the hook's end and disarm
        status = "alarm" if alarm.fired else "exception"
    finally:
        alarm.disarm()
        os.chdir(old_cwd)
        if old_env is None:
            os.environ.pop("PBS_HOOK_CONFIG_FILE", None)
        else:
            os.environ["PBS_HOOK_CONFIG_FILE"] = old_env
        hook_imported_modules.update(set(sys.modules) - before)
        pbsmod._ctx = None
    core.log(conf, "Hook", hook_name, "finished", 0x0400)
    ctx.stopped = True  # writes after the run are as after accept/reject
    if status == "exception":
        prefix = "PBS server internal error (15011) in Error evaluating Python script"
        core.log(conf, "Hook", hook_name, "%s, %s" % (prefix, type(exc) if exc else
                                                       KeyboardInterrupt), 0x0100)
        core.log(conf, "Hook", hook_name, "%s, %s" % (prefix, exc if exc else ""), 0x0100)
        core.log(conf, "Hook", hook_name,
                 "%s hook '%s' encountered an exception, request rejected"
                 % (event, hook_name), 0x0100)
        return HookOutcome("exception", "request rejected as filter hook '%s' encountered "
                           "an exception. Please inform Admin" % hook_name, ctx)
    if status == "alarm":
        core.log(conf, "Hook", hook_name, "alarm call while running %s hook '%s', "
                 "request rejected" % (event, hook_name), 0x0100)
        return HookOutcome("alarm", "request rejected as filter hook '%s' got an alarm "
                           "call. Please inform Admin" % hook_name, ctx)
    if not ctx.accepted:
        default = "%s request rejected by '%s'" % (event, hook_name)
        core.log(conf, "Hook", hook_name, default, 0x0400)
        if ctx.reject_msg:
            core.log(conf, "Hook", hook_name, ctx.reject_msg, 0x0400)
        return HookOutcome("reject", ctx.reject_msg or default, ctx)
    return HookOutcome("accept", None, ctx)


# ---------------------------------------------------------------- proxy -> storage
def to_storage(key: str, value):
    if value is None:
        return None
    if key == "Hold_Types":
        return core.hold_text(str(value))
    if key in ("Priority", "run_count", "Execution_Time", "umask", "max_run_subjobs"):
        return int(value)
    if key in ("Rerunable", "create_resv_from_job"):
        return "True" if value else "False"
    if key == "queue":
        return str(value)
    return str(value)


def apply_changes(job: pbsmod._job, attrs: dict, *, only=None, skip_resources=()) -> list:
    """Copy what the hook set on `job` into the stored `attrs`; return the changed keys."""
    changed = []
    for key, marker in job._changed.items():
        if only is not None and key not in only:
            continue
        if key == "Resource_List":
            rl = attrs.setdefault("Resource_List", {})
            texts = job._values["Resource_List"]._as_text()
            for res in marker:
                if res.lower() in skip_resources:
                    continue
                val = texts.get(res)
                # case-insensitive: replace whatever spelling was stored
                for k in [k for k in rl if k.lower() == res.lower()]:
                    del rl[k]
                if val is not None:
                    rl[res] = val
                changed.append("Resource_List." + res)
        elif key == "Variable_List":
            vl = attrs.setdefault("Variable_List", {})
            env = job._values["Variable_List"]
            for name in marker:
                vl[name] = str(env[name])
                changed.append("Variable_List." + name)
        else:
            val = to_storage(key, job._values.get(key))
            if val is None:
                attrs.pop(key, None)
            else:
                attrs[key] = val
            changed.append(key)
    return changed
