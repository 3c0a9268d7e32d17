"""PbsServer: owns a PBS_HOME, installs the commands, schedules and runs jobs, fires
periodic hooks.  Requests from commands are served by the command processes themselves
(state in files, one lock), so a PbsServer object is only needed for what pbs_server does
on its own: scheduling, running jobs, job exits and periodic hooks.
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import threading
import time
from pathlib import Path

import pbs_globus_staging

from . import core, hookrun, ops

COMMAND_NAMES = ("qsub", "qstat", "qhold", "qrls", "qdel", "qalter", "qselect", "qmgr")
# The commands run with -S, as pbs_server's embedded Python does (no site-packages, so no
# editable install's finder either): the double's directory and the product's go on the
# path by name.  One directory when both are installed as wheels.
IMPORT_DIRS = list(dict.fromkeys([str(Path(__file__).resolve().parents[2]),
                                   str(Path(pbs_globus_staging.__file__).resolve().parents[1])]))


class PbsServer:
    def __init__(self, home: Path, *, exec_dir: Path, server_name: str = "pbsdouble",
                 run_jobs_as_owner: bool = True) -> None:
        self.home = Path(home)
        self.run_jobs_as_owner = run_jobs_as_owner
        self.exec_dir = Path(exec_dir)
        self.server_name = server_name
        self.conf = core.Conf(home=self.home, exec_dir=self.exec_dir, server_name=server_name)
        for d in (self.conf.hooks_dir / "tmp", self.conf.priv / "jobs",
                  self.home / "server_logs", self.exec_dir / "bin"):
            d.mkdir(parents=True, exist_ok=True)
        self.conf_file = self.home / "pbs.conf"
        self.conf_file.write_text("PBS_HOME=%s\nPBS_EXEC=%s\nPBS_SERVER=%s\nPBS_START_SERVER=1\n"
                                  % (self.home, self.exec_dir, server_name))
        env_file = self.home / "pbs_environment"
        if not env_file.exists():
            env_file.write_text("PATH=/bin:/usr/bin\nLANG=C.UTF-8\n")
        me = pwd.getpwuid(os.getuid()).pw_name
        with core.locked_state(self.conf) as state:
            if me not in state["managers"]:
                state["managers"].append(me)
        self._procs: dict = {}           # jobid -> Popen of a running job
        self._watchers: list = []
        self._periodic_children: dict = {}  # hook name -> Popen
        self._periodic_last: dict = {}
        self._stop = threading.Event()
        self._threads: list = []
        self._mutex = threading.Lock()

    # ------------------------------------------------------------ environment
    def env(self, *, user: str | None = None) -> dict:
        """os.environ plus PBS_CONF_FILE and the commands first on PATH."""
        env = dict(os.environ)
        env["PBS_CONF_FILE"] = str(self.conf_file)
        env["PATH"] = "%s:%s" % (self.exec_dir / "bin", env.get("PATH", "/bin:/usr/bin"))
        if user is not None:
            env["PBS_DOUBLE_USER"] = user
        return env

    def pbs_environment(self) -> dict:
        """The daemon environment (PBS_HOME/pbs_environment), as hooks and jobs get it."""
        env = {}
        for line in (self.home / "pbs_environment").read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep and k.strip():
                env[k.strip()] = v
        return env

    def set_environment(self, **values: str) -> None:
        """Add lines to PBS_HOME/pbs_environment (e.g. GLOBUS_SDK_ENVIRONMENT for demos)."""
        env = self.pbs_environment()
        env.update(values)
        (self.home / "pbs_environment").write_text(
            "".join("%s=%s\n" % kv for kv in env.items()))

    def install_commands(self) -> Path:
        """Write qsub, qstat, ... into exec_dir/bin; return that directory."""
        bindir = self.exec_dir / "bin"
        for name in COMMAND_NAMES:
            path = bindir / name
            # -S: like pbs_server's embedded Python, in-process hooks get no site-packages
            path.write_text(
                "#!%s -S\nimport sys\nsys.path[:0] = %r\n"
                "from pbs_globus_staging_sim.pbsdouble.cmd import main\n"
                "sys.exit(main([%r] + sys.argv[1:]))\n" % (sys.executable, IMPORT_DIRS, name))
            path.chmod(0o755)
        return bindir

    def run(self, argv: list, *, user: str | None = None, input: str | None = None,
            cwd: str | os.PathLike | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run one of the installed commands, e.g. run(["qsub", "-h", "job.sh"], user="alice").

        `cwd` defaults to the directory holding PBS_HOME, so default job output files land
        there and not in the caller's working directory."""
        if cwd is None:
            cwd = self.home.parent
        exe = self.exec_dir / "bin" / argv[0]
        return subprocess.run([str(exe)] + [str(a) for a in argv[1:]], input=input,
                              capture_output=True, text=True, env=self.env(user=user),
                              cwd=cwd, timeout=timeout)

    # ------------------------------------------------------------ admin from Python
    def qmgr(self, line: str) -> str:
        """One qmgr directive, in-process, as root.  Raises ops.PbsError."""
        return ops.qmgr(self.conf, ops.Requestor("root"), line)

    def create_resource(self, name: str, *, type: str = "string", flag: str = "") -> None:
        self.qmgr("create resource %s type=%s%s" % (name, type, ",flag=%s" % flag if flag else ""))

    def create_hook(self, name: str, *, events, script, config=None,
                    config_suffix: str = ".json", order: int = 1, alarm: int = 30,
                    freq: int | None = None, enabled: bool = True) -> None:
        """qmgr create hook + set + import, from Python.  `script`/`config`: text or Path."""
        events = [events] if isinstance(events, str) else list(events)
        attrs = "event=%s" % ",".join(events) if len(events) == 1 else ""
        self.qmgr("create hook %s %s" % (name, attrs))
        if len(events) > 1:
            self.qmgr('set hook %s event = "%s"' % (name, ",".join(events)))
        self.qmgr("set hook %s enabled = %s" % (name, str(enabled).lower()))
        self.qmgr("set hook %s alarm = %d" % (name, alarm))
        if "periodic" not in events:
            self.qmgr("set hook %s order = %d" % (name, order))
        if freq is not None:
            self.qmgr("set hook %s freq = %d" % (name, freq))
        self.import_hook(name, script)
        if config is not None:
            self.import_hook_config(name, config, suffix=config_suffix)

    def import_hook(self, name: str, script) -> None:
        path = self._as_file(script, ".py")
        self.qmgr("import hook %s application/x-python default %s" % (name, path))

    def import_hook_config(self, name: str, config, *, suffix: str = ".json") -> None:
        path = self._as_file(config, suffix)
        self.qmgr("import hook %s application/x-config default %s" % (name, path))

    def _as_file(self, content, suffix: str) -> Path:
        if isinstance(content, Path):
            return content
        tmp = self.home / "import_tmp"
        tmp.mkdir(exist_ok=True)
        path = tmp / ("%d%s" % (time.monotonic_ns(), suffix))
        if isinstance(content, (bytes, bytearray)):
            path.write_bytes(content)
        else:
            path.write_text(content)
        return path

    # ------------------------------------------------------------ inspection
    def jobs(self) -> dict:
        """{jobid: attributes} as stored (times as epoch ints; internal keys start with _)."""
        with core.locked_state(self.conf, write=False) as state:
            return json.loads(json.dumps(hookrun.all_jobs(state)))

    def job(self, jobid: str):
        with core.locked_state(self.conf, write=False) as state:
            _, attrs, _ = core.find_job(state, jobid)
            return json.loads(json.dumps(attrs)) if attrs is not None else None

    def log_text(self) -> str:
        logdir = self.home / "server_logs"
        return "".join(p.read_text(errors="replace") for p in sorted(logdir.iterdir()))

    def log_lines(self) -> list:
        return self.log_text().splitlines()

    # ------------------------------------------------------------ scheduling
    def schedule(self, *, wait: bool = True, timeout: float = 60) -> list:
        """One scheduling cycle.  Returns the ids started; with `wait`, after they ended."""
        started = []
        with core.locked_state(self.conf) as state:
            ops.evaluate_dependencies(self.conf, state)
            now = int(time.time())
            for jid, attrs in list(state["jobs"].items()):
                if attrs.get("job_state") != "Q" or int(attrs.get("Execution_Time", 0)) > now:
                    continue
                if attrs.get("array_indices_submitted"):
                    started += self._schedule_array(state, jid, attrs)
                    continue
                if self._try_run(state, jid, attrs):
                    started.append(jid)
        if wait:
            self.wait_jobs(timeout=timeout)
        return started

    def _schedule_array(self, state: dict, pid: str, parent: dict) -> list:
        started = []
        base, _, server = core.split_id(pid)
        for idx in core.expand_range(parent["array_indices_submitted"]):
            if str(idx) in parent.get("_subjobs", {}):
                continue
            sub = core.instantiate_subjob(parent, pid, idx, self.server_name)
            sid = "%s[%d].%s" % (base, idx, server)
            if self._try_run(state, sid, sub):
                started.append(sid)
                if parent["job_state"] != "B":
                    core.set_state(parent, "B", 70)
                    parent.setdefault("stime", int(time.time()))
            else:
                del parent["_subjobs"][str(idx)]
                if sub.get("Hold_Types", "n") != parent.get("Hold_Types", "n"):
                    parent["Hold_Types"] = sub["Hold_Types"]
                    core.eval_hold_state(parent)
                parent["comment"] = sub.get("comment")
                break
            core.array_counts(parent)
        core.array_counts(parent)
        return started

    def _try_run(self, state: dict, jid: str, attrs: dict) -> bool:
        ncpus = attrs.get("Resource_List", {}).get("ncpus", 1)
        attrs["exec_host"] = "%s/0" % self.server_name
        attrs["exec_vnode"] = "(%s:ncpus=%s)" % (self.server_name, ncpus)
        ok, msg = ops.run_runjob_hooks(self.conf, state, jid, attrs)
        if not ok:
            attrs.pop("exec_host", None)
            attrs.pop("exec_vnode", None)
            attrs["comment"] = "Not Running: PBS Error: %s" % msg
            core.log(self.conf, "Job", jid, "Failed to run: %s (15136)" % msg, 0x0040)
            return False
        now = int(time.time())
        core.set_state(attrs, "R", 42)
        attrs["stime"] = now
        attrs.setdefault("etime", now)
        attrs["run_count"] = int(attrs.get("run_count", 0)) + 1
        attrs["comment"] = "Job run at %s on %s" % (time.strftime("%a %b %d at %H:%M"),
                                                   attrs["exec_vnode"])
        attrs["jobdir"] = attrs.get("Variable_List", {}).get("PBS_O_HOME", "/")
        self._launch(jid, attrs)
        core.log(self.conf, "Job", jid, "Job Run at request of Scheduler@%s on exec_vnode %s"
                 % (self.server_name, attrs["exec_vnode"]), 0x0008)
        return True

    def _launch(self, jid: str, attrs: dict) -> None:
        script = attrs.get("_script")
        owner = core.owner_of(attrs)
        env = self.pbs_environment()
        for k, v in attrs.get("Variable_List", {}).items():
            env[k] = str(v).replace("\\,", ",")
        index = attrs.get("array_index")
        env.update(PBS_JOBID=jid, PBS_JOBNAME=str(attrs.get("Job_Name", "")),
                   PBS_QUEUE="workq", PBS_ENVIRONMENT="PBS_BATCH",
                   PBS_JOBDIR=str(attrs.get("jobdir", "/")), USER=owner, LOGNAME=owner,
                   PBS_CONF_FILE=str(self.conf_file))
        if index is not None:
            env["PBS_ARRAY_INDEX"] = str(index)
            env["PBS_ARRAY_ID"] = str(attrs.get("array_id"))
        kwargs: dict = {}
        try:
            pw = pwd.getpwnam(owner)
        except KeyError:
            pw = None
        if self.run_jobs_as_owner and os.getuid() == 0 and pw is not None and owner != "root":
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid)
            env["HOME"] = pw.pw_dir
        else:
            env["HOME"] = env.get("PBS_O_HOME", os.environ.get("HOME", "/"))
        cwd = env["HOME"] if os.path.isdir(env["HOME"]) else env.get("PBS_O_WORKDIR", "/")

        def local(path_attr: str, letter: str) -> str:
            p = str(attrs.get(path_attr, ""))
            p = p.split(":", 1)[1] if ":" in p else p
            p = p.replace("^array_index^", str(index) if index is not None else "")
            return p or os.path.join(cwd, "%s.%s%s" % (attrs.get("Job_Name"), letter,
                                                        jid.split(".")[0]))

        out_path = local("Output_Path", "o")
        join = str(attrs.get("Join_Path", "n"))
        err_path = out_path if join == "oe" else local("Error_Path", "e")
        try:
            out_fh = open(out_path, "ab")
            err_fh = out_fh if err_path == out_path else open(err_path, "ab")
        except OSError:
            out_fh = open(os.devnull, "ab")
            err_fh = out_fh
        # like MoM, hand the script to the shell on stdin: the owner need not be able to
        # read PBS_HOME
        script_fh = open(script or os.devnull, "rb")
        try:
            proc = subprocess.Popen(["/bin/bash", "-s"], cwd=cwd, env=env,
                                    stdin=script_fh, stdout=out_fh, stderr=err_fh,
                                    start_new_session=True, **kwargs)
        finally:
            script_fh.close()
            out_fh.close()
            if err_fh is not out_fh:
                err_fh.close()
        attrs["_pgid"] = proc.pid
        attrs["session_id"] = proc.pid
        self._procs[jid] = proc
        t = threading.Thread(target=self._watch, args=(jid, proc), daemon=True,
                             name="pbsdouble-job-%s" % jid)
        self._watchers.append(t)
        t.start()

    def _watch(self, jid: str, proc: subprocess.Popen) -> None:
        rc = proc.wait()
        self._finish(jid, rc)

    # Seen on OpenPBS 23.06.06: after the obit (jobobit hooks run) `qstat -f` still
    # shows the job in state E for about a quarter of a second before it leaves for
    # the history (F).
    EXITING_SECONDS = 0.25

    def _finish(self, jid: str, rc: int) -> None:
        with core.locked_state(self.conf) as state:
            fid, attrs, parent_id = core.find_job(state, jid)
            if attrs is None:
                self._procs.pop(jid, None)
                return
            attrs.pop("_pgid", None)
            now = int(time.time())
            exit_status = rc if rc >= 0 else 256 - rc
            wall = max(0, now - int(attrs.get("stime", now)))
            attrs["resources_used"] = {
                "cpupercent": 0, "cput": "00:00:00", "mem": "0kb",
                "ncpus": attrs.get("Resource_List", {}).get("ncpus", 1), "vmem": "0kb",
                "walltime": "%02d:%02d:%02d" % (wall // 3600, wall // 60 % 60, wall % 60)}
            attrs["Exit_status"] = exit_status
            attrs["obittime"] = now
            attrs["Stageout_status"] = 1
            attrs["run_version"] = int(attrs.get("run_count", 1))
            core.set_state(attrs, "E", 53)
            ops.run_jobobit_hooks(self.conf, state, fid, attrs)
        time.sleep(self.EXITING_SECONDS)
        with core.locked_state(self.conf) as state:
            fid, attrs, parent_id = core.find_job(state, jid)
            self._procs.pop(jid, None)
            if attrs is None:
                return
            now = int(time.time())
            exit_status = attrs["Exit_status"]
            deleted = attrs.pop("_deleted", False)
            substate = 91 if deleted else (92 if exit_status == 0 else 93)
            word = "terminated" if deleted else ("finished" if exit_status == 0 else "failed")
            if attrs.get("comment", "").startswith("Job run at"):
                attrs["comment"] = "%s and %s" % (attrs["comment"], word)
            attrs["history_timestamp"] = now
            core.set_state(attrs, "X" if parent_id else "F", substate)
            core.log(self.conf, "Job", fid, "Exit_status=%d" % exit_status, 0x0010)
            if parent_id:
                self._maybe_finish_array(state, parent_id)
            elif attrs.pop("_purge", False) or not self._history(state):
                state["jobs"].pop(fid, None)
            ops.evaluate_dependencies(self.conf, state)

    def _maybe_finish_array(self, state: dict, pid: str) -> None:
        parent = state["jobs"].get(pid)
        if parent is None:
            return
        core.array_counts(parent)
        subs = parent.get("_subjobs", {})
        indices = core.expand_range(parent["array_indices_submitted"])
        if len(subs) < len(indices) and not parent.get("_deleted"):
            return
        if any(not core.is_finished(s) for s in subs.values()):
            return
        statuses = [int(s.get("Exit_status", 0)) for s in subs.values()]
        parent["Exit_status"] = 0 if all(s == 0 for s in statuses) else 1
        parent["obittime"] = int(time.time())
        core.set_state(parent, "E", 53)
        ops.run_jobobit_hooks(self.conf, state, pid, parent)
        deleted = parent.pop("_deleted", False)
        core.set_state(parent, "F", 91 if deleted else 92)
        parent["history_timestamp"] = int(time.time())
        if parent.pop("_purge", False) or not self._history(state):
            state["jobs"].pop(pid, None)

    @staticmethod
    def _history(state: dict) -> bool:
        return str(state["server"].get("job_history_enable", "True")).lower() in ("true", "1")

    def wait_jobs(self, *, timeout: float = 60) -> None:
        """Wait until every job started by this server has exited and been obited."""
        deadline = time.monotonic() + timeout
        for t in list(self._watchers):
            t.join(max(0.0, deadline - time.monotonic()))
        self._watchers = [t for t in self._watchers if t.is_alive()]
        if self._watchers:
            raise TimeoutError("jobs still running after %.0f s" % timeout)

    # ------------------------------------------------------------ periodic hooks
    def _periodic_hooks(self) -> dict:
        with core.locked_state(self.conf, write=False) as state:
            return {n: h for n, h in state["hooks"].items()
                    if "periodic" in h.get("event", []) and h.get("enabled")
                    and h.get("has_script")}

    def run_periodic(self, name: str | None = None, *, wait: bool = True) -> dict:
        """Start the periodic hook(s) now.  Returns {name: child exit code (1 accept,
        0 reject/error) or None if not waited / skipped because the last run still runs}."""
        hooks = self._periodic_hooks()
        if name is not None:
            hooks = {name: hooks[name]} if name in hooks else {}
        results = {}
        for hname, h in hooks.items():
            with self._mutex:
                prev = self._periodic_children.get(hname)
                if prev is not None and prev.poll() is None:
                    core.log(self.conf, "Hook", hname, "periodic hook still running, "
                             "skipping this run", 0x0100)
                    results[hname] = None
                    continue
                env = self.pbs_environment()
                env["PBS_CONF_FILE"] = str(self.conf_file)
                env["PYTHONPATH"] = ""
                proc = subprocess.Popen(
                    [sys.executable, "-S", "-c",
                     "import sys; sys.path[:0] = %r; "
                     "from pbs_globus_staging_sim.pbsdouble.cmd import main; "
                     "sys.exit(main(['_periodic', %r]))" % (IMPORT_DIRS, hname)],
                    env=env, cwd=str(self.conf.hooks_dir / "tmp"),
                    stdin=subprocess.DEVNULL, start_new_session=True)
                self._periodic_children[hname] = proc
                self._periodic_last[hname] = time.time()
            alarm = int(h.get("alarm", 30))
            if wait:
                results[hname] = self._reap(hname, proc, alarm)
            else:
                threading.Thread(target=self._reap, args=(hname, proc, alarm),
                                 daemon=True).start()
                results[hname] = None
        return results

    def _reap(self, name: str, proc: subprocess.Popen, alarm: int):
        try:
            return proc.wait(timeout=alarm + 2)
        except subprocess.TimeoutExpired:
            # the child's own alarm should have fired; PBS kills a hung child
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            core.log(self.conf, "Hook", name, "alarm call while running periodic hook '%s', "
                     "request rejected" % name, 0x0100)
            return proc.wait()

    def start_periodic_thread(self, *, tick: float = 0.2) -> threading.Thread:
        """Fire each periodic hook every `freq` s, first `freq` s after create/import/enable."""
        def loop():
            while not self._stop.wait(tick):
                now = time.time()
                for name, h in self._periodic_hooks().items():
                    last = max(self._periodic_last.get(name, 0), float(h.get("created", now)))
                    if now - last >= int(h.get("freq", 120)):
                        self.run_periodic(name, wait=False)
        return self._start_thread(loop, "pbsdouble-periodic")

    def start_scheduler_thread(self, interval: float = 1.0) -> threading.Thread:
        def loop():
            while not self._stop.wait(interval):
                self.schedule(wait=False)
        return self._start_thread(loop, "pbsdouble-sched")

    def _start_thread(self, fn, name: str) -> threading.Thread:
        self._stop.clear()
        t = threading.Thread(target=fn, name=name, daemon=True)
        self._threads.append(t)
        t.start()
        return t

    def stop(self, *, kill_jobs: bool = True, timeout: float = 10) -> None:
        """Stop background threads, periodic children and (by default) running jobs."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        for proc in list(self._periodic_children.values()):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, 9)
                except ProcessLookupError:
                    pass
                proc.wait()
        if kill_jobs:
            for proc in list(self._procs.values()):
                try:
                    os.killpg(proc.pid, 15)
                except ProcessLookupError:
                    pass
        try:
            self.wait_jobs(timeout=timeout)
        except TimeoutError:
            pass

    # ------------------------------------------------------------ restart
    def restart(self) -> None:
        """What `/etc/init.d/pbs restart` keeps and loses (observed): every job comment is
        lost; holds, resources, Variable_List, hooks and resources stay; the hook
        interpreter starts afresh (modules imported by hooks are forgotten)."""
        with core.locked_state(self.conf) as state:
            for attrs in hookrun.all_jobs(state).values():
                attrs.pop("comment", None)
            for h in state["hooks"].values():
                h["created"] = time.time()
        for mod in list(hookrun.hook_imported_modules):
            sys.modules.pop(mod, None)
        hookrun.hook_imported_modules.clear()
        self._periodic_last.clear()
        core.log(self.conf, "Svr", "Server@%s" % self.server_name, "Server restarted", 0x0002)
