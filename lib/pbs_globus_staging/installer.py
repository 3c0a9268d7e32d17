"""Install, upgrade and uninstall the hook suite with ``qmgr``.

Idempotent: ``qmgr create`` of something that exists fails (exit 207), so
every object is looked up first and only what is missing is created; hook
attributes are set and the scripts and config re-imported on every run, which
is also what an upgrade needs.  ``--dry-run`` prints the qmgr script instead
(a script a real OpenPBS takes with ``qmgr < FILE``).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import states
from .errors import ConfigError, StagingError

EVENTS = ("queuejob", "modifyjob", "runjob", "jobobit", "periodic")
HOOK_PREFIX = "globus_staging_"
# Resource name -> qmgr attributes.  flag=r: users read, cannot set; hooks and
# root can -- the home of the agent's own state (observed on OpenPBS 23.06).
RESOURCES: Tuple[Tuple[str, str], ...] = (
    (states.RES_STAGEIN, "type=string"),
    (states.RES_STAGEOUT, "type=string"),
    (states.RES_STATE, "type=string,flag=r"),
    (states.RES_TASKS, "type=string,flag=r"),
)
# .HK keys qmgr accepts with "set hook" (type is always site for qmgr-made hooks),
# in the order a real OpenPBS 23.06 takes them: event before freq (freq is only
# allowed for periodic events), and "enabled" last -- a periodic hook cannot be
# enabled before it has its script ("periodic hook is missing information").
_HOOK_ATTRS = ("event", "user", "order", "alarm", "freq", "fail_action", "debug")


# What the package ships beside its code (package data, so a wheel or an sdist
# carries it): the hook scripts and their .HK attributes, and for the admin an
# example site config, a systemd unit and a logrotate rule.
DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED = ("site.yaml.example", "globus-staging-agent.service", "globus-staging.logrotate")
# The paths the shipped unit and rule are written with; ``shipped_file`` puts
# this install's own in their place.
_DEFAULT_PATHS = ("/opt/pbs-globus-staging/bin/globus-staging",
                  "/etc/pbs-globus-staging/site.yaml",
                  "/var/spool/pbs/globus_staging/agent.log")


def default_hooks_dir() -> Path:
    return DATA_DIR / "hooks"


def shipped_file(name: str, *, program: str, site_config: str, agent_log: str) -> str:
    """One of ``SHIPPED``, with this install's paths in the unit and the rule."""
    if name not in SHIPPED:
        raise ConfigError(f"no shipped file {name!r}; expected one of: {', '.join(SHIPPED)}")
    text = (DATA_DIR / name).read_text(encoding="utf-8")
    if name != "site.yaml.example":
        for old, new in zip(_DEFAULT_PATHS, (program, site_config, agent_log)):
            text = text.replace(old, new)
    return text


