"""A whole staging site on a REAL OpenPBS server on this host: the bundled
Globus emulator in this process (loopback), the suite installed into the real
server with the real installer, jobs submitted by an ordinary user (``su``),
and the agent as the periodic hook starts it (serving by default).

Used by the opt-in ``tests/real/test_real_pbs.py`` scenarios and by
``bench/bench_real_pbs_latency.py``.  It changes the shared server: use it
under ``flock /tmp/realpbs.lock``; ``stop()`` uninstalls the suite, stops the
serving agent and purges every job it submitted.
"""
from __future__ import annotations

import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from .pbsdouble.server import IMPORT_DIRS
from .site import NATIVE_CLIENT, REMOTE_COLLECTION, SITE_COLLECTION


def real_qstat() -> Optional[str]:
    path = shutil.which("qstat")
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return path if fh.read(4) == b"\x7fELF" else None   # the double's is a script
    except OSError:
        return None


def skip_reason(user: str = "alice") -> Optional[str]:
    if os.environ.get("GLOBUS_STAGING_REAL_PBS") != "1":
        return "set GLOBUS_STAGING_REAL_PBS=1 to run against a real OpenPBS on this host"
    if real_qstat() is None:
        return "no real OpenPBS qstat on PATH (e.g. PATH=/opt/pbs/bin:$PATH)"
    if os.geteuid() != 0:
        return "needs root (qmgr, qrls -h s)"
    try:
        pwd.getpwnam(user)
    except KeyError:
        return f"no user {user!r} to submit jobs as (GLOBUS_STAGING_REAL_PBS_USER)"
    return None


