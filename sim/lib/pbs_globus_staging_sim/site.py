"""A whole staging site on one machine: the PBS double, the Globus emulator,
the hook suite installed with the real installer through the double's qmgr,
and the agent run by the periodic hook as a subprocess -- the production path
with loopback endpoints.  The demo and the end-to-end tests both use it.

``install="command"`` (the default, the demo's) installs as an administrator does:
``globus-staging install`` as a subprocess, each directive a ``qmgr -c`` subprocess.
``install="in-process"`` runs the same install code in this process and applies the
same directives through the double's qmgr here: the end-to-end tests' sites, which
would otherwise start ~55 interpreters each before their scenario begins.
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import yaml
from pbs_globus_staging.installer import Qmgr

from .emulator import GlobusEmulator
from .pbsdouble import ops
from .pbsdouble.server import PbsServer

NATIVE_CLIENT = "5e1c0d2a-7b3f-4e8a-9c6d-2f1e0a9b8c7d"
SITE_COLLECTION = "6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e"
REMOTE_COLLECTION = "08925f04-569f-11e7-bef8-22000b9a448b"
# A second remote mapped collection the users' first login did not consent to.
EAGLE_COLLECTION = "05d2c76a-e867-4f67-aa57-76edeb0beda0"


INSTALL_MODES = ("command", "in-process")


class DoubleQmgr(Qmgr):
    """The installer's ``Qmgr`` with each directive applied by the double's qmgr in
    this process, as root: the answers ``PBS_EXEC/bin/qmgr -c`` gives (the double's
    command runs the same ``ops.qmgr``), without an interpreter start per directive."""

    def __init__(self, server: PbsServer) -> None:
        super().__init__(pbs_exec=str(server.exec_dir))
        self.conf = server.conf

    def call(self, command: str) -> subprocess.CompletedProcess:
        argv = [self.path, "-c", command]
        try:
            stdout = ops.qmgr(self.conf, ops.Requestor("root"), command)
        except ops.PbsError as exc:
            return subprocess.CompletedProcess(argv, exc.exit_code, "", exc.message + "\n")
        return subprocess.CompletedProcess(argv, 0, stdout, "")


class StagingSite:
    """Everything a staging scenario needs, under one directory.

    ``user`` is the job owner: the current user by default, so the per-user
    token file is really owned by its user (the agent checks that).
    """

    def __init__(self, root: Path, *, bytes_per_second: float = 5e6,
                 poll_interval: float = 0.5, cycle_budget: float = 3.0,
                 fatal_fault_window: float = 2.0, orphan_grace: float = 60.0,
                 agent_overrides: Optional[dict] = None, user: Optional[str] = None,
                 active_tasks_per_identity: int = 3, extra_config: Optional[dict] = None,
                 install: str = "command") -> None:
        if install not in INSTALL_MODES:
            raise ValueError(f"install={install!r}: expected one of {', '.join(INSTALL_MODES)}")
        self.install_mode = install
        self.root = Path(root)
        self.user = user or pwd.getpwuid(os.getuid()).pw_name
        self.site_dir = self.root / "site-fs"          # the site's filesystem (its collection)
        self.remote_dir = self.root / "remote-fs"      # the far side (theta-dtn)
        self.eagle_dir = self.root / "eagle-fs"        # another far side (eagle)
        self.emulator = GlobusEmulator(self.root / "globus", bytes_per_second=bytes_per_second,
                                       active_tasks_per_identity=active_tasks_per_identity)
        self.pbs = PbsServer(self.root / "pbs", exec_dir=self.root / "pbs-exec",
                             run_jobs_as_owner=False)
        self.config_path = self.root / "site.yaml"
        self.agent_settings = {"poll_interval": poll_interval, "cycle_budget": cycle_budget,
                               "fatal_fault_window": fatal_fault_window,
                               "orphan_grace": orphan_grace, "python": sys.executable,
                               # site.cycle() is one periodic-hook run doing one bounded
                               # agent run, as the scenario tests step it
                               "serve": False}
        self.agent_settings.update(agent_overrides or {})
        self.extra_config = extra_config or {}
        self.identity_id = ""
        self._started = False

    # ------------------------------------------------------------------ setup
    def start(self) -> "StagingSite":
        self.site_dir.mkdir(parents=True, exist_ok=True)
        self.remote_dir.mkdir(parents=True, exist_ok=True)
        self.eagle_dir.mkdir(parents=True, exist_ok=True)
        emu = self.emulator.start()
        emu.add_collection("site", collection_id=SITE_COLLECTION, directory=self.site_dir)
        emu.add_collection("theta-dtn", collection_id=REMOTE_COLLECTION, directory=self.remote_dir)
        emu.add_collection("eagle", collection_id=EAGLE_COLLECTION, directory=self.eagle_dir)
        emu.add_native_client(client_id=NATIVE_CLIENT)
        self.identity_id = self.add_user(self.user)
        self.pbs.install_commands()
        self._write_config()
        self.install()
        self._started = True
        return self

    def install(self) -> None:
        """``globus-staging install`` with the site's periodic-hook settings."""
        args = ("install", "--python", sys.executable, "--freq", "1", "--alarm", "30")
        if self.install_mode == "command":
            self.cli(*args)
            return
        import io

        from pbs_globus_staging.cli import build_parser
        from pbs_globus_staging.commands.install import cmd_install
        parsed = build_parser().parse_args(["--config", str(self.config_path), *args])
        out = io.StringIO()
        rc = cmd_install(parsed, qmgr=DoubleQmgr(self.pbs), environ=self.env(), out=out)
        if rc != 0:
            raise AssertionError(f"globus-staging install exited {rc}:\n{out.getvalue()}")

    def add_user(self, user: str) -> str:
        """A Globus identity for ``user``, access to their own areas, and the
        token file ``globus-staging login --collection site --collection
        theta-dtn`` would have written (no consent for eagle)."""
        from pbs_globus_staging.credentials import UserTokens, login_scope, write_user_tokens
        emu = self.emulator
        ident = emu.add_identity(user)
        for coll, directory in ((SITE_COLLECTION, self.site_dir),
                                (REMOTE_COLLECTION, self.remote_dir),
                                (EAGLE_COLLECTION, self.eagle_dir)):
            emu.grant(ident, coll, f"/{user}/")
            (directory / user).mkdir(parents=True, exist_ok=True)
        consented = (SITE_COLLECTION, REMOTE_COLLECTION)
        tokens = emu.issue_tokens(ident, client_id=NATIVE_CLIENT,
                                  scope=str(login_scope(consented)))
        self.token_dir(user).parent.mkdir(parents=True, exist_ok=True)
        write_user_tokens(UserTokens(client_id=NATIVE_CLIENT,
                                     refresh_token=tokens["refresh_token"],
                                     scope=tokens["scope"], collections=consented,
                                     created_at=int(time.time())),
                          token_dir=self.token_dir(user))
        return ident

    def token_dir(self, user: str) -> Path:
        return self.root / "tokens" / user

    def _write_config(self) -> None:
        cfg = {
            "site": {"collection": SITE_COLLECTION, "name": "Demo HPC",
                     "roots": [f"{self.site_dir}/{{user}}/"],
                     "collection_root": f"{self.site_dir}/"},
            # Both GCSv5 mapped collections; eagle is one the site did not list.
            "collections": {"theta-dtn": REMOTE_COLLECTION, "eagle": EAGLE_COLLECTION,
                            "data_access": [SITE_COLLECTION, "theta-dtn"]},
            "credentials": {"mode": "user", "client_id": NATIVE_CLIENT,
                            "token_dir": str(self.root / "tokens" / "{user}")},
            "globus": {"transfer_url": self.emulator.url + "/",
                       "auth_url": self.emulator.url + "/", "max_retries": 1,
                       "http_timeout": 10},
            "agent": self.agent_settings,
            "pbs": {"exec": str(self.pbs.exec_dir), "home": str(self.pbs.home)},
            "journal": {"path": str(self.root / "journal.sqlite")},
        }
        for key, value in self.extra_config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key].update(value)
            else:
                cfg[key] = value
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def reconfigure(self, **sections: dict) -> None:
        for key, value in sections.items():
            self.extra_config.setdefault(key, {})
            if isinstance(value, dict):
                self.extra_config[key].update(value)
            else:
                self.extra_config[key] = value
        self._write_config()
        self.cli("upgrade", "--python", sys.executable, "--freq", "1", "--alarm", "30")

    def stop(self) -> None:
        try:
            self.pbs.stop()
        finally:
            self.emulator.stop()

    def __enter__(self) -> "StagingSite":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -------------------------------------------------------------- commands
    def env(self, *, user: Optional[str] = None) -> Dict[str, str]:
        env = self.pbs.env(user=user)
        env["GLOBUS_STAGING_CONFIG"] = str(self.config_path)
        return env

    def cli(self, *args: str, user: Optional[str] = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "pbs_globus_staging",
                               "--config", str(self.config_path), *args],
                              env=self.env(user=user), capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"globus-staging {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def qsub(self, *args: str, script: str = "#!/bin/sh\ntrue\n", user: Optional[str] = None,
             check: bool = True) -> subprocess.CompletedProcess:
        path = self.root / "scripts" / f"job{time.monotonic_ns()}.sh"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
        path.chmod(0o755)
        proc = self.pbs.run(["qsub", *args, str(path)], user=user)
        if check and proc.returncode != 0:
            raise AssertionError(f"qsub failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def submit(self, *args: str, **kw: object) -> str:
        return self.qsub(*args, **kw).stdout.strip()  # type: ignore[arg-type]

    def qstat(self, job_id: str) -> dict:
        proc = self.pbs.run(["qstat", "-x", "-f", "-F", "json", job_id])
        return (json.loads(proc.stdout).get("Jobs") or {}).get(job_id, {}) if proc.stdout else {}

    def resource(self, job_id: str, name: str) -> Optional[str]:
        return (self.qstat(job_id).get("Resource_List") or {}).get(name)

    # ------------------------------------------------------------ running
    def cycle(self) -> dict:
        """One periodic-hook run: the agent as a subprocess, exactly as PBS does it."""
        return self.pbs.run_periodic("globus_staging_periodic", wait=True)

    def schedule(self) -> List[str]:
        return self.pbs.schedule(wait=True)

    def run_until(self, predicate, *, timeout: float = 60.0, schedule: bool = True) -> None:
        """Alternate agent runs and scheduling cycles until ``predicate()``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            self.cycle()
            if schedule:
                self.schedule()
            if predicate():
                return
        raise AssertionError(f"condition not reached in {timeout:.0f} s")

    def journal(self):
        from pbs_globus_staging.journal import Journal
        return Journal.open(self.root / "journal.sqlite")

    def timeline(self, job_id: str) -> str:
        return self.cli("show", job_id, check=False).stdout

    def job_state(self, job_id: str) -> str:
        return str(self.qstat(job_id).get("job_state", ""))

