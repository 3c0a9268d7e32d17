"""The serving agent's life: one long-lived ``agent --serve`` per site.

Where it runs: on the PBS server host, as root, started (and restarted
whenever it is not running) by the periodic hook, which does nothing else in
this mode.  Everything lives beside the journal (the state directory):

``agent.lock``       an exclusive ``flock`` held for the agent's life -- one agent
                     per journal; the file holds its pid.  A second start exits at
                     once.  The kernel drops the lock when the process dies, so a
                     killed agent never blocks its successor.
``agent.wake``       a FIFO.  The queuejob and jobobit hooks write one byte to it
                     (non-blocking; nobody listening is fine) so the agent looks at
                     PBS within a fraction of a second of a qsub or a job's end.
``agent.heartbeat``  JSON {pid, started, beat, ...} rewritten every few seconds:
                     what ``globus-staging status`` shows an admin.

The agent leaves on SIGTERM/SIGINT (after its current pass), when its site
config changes (the periodic hook starts it again with the new settings and
code), or when its state directory disappears.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import select
import signal
import stat
import time
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger("pbs_globus_staging.agent")

LOCK_NAME = "agent.lock"
WAKE_NAME = "agent.wake"          # hookcore.WAKE_NAME: the hooks write here
HEARTBEAT_NAME = "agent.heartbeat"
BEAT_EVERY = 5.0


class AlreadyServing(Exception):
    def __init__(self, pid: Optional[int]) -> None:
        super().__init__(f"an agent is already serving (pid {pid or '?'})")
        self.pid = pid


def read_pid(lock_path: Path) -> Optional[int]:
    try:
        return int(lock_path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def take_lock(state_dir: Path) -> int:
    """The single-instance lock, or ``AlreadyServing``."""
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise AlreadyServing(read_pid(path)) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def is_serving(state_dir: Path) -> Optional[int]:
    """The serving agent's pid when one holds the lock, else None."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return read_pid(path) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def open_wake(state_dir: Path) -> int:
    """The wake-up FIFO, opened read-write so it never reads EOF when the
    last hook closes its end."""
    path = state_dir / WAKE_NAME
    try:
        st = os.lstat(path)
        if not stat.S_ISFIFO(st.st_mode):
            os.unlink(path)
            raise FileNotFoundError
    except FileNotFoundError:
        os.mkfifo(path, 0o600)
    return os.open(path, os.O_RDWR | os.O_NONBLOCK)


class Server:
    """The pieces ``Agent.run(waiter=...)`` needs, and when to stop."""

    def __init__(self, state_dir: Path, *, config_path: Optional[str] = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.state_dir = Path(state_dir)
        self.config_path = config_path
        self.clock = clock
        self.stop = False
        self.why = ""
        self.started = clock()
        self._lock_fd = take_lock(self.state_dir)
        self._wake_fd = open_wake(self.state_dir)
        self._config_mtime = self._mtime(config_path)
        self._last_beat = 0.0
        self.wakeups = 0
        self.beat()

    @staticmethod
    def _mtime(path: Optional[str]) -> Optional[float]:
        if not path:
            return None
        try:
            return os.stat(path).st_mtime
        except OSError:
            return None

    def install_signals(self) -> None:
        def handler(signum: int, _frame: object) -> None:
            self.request_stop(f"signal {signum}")
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
        # Started from pbs_server's periodic hook child, the agent inherits its
        # signal mask: SIGHUP, SIGINT, SIGTERM and SIGCHLD blocked (seen on
        # OpenPBS 23.06), so a plain `kill` would never reach it.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT,
                                                    signal.SIGHUP, signal.SIGCHLD})

    def request_stop(self, why: str) -> None:
        if not self.stop:
            self.stop, self.why = True, why
        try:
            os.write(self._wake_fd, b"x")      # out of the select() now
        except OSError:
            pass

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when a hook (or a stop) woke us."""
        if self.stop:
            return True
        now = self.clock()
        if now - self._last_beat >= BEAT_EVERY:
            self.beat()
            self._check_surroundings()
            if self.stop:
                return True
        seconds = max(0.0, min(seconds, BEAT_EVERY))
        try:
            ready, _, _ = select.select([self._wake_fd], [], [], seconds)
        except InterruptedError:
            return True
        if not ready:
            return False
        try:
            while os.read(self._wake_fd, 4096):
                pass
        except BlockingIOError:
            pass
        self.wakeups += 1
        return True

    def _check_surroundings(self) -> None:
        if not self.state_dir.is_dir():
            self.request_stop("state directory gone")
        elif self._mtime(self.config_path) != self._config_mtime:
            self.request_stop("site config changed; the periodic hook restarts the agent")

    def beat(self, *, state: str = "serving") -> None:
        self._last_beat = self.clock()
        data = {"pid": os.getpid(), "state": state, "started": self.started,
                "beat": self._last_beat, "wakeups": self.wakeups}
        path = self.state_dir / HEARTBEAT_NAME
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(data) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("heartbeat not written: %s", exc)

    def close(self) -> None:
        self.beat(state="stopped")
        for fd in (self._wake_fd, self._lock_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def agent_status(state_dir: Path, *, now: Optional[float] = None) -> dict:
    """What an admin needs to see the serving agent is alive."""
    now = time.time() if now is None else now
    out: dict = {"serving_pid": is_serving(Path(state_dir))}
    try:
        beat = json.loads((Path(state_dir) / HEARTBEAT_NAME).read_text())
    except (OSError, ValueError):
        beat = None
    if isinstance(beat, dict):
        out.update(heartbeat_age=round(now - float(beat.get("beat") or 0), 1),
                   heartbeat_state=beat.get("state"), started=beat.get("started"),
                   wakeups=beat.get("wakeups"))
    return out


def format_agent_status(data: dict) -> str:
    pid = data.get("serving_pid")
    age = data.get("heartbeat_age")
    if pid:
        stale = age is not None and age > 3 * BEAT_EVERY
        return (f"agent: serving, pid {pid}, heartbeat {age:.0f} s ago"
                + (" (STALE: the agent may be stuck)" if stale else "")
                if age is not None else f"agent: serving, pid {pid}")
    if data.get("heartbeat_state"):
        return (f"agent: not serving (last heartbeat {age:.0f} s ago, "
                f"{data['heartbeat_state']}); the periodic hook starts it again")
    return "agent: no serving agent (runs once per periodic hook run, or not yet started)"
