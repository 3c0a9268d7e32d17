"""PBS through its own commands: the only way the agent changes jobs.

Every command runs as an argument list (never through a shell) from
``PBS_EXEC/bin``, found the way PBS itself finds it: ``/etc/pbs.conf`` (or the
file named by ``PBS_CONF_FILE``), overridden by the environment.  The same code
drives a real OpenPBS and the test double; only ``pbs.conf`` differs.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from .errors import FatalError, RetryableError

DEFAULT_CONF = "/etc/pbs.conf"

# qstat/qrls/qalter/qdel exit 153 for "Unknown Job Id" (pbs-samples/qstat_unknown.txt).
EXIT_UNKNOWN_JOB = 153
# "cannot connect to server" and friends: the server (or its database) is down.
_UNREACHABLE_MARKERS = ("cannot connect to server", "Connection refused",
                        "Communication failure", "Server is not running",
                        "No Permission", "pbs_connect", "Cannot connect")


class JobGone(FatalError):
    """PBS does not know the job (any more)."""


def read_pbs_conf(path: Optional[str] = None,
                  environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``pbs.conf`` as a dict; ``PBS_*`` environment variables win, as in PBS."""
    environ = os.environ if environ is None else environ
    path = path or environ.get("PBS_CONF_FILE") or DEFAULT_CONF
    conf: Dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line or line.startswith("#") or "=" not in line:
                    continue
                key, _, value = line.partition("=")
                conf[key.strip()] = value.strip()
    except FileNotFoundError:
        pass
    for key in ("PBS_EXEC", "PBS_HOME", "PBS_SERVER"):
        if environ.get(key):
            conf[key] = environ[key]
    return conf


def safe_comment(text: str, *, limit: int = 200) -> str:
    """A comment PBS will take through ``qalter -W comment=``.

    Commas separate -W attributes and PBS's own parser trims quotes (either
    kind: a lone apostrophe, as in "the site's", is an unbalanced quote and
    PBS refuses the whole qalter), so they are replaced rather than quoted;
    newlines would break ``qstat`` output.
    """
    text = " ".join(str(text).replace(",", ";").replace('"', "`").replace("'", "`").split())
    return text[:limit]


class PbsCommands:
    """Thin, counted wrappers over qstat/qrls/qalter/qdel/qsub/qhold.

    Raises ``RetryableError`` when PBS cannot be reached (its server or
    database is down: the seed saw exactly that), ``JobGone`` for an unknown
    job id, ``FatalError`` for any other refusal (with PBS's own line).
    """

    def __init__(self, *, pbs_exec: Optional[str] = None, conf: Optional[Mapping[str, str]] = None,
                 timeout: float = 30.0,
                 runner: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> None:
        conf = dict(conf) if conf is not None else read_pbs_conf()
        exec_dir = pbs_exec or conf.get("PBS_EXEC") or "/opt/pbs"
        self.bin = Path(exec_dir) / "bin"
        self.timeout = timeout
        self._run = runner
        self.calls = 0
        env = dict(os.environ)
        if os.environ.get("PBS_CONF_FILE"):
            env["PBS_CONF_FILE"] = os.environ["PBS_CONF_FILE"]
        self._env = env

    # -- plumbing -------------------------------------------------------
    def run(self, name: str, args: Sequence[str], *, check: bool = True,
            user: Optional[str] = None, stdin: Optional[str] = None,
            cwd: Optional[str] = None, env: Optional[Mapping[str, str]] = None
            ) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / name), *args]
        kwargs = {}
        run_env = dict(self._env)
        if env:
            run_env.update(env)
        if user is not None and os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam(user)
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
            run_env.update(HOME=pw.pw_dir, USER=user, LOGNAME=user)
        self.calls += 1
        try:
            proc = self._run(cmd, capture_output=True, text=True, timeout=self.timeout,
                             input=stdin, env=run_env, cwd=cwd, **kwargs)
        except subprocess.TimeoutExpired as exc:
            raise RetryableError(f"{name} did not answer within {self.timeout:g} s") from exc
        except OSError as exc:
            raise RetryableError(f"cannot run {cmd[0]}: {exc.strerror}") from exc
        if check and proc.returncode != 0:
            self._raise_for(name, args, proc)
        return proc

    @staticmethod
    def _raise_for(name: str, args: Sequence[str], proc: subprocess.CompletedProcess) -> None:
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        line = err[0] if err else f"{name} exited {proc.returncode}"
        if proc.returncode == EXIT_UNKNOWN_JOB or "Unknown Job Id" in line:
            raise JobGone(line)
        if any(m in line for m in _UNREACHABLE_MARKERS):
            raise RetryableError(f"PBS unreachable: {line}")
        raise FatalError(f"{name} {' '.join(args[:-1])}: {line}".replace("  ", " "))

    # -- reading ----------------------------------------------------------
    def jobs(self) -> Dict[str, dict]:
        """Every live job, in one call (``-F json`` with several ids prints only
        the first one, so ask for all jobs at once)."""
        proc = self.run("qstat", ["-f", "-F", "json"])
        return parse_qstat_json(proc.stdout)

    def job(self, job_id: str, *, history: bool = True) -> Optional[dict]:
        """One job, finished ones included; ``None`` when PBS does not know it."""
        args = ["-x", "-f", "-F", "json", job_id] if history else ["-f", "-F", "json", job_id]
        try:
            proc = self.run("qstat", args)
        except JobGone:
            return None
        return parse_qstat_json(proc.stdout).get(job_id) or next(
            iter(parse_qstat_json(proc.stdout).values()), None)

    # -- changing -------------------------------------------------------------
    def release(self, job_id: str, *, hold: str = "s") -> None:
        self.run("qrls", ["-h", hold, job_id])

    def hold(self, job_id: str, *, hold: str = "s") -> None:
        self.run("qhold", ["-h", hold, job_id])

    def alter(self, job_id: str, *, resources: Optional[Mapping[str, str]] = None,
              comment: Optional[str] = None) -> None:
        """Resources and the comment in one ``qalter``: one PBS request per change."""
        args: List[str] = []
        for name, value in (resources or {}).items():
            args += ["-l", f"{name}={value}"]
        if comment is not None:
            args += ["-W", f"comment={safe_comment(comment)}"]
        if args:
            self.run("qalter", [*args, job_id])

    def delete(self, job_id: str) -> None:
        try:
            self.run("qdel", [job_id])
        except JobGone:
            pass

    def submit(self, script: str, *, user: str, args: Iterable[str] = (),
               cwd: Optional[str] = None) -> str:
        """Submit a job as ``user`` (never as root on a user's behalf)."""
        proc = self.run("qsub", [*args, script], user=user, cwd=cwd)
        return proc.stdout.strip()


def parse_qstat_json(text: str) -> Dict[str, dict]:
    """The ``Jobs`` mapping of ``qstat -f -F json``; tolerant of PBS's quirks
    (a header without ``Jobs`` when there are none)."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        # Real PBS has printed invalid JSON for odd attribute values (unescaped
        # control characters); retrying next cycle is the safe answer.
        raise RetryableError(f"qstat printed unreadable JSON: {exc}") from exc
    return data.get("Jobs") or {}