def read_hk(path: Path) -> Dict[str, str]:
    attrs: Dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            attrs[key.strip()] = value.strip()
    return attrs


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the installer will do, computed before anything is done."""

    hooks_dir: Path
    hook_config: Path
    hooks: Tuple[Tuple[str, Path, Dict[str, str]], ...]   # (name, script, attrs)

    def script(self, *, existing_resources: Sequence[str] = (),
               existing_hooks: Sequence[str] = (), assume_empty: bool = False) -> List[str]:
        lines: List[str] = []
        for name, attrs in RESOURCES:
            if assume_empty or name not in existing_resources:
                lines.append(f"create resource {name} {attrs}")
        for name, script, attrs in self.hooks:
            if assume_empty or name not in existing_hooks:
                lines.append(f"create hook {name}")
            # event first: freq is only accepted once the event includes periodic.
            for key in _HOOK_ATTRS:
                if key in attrs:
                    lines.append(f"set hook {name} {key} = {attrs[key]}")
            lines.append(f"import hook {name} application/x-python default {script}")
            lines.append(f"import hook {name} application/x-config default {self.hook_config}")
            if "enabled" in attrs:
                lines.append(f"set hook {name} enabled = {attrs['enabled']}")
        return lines


def make_plan(*, hooks_dir: Optional[Path] = None, hook_config: Path,
              periodic_freq: Optional[int] = None, periodic_alarm: Optional[int] = None) -> Plan:
    hooks_dir = Path(hooks_dir or default_hooks_dir())
    hooks = []
    for event in EVENTS:
        name = HOOK_PREFIX + event
        script = hooks_dir / f"{name}.py"
        hk = hooks_dir / f"{name}.HK"
        if not script.is_file() or not hk.is_file():
            raise ConfigError(f"{hooks_dir}: missing {script.name} or {hk.name}")
        attrs = read_hk(hk)
        if event == "periodic":
            if periodic_freq:
                attrs["freq"] = str(periodic_freq)
            if periodic_alarm:
                attrs["alarm"] = str(periodic_alarm)
        hooks.append((name, script, attrs))
    return Plan(hooks_dir=hooks_dir, hook_config=Path(hook_config), hooks=tuple(hooks))


def run_budget(configured: Optional[float], *, freq: float, alarm: float) -> float:
    """How long one agent run may take.

    A run must end before the next periodic run is due, or PBS skips that one
    and the gap (the release lag) doubles; the interpreter's start-up takes
    well under a second, so ``freq - 2``.  It must also end inside the alarm.
    """
    budget = max(1.0, min(freq - 2.0, alarm - 5.0))
    return min(configured, budget) if configured else budget


def hook_config(*, site_config_path: Path, site: object, journal: str, python: str,
                cycle_budget: float, alarm: float, env: Optional[Mapping[str, str]] = None
                ) -> dict:
    """The JSON the hooks read (their ``.CF``): where the package is, the
    policy subset the event hooks check, and how the periodic hook runs the agent."""
    from . import siteconfig
    return {
        "package_path": str(Path(__file__).resolve().parents[1]),
        "python": python,
        "site_config": str(site_config_path),
        "journal": journal,
        "cycle_budget": cycle_budget,
        "alarm": alarm,
        "env": dict(env or {}),
        "site": siteconfig.to_hook_config(site),
    }


class Qmgr:
    """``qmgr -c`` as a subprocess, one command per call so each error is clear."""

    def __init__(self, *, pbs_exec: str) -> None:
        self.path = str(Path(pbs_exec) / "bin" / "qmgr")

    def call(self, command: str) -> subprocess.CompletedProcess:
        """One directive through ``PBS_EXEC/bin/qmgr``: its exit code and output."""
        return subprocess.run([self.path, "-c", command], capture_output=True, text=True,
                              timeout=60)

    def run(self, command: str, *, check: bool = True) -> subprocess.CompletedProcess:
        proc = self.call(command)
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().replace("\n", " | ")
            raise StagingError(f"qmgr -c \"{command}\" failed (exit {proc.returncode}): {msg}")
        return proc

    def exists(self, kind: str, name: str) -> bool:
        proc = self.run(f"list {kind} {name}", check=False)
        return proc.returncode == 0 and name in proc.stdout


def install(plan: Plan, qmgr: Qmgr, *, out=sys.stdout) -> List[str]:
    existing_res = [n for n, _ in RESOURCES if qmgr.exists("resource", n)]
    existing_hooks = [n for n, _s, _a in plan.hooks if qmgr.exists("hook", n)]
    done = []
    for line in plan.script(existing_resources=existing_res, existing_hooks=existing_hooks):
        qmgr.run(line)
        done.append(line)
        print(f"qmgr: {line}", file=out)
    return done


def uninstall(plan: Plan, qmgr: Qmgr, *, out=sys.stdout) -> List[str]:
    """Remove exactly what install created.  A resource still named by a job
    (finished jobs in history included) cannot be deleted: say so, keep going."""
    problems = []
    for name, _s, _a in plan.hooks:
        if qmgr.exists("hook", name):
            qmgr.run(f"delete hook {name}")
            print(f"qmgr: delete hook {name}", file=out)
    for name, _ in RESOURCES:
        if not qmgr.exists("resource", name):
            continue
        proc = qmgr.run(f"delete resource {name}", check=False)
        if proc.returncode != 0:
            why = (proc.stderr or proc.stdout).strip().splitlines()[0] if (proc.stderr or proc.stdout) else ""
            problems.append(f"resource {name} kept: {why} (jobs, including finished jobs in "
                            "history, still name it; purge them with 'qdel -x JOBID' and run "
                            "uninstall again)")
        else:
            print(f"qmgr: delete resource {name}", file=out)
    return problems


_SQLITE_SIDECARS = ("", "-wal", "-shm", "-journal")


def state_files(*, hook_config: Path, journal: Path, purge: bool = False
                ) -> Tuple[List[Path], List[Path]]:
    """The files ``install`` and the agent made: (to remove, to keep).

    Removed: the hook config, the agent's log (and rotated copies), the users'
    status views (``users/``, rebuilt from the journal) and the token caches
    (``user-tokens.db``, ``client-tokens.db``: cached Globus access tokens, so
    never left behind).  Kept unless ``purge``: the journal, the job history.
    Only what exists is listed.
    """
    state = Path(journal).parent
    remove = [Path(hook_config), Path(hook_config).with_suffix(".tmp"), state / "agent.log"]
    remove += sorted(state.glob("agent.log.*")) + [state / "users"]
    for cache in ("user-tokens.db", "client-tokens.db"):
        remove += [state / (cache + ext) for ext in _SQLITE_SIDECARS]
    history = [Path(str(journal) + ext) for ext in _SQLITE_SIDECARS]
    if purge:
        remove, history = remove + history, []
    return ([p for p in remove if os.path.lexists(p)],
            [p for p in history if os.path.lexists(p)])


def remove_state_files(paths: Sequence[Path], *, out=sys.stdout) -> None:
    """Remove ``paths`` (a directory with its contents, never through a symlink),
    then the directories they were in if that left them empty."""
    import shutil
    parents = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        print(f"removed: {path}", file=out)
        if path.parent not in parents:
            parents.append(path.parent)
    for parent in parents:
        try:
            parent.rmdir()                   # only if empty
            print(f"removed: {parent}/", file=out)
        except OSError:
            pass


def write_hook_config(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
