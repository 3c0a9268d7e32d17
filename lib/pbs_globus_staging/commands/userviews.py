"""Per-user job summaries: how a user reads their own staging history.

The journal is root-only (0600): it holds every user's paths, task ids and
errors, and SQLite cannot hide rows from a reader.  So the agent, after each
run (``globus-staging agent``, as root), writes one JSON summary per changed
job -- the same dict ``show --json`` prints -- into a directory only that
job's owner can read::

    <journal dir>/            root, 0711: traversable, not listable
      journal.sqlite          root, 0600 (unchanged)
      users/                  root, 0711
        alice/                alice, 0700
          123.server.json     alice, 0600

A user's ``show``/``status`` read only ``users/<their name>/``: another
user's job is simply absent, exactly like a job that never existed.  The
journal directory gains o+x (not o+r) so users can reach ``users/``; every
file in it stays 0600, so that reveals nothing.

Root writes into a directory the user owns, so every write is symlink-safe:
the directory is opened with O_NOFOLLOW and checked to be owned by the user,
the file is created under a fresh name with O_EXCL|O_NOFOLLOW relative to that
descriptor and renamed over the old one (rename replaces a planted symlink or
hard link, it never writes through it).  A user can delete or edit their own
summaries; that misleads only themselves -- root's ``show`` reads the journal.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import stat
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from .. import report

log = logging.getLogger("pbs_globus_staging.userviews")

META_KEY = "user_views_since"
OVERLAP = 5.0          # seconds re-read before the marker: events from other processes
                       # may carry a time a little older than the last one we saw
SUFFIX = ".json"


def views_dir(journal_path: str) -> Path:
    return Path(journal_path).parent / "users"


def file_name(job_id: str) -> str:
    """A job id as a file name (``12[3].srv`` -> ``12%5B3%5D.srv.json``)."""
    return urllib.parse.quote(job_id, safe="._-@") + SUFFIX


def _job_of(name: str) -> str:
    return urllib.parse.unquote(name[:-len(SUFFIX)])


def _passwd(user: str) -> Optional[Tuple[int, int]]:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _ensure_traversable(path: Path) -> None:
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
        raise OSError(f"{path}: expected a directory owned by root")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        raise OSError(f"{path}: group/world-writable; fix with chmod 711 {path}")
    if mode & 0o011 != 0o011:
        os.chmod(path, mode | 0o011)


def _user_dir_fd(base: Path, user: str, ids: Tuple[int, int]) -> int:
    uid, gid = ids
    path = base / user
    try:
        os.mkdir(path, 0o700)
        os.chown(path, uid, gid)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != uid:
        os.close(fd)
        raise OSError(f"{path}: owned by uid {st.st_uid}, not {user}")
    return fd


def _write(dfd: int, name: str, data: bytes, ids: Tuple[int, int]) -> None:
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        os.unlink(tmp, dir_fd=dfd)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dfd)
    try:
        os.fchown(fd, *ids)
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)


def changed_jobs(journal: Any, since: float) -> Dict[str, float]:
    """Jobs whose summary may have changed since ``since``: job -> when."""
    newest: Dict[str, float] = {}
    for e in journal.events(since=since if since > 0 else None):
        if e.job_id:
            newest[e.job_id] = max(newest.get(e.job_id, 0.0), e.time)
    # Progress of running transfers changes without events.
    for t in journal.transfers(status=report.LIVE_TRANSFERS):
        polled = t.last_polled or 0.0
        if polled < since:
            continue
        for rid in {i.request_id for i in journal.items_for_transfer(t.transfer_id)}:
            req = journal.get_request(rid) if rid is not None else None
            if req is not None:
                newest[req.job_id] = max(newest.get(req.job_id, 0.0), polled)
    return newest


def publish(journal: Any, base: Path, *, budget: float = 2.0,
            passwd: Callable[[str], Optional[Tuple[int, int]]] = _passwd,
            clock: Callable[[], float] = time.monotonic) -> int:
    """Write the summaries of jobs changed since the last call (as root).

    Bounded by ``budget`` seconds; what is left is done by the next call (the
    marker in the journal only moves past what was written).  Returns the
    number of summaries written.  Never raises for one bad user or file.
    """
    if os.geteuid() != 0:
        return 0      # cannot hand files to their owners; users then use qstat -f
    start = clock()
    since = float(journal.get_meta(META_KEY) or 0.0)
    todo = sorted(changed_jobs(journal, max(0.0, since - OVERLAP)).items(),
                  key=lambda kv: (kv[1], kv[0]))
    if not todo:
        return 0
    base = Path(base)
    base.mkdir(mode=0o711, exist_ok=True)
    _ensure_traversable(base.parent)
    _ensure_traversable(base)
    written, marker, fds = 0, None, {}  # type: int, Optional[float], Dict[str, int]
    try:
        for job_id, when in todo:
            if clock() - start > budget:
                break
            marker = when
            view = report.job_timeline(journal, job_id)
            if view is None:
                continue
            owner = str(view["owner"]).split("@", 1)[0]
            ids = passwd(owner)
            if ids is None or not owner or owner.startswith("."):
                continue          # no account here: nobody to show it to
            try:
                if owner not in fds:
                    fds[owner] = _user_dir_fd(base, owner, ids)
                data = json.dumps(view, default=str, separators=(",", ":")).encode()
                _write(fds[owner], file_name(job_id), data, ids)
                written += 1
            except OSError as exc:
                log.warning("user view of %s for %s not written: %s", job_id, owner, exc)
    finally:
        for fd in fds.values():
            os.close(fd)
    if marker is not None and marker > since:
        journal.set_meta(META_KEY, repr(marker))
    return written


# ----------------------------------------------------------------- reading (as the user)
def _open_user_dir(base: Path, user: str) -> Optional[int]:
    try:
        fd = os.open(base / user, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    if os.fstat(fd).st_uid != os.getuid():
        os.close(fd)
        return None
    return fd


def _load(dfd: int, name: str) -> Optional[dict]:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as fh:
            return json.loads(fh.read(8 << 20))
    except (OSError, ValueError):
        return None


def read_view(base: Path, user: str, job_id: str) -> Optional[dict]:
    """``user``'s summary of ``job_id`` (a bare ``123`` matches ``123.server``);
    None when there is none -- which is also what another user's job reads as."""
    dfd = _open_user_dir(Path(base), user)
    if dfd is None:
        return None
    try:
        view = _load(dfd, file_name(job_id))
        if view is None and "." not in job_id:
            prefix = urllib.parse.quote(job_id + ".", safe="._-@")
            names = sorted(n for n in os.listdir(dfd) if n.startswith(prefix)
                           and n.endswith(SUFFIX))
            if len(names) == 1:
                view = _load(dfd, names[0])
    finally:
        os.close(dfd)
    if not isinstance(view, dict) or str(view.get("owner", "")).split("@", 1)[0] != user:
        return None
    return view


def list_views(base: Path, user: str) -> List[dict]:
    dfd = _open_user_dir(Path(base), user)
    if dfd is None:
        return []
    out = []
    try:
        for name in sorted(os.listdir(dfd)):
            if name.endswith(SUFFIX) and not name.startswith("."):
                view = _load(dfd, name)
                if isinstance(view, dict) and view.get("job_id") == _job_of(name):
                    out.append(view)
    finally:
        os.close(dfd)
    return out