class RealSite:
    def __init__(self, root: Path, *, user: str = "alice", serve: bool = True,
                 freq: int = 5, bytes_per_second: float = 5e6,
                 agent: Optional[dict] = None) -> None:
        from .emulator import GlobusEmulator
        self.root = Path(root)
        self.user = user
        self.serve = serve
        self.freq = freq
        self.site_dir = self.root / "site-fs"
        self.remote_dir = self.root / "remote-fs"
        self.config_path = self.root / "site.yaml"
        self.journal_path = self.root / "state" / "journal.sqlite"
        self.emulator = GlobusEmulator(self.root / "globus", bytes_per_second=bytes_per_second)
        self.agent_settings = {"serve": serve, "poll_interval": 2.0, "fatal_fault_window": 5.0,
                               "orphan_grace": 120.0, "python": sys.executable}
        self.agent_settings.update(agent or {})
        self.jobs: List[str] = []
        self.identity_id = ""
        self.bindir = Path(shutil.which("qstat") or "/opt/pbs/bin/qstat").parent

    # ------------------------------------------------------------------ setup
    def start(self) -> "RealSite":
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for d in (self.site_dir, self.remote_dir, self.root / "scripts"):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        (self.root / "state").mkdir(mode=0o700, exist_ok=True)
        emu = self.emulator.start()
        emu.add_collection("site", collection_id=SITE_COLLECTION, directory=self.site_dir)
        emu.add_collection("theta-dtn", collection_id=REMOTE_COLLECTION, directory=self.remote_dir)
        emu.add_native_client(client_id=NATIVE_CLIENT)
        self.identity_id = self.add_user(self.user)
        self._write_config()
        from pbs_globus_staging.pbsctl import read_pbs_conf
        self._pbs_state = Path(read_pbs_conf().get("PBS_HOME") or "/var/spool/pbs") / \
            "globus_staging"
        self._made_pbs_state = not self._pbs_state.exists()
        proc = self.cli("install", "--python", sys.executable, "--freq", str(self.freq),
                        "--alarm", "30")
        if proc.returncode != 0:
            raise AssertionError(f"install failed: {proc.stdout}{proc.stderr}")
        return self

    def add_user(self, user: str) -> str:
        from pbs_globus_staging.credentials import UserTokens, write_user_tokens
        pw = pwd.getpwnam(user)
        emu = self.emulator
        ident = emu.add_identity(user)
        emu.grant(ident, SITE_COLLECTION, f"/{user}/")
        emu.grant(ident, REMOTE_COLLECTION, f"/{user}/")
        for base in (self.site_dir, self.remote_dir):
            for sub in ("", "in", "out"):
                d = base / user / sub
                d.mkdir(parents=True, exist_ok=True)
                os.chown(d, pw.pw_uid, pw.pw_gid)
        tokens = emu.issue_tokens(ident, client_id=NATIVE_CLIENT)
        tdir = self.root / "tokens" / user
        tdir.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tdir.parent, 0o755)
        write_user_tokens(UserTokens(client_id=NATIVE_CLIENT,
                                     refresh_token=tokens["refresh_token"],
                                     created_at=int(time.time())), token_dir=tdir)
        for p in (tdir, *tdir.iterdir()):
            os.chown(p, pw.pw_uid, pw.pw_gid)
        return ident

    def _write_config(self) -> None:
        cfg = {
            "site": {"collection": SITE_COLLECTION, "name": "Real PBS test",
                     "roots": [f"{self.site_dir}/{{user}}/"],
                     "collection_root": f"{self.site_dir}/"},
            "collections": {"theta-dtn": REMOTE_COLLECTION},
            "credentials": {"mode": "user", "client_id": NATIVE_CLIENT,
                            "token_dir": str(self.root / "tokens" / "{user}")},
            "globus": {"transfer_url": self.emulator.url + "/",
                       "auth_url": self.emulator.url + "/", "max_retries": 1,
                       "http_timeout": 10},
            "agent": self.agent_settings,
            "journal": {"path": str(self.journal_path)},
        }
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def stop(self) -> None:
        try:
            for job in self.jobs:
                self.purge(job)
            proc = self.cli("uninstall")
            if proc.returncode != 0:
                sys.stderr.write(f"uninstall: {proc.stdout}{proc.stderr}\n")
            self.stop_agent()
            if getattr(self, "_made_pbs_state", False):
                shutil.rmtree(self._pbs_state, ignore_errors=True)   # the hook config
        finally:
            self.emulator.stop()

    # ---------------------------------------------------------------- agent
    def agent_pid(self) -> Optional[int]:
        from pbs_globus_staging import serve
        pid = serve.is_serving(self.journal_path.parent)
        return pid if pid and pid > 0 else None

    def stop_agent(self, *, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        pid = self.agent_pid()
        if pid is None:
            return
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while self.agent_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.agent_pid() == pid:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the serving agent {pid} ignored signal {sig}; killed")

    def wait_agent(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.agent_pid()
            if pid:
                return pid
            time.sleep(0.2)
        raise AssertionError(f"no serving agent within {timeout:.0f} s")

    # -------------------------------------------------------------- commands
    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items()
               if k not in ("GLOBUS_STAGING_CONFIG", "PBS_CONF_FILE")}
        # The code under test as this process imports it (the source tree or the wheels).
        env["PYTHONPATH"] = os.pathsep.join(IMPORT_DIRS)
        return subprocess.run([sys.executable, "-m", "pbs_globus_staging",
                               "--config", str(self.config_path), *args],
                              capture_output=True, text=True, timeout=300, env=env, cwd="/tmp")

    def run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bindir / argv[0]), *argv[1:]], capture_output=True,
                              text=True, timeout=timeout, cwd="/tmp")

    def qsub(self, *args: str, script: str = "#!/bin/sh\ntrue\n",
             user: Optional[str] = None) -> subprocess.CompletedProcess:
        path = self.root / "scripts" / f"job{time.monotonic_ns()}.sh"
        path.write_text(script)
        path.chmod(0o755)
        argv = [str(self.bindir / "qsub"), *args, str(path)]
        proc = subprocess.run(["su", user or self.user, "-c", shlex.join(argv)],
                              capture_output=True, text=True, timeout=60, cwd="/tmp")
        if proc.returncode == 0:
            self.jobs.append(proc.stdout.strip())
        return proc

    def submit(self, *args: str, **kw) -> str:
        proc = self.qsub(*args, **kw)
        if proc.returncode != 0:
            raise AssertionError(f"qsub failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip()

    def qstat(self, job: str) -> dict:
        proc = self.run("qstat", "-x", "-f", "-F", "json", job)
        if proc.returncode != 0 or not proc.stdout:
            return {}
        return (json.loads(proc.stdout).get("Jobs") or {}).get(job, {})

    def job_state(self, job: str) -> str:
        return str(self.qstat(job).get("job_state", ""))

    def purge(self, job: str) -> None:
        self.run("qdel", "-W", "force", job)
        for _ in range(50):
            if self.run("qdel", "-x", job).returncode == 0 or \
                    self.run("qstat", "-x", job).returncode != 0:
                return
            time.sleep(0.2)

    # ----------------------------------------------------------- inspection
    def journal(self):
        from pbs_globus_staging.journal import Journal
        return Journal.open(self.journal_path)

    def events(self, job: str) -> list:
        j = self.journal()
        try:
            return j.events(job)
        finally:
            j.close()

    def event_time(self, job: str, kind: str) -> Optional[float]:
        times = [e.time for e in self.events(job) if e.kind == kind]
        return times[0] if times else None

    def request_state(self, job: str, direction: str = "in") -> Optional[str]:
        j = self.journal()
        try:
            for r in j.requests_for_job(job):
                if r.direction == direction:
                    return r.state
            return None
        finally:
            j.close()

    def timeline(self, job: str) -> str:
        return self.cli("show", job).stdout

    def local(self, rel: str, user: Optional[str] = None) -> str:
        return f"{self.site_dir}/{user or self.user}/{rel}"

    def user_dir(self, rel: str, user: Optional[str] = None) -> str:
        """A directory on the site side owned by the user: the emulator runs as root
        and creates what is missing as root, where the job could not write."""
        pw = pwd.getpwnam(user or self.user)
        path = self.site_dir / pw.pw_name / rel
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, pw.pw_uid, pw.pw_gid)
        return str(path) + "/"

    def remote_file(self, rel: str, text: str = "data\n", user: Optional[str] = None) -> Path:
        path = self.remote_dir / (user or self.user) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def stagein_arg(self, local_rel: str, remote_rel: str, extra: str = "") -> str:
        return (f"stagein_globus={self.local(local_rel)}@theta-dtn:~/{self.user}/"
                f"{remote_rel}{extra}")

    def stageout_arg(self, local_rel: str, remote_rel: str) -> str:
        return f"stageout_globus={self.local(local_rel)}@theta-dtn:~/{self.user}/{remote_rel}"

    def wait(self, pred, *, timeout: float = 60.0, step: float = 0.1, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(step)
        raise AssertionError(f"not reached in {timeout:.0f} s: {what}")

    def server_log_tail(self, n: int = 60) -> str:
        from pbs_globus_staging.pbsctl import read_pbs_conf
        home = Path(read_pbs_conf().get("PBS_HOME") or "/var/spool/pbs")
        logs = sorted((home / "server_logs").glob("*"))
        if not logs:
            return ""
        return "\n".join(logs[-1].read_text(errors="replace").splitlines()[-n:])

    def tasks_for(self, job: str, direction: str = "in") -> list:
        """The emulator's tasks behind a job's request (batched ones too)."""
        j = self.journal()
        try:
            ids = [t.task_id for r in j.requests_for_job(job) if r.direction == direction
                   for t in j.transfers_for_request(r.request_id) if t.task_id]
        finally:
            j.close()
        return [self.emulator.tasks[i] for i in ids if i in self.emulator.tasks]

    def calls_by_identity(self, path_contains: str = "") -> Dict[str, int]:
        """Globus API calls so far per identity (Auth's token calls have none)."""
        out: Dict[str, int] = {}
        for c in self.emulator.calls:
            if c.identity_id and path_contains in c.path:
                out[c.identity_id] = out.get(c.identity_id, 0) + 1
        return out
