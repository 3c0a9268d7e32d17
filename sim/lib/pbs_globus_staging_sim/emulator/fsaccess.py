"""File operations as the local account a Globus identity maps to.

A Globus Connect Server v5 mapped collection reads and writes a user's files
as the local account the user's identity maps to (the storage gateway's
identity mapping; with one allowed domain the default is the identity's
username without ``@domain``), so permissions and symlinks are checked by the
kernel for that account and the files it writes belong to it.  The emulator
does the same: every file operation of a task or an ``ls`` goes through the
``Files`` of the owner's account.

The emulator is a threaded server and never changes its own uid.  When it runs
as root, each account gets one worker: a child forked once, which drops to the
account's uid, gid and groups and then serves requests over a socket pair
(JSON in and out: nothing the lower-privileged child sends is unpickled).  The
child never ``exec``s, so it stays non-dumpable: its account cannot ptrace it
or read the parent's memory it inherited, and it closes every inherited file
descriptor before dropping privileges.  When the emulator runs as an ordinary
user it can act only as that user; another account is refused with a clear
error (``AccountRefused``).
"""
from __future__ import annotations

import dataclasses
import errno
import gc
import hashlib
import json
import os
import pwd
import signal
import socket
import stat
import struct
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

CHUNK = 1 << 20
SELF = "self"            # every identity acts as the emulator's own account
USERNAME = "username"    # the identity's username without "@domain" (GCSv5's default)
MAPPINGS = (USERNAME, SELF)


class AccountRefused(PermissionError):
    """The identity has no local account, or the emulator may not act as it.

    A ``PermissionError`` (EACCES): a task shows PERMISSION_DENIED with this
    message in its event details, ``ls`` answers 403."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, message)


@dataclasses.dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: Tuple[int, ...]

    @classmethod
    def named(cls, name: str) -> "Account":
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise AccountRefused(f"no local account {name!r} on this host") from None
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid,
                   tuple(os.getgrouplist(pw.pw_name, pw.pw_gid)))

    @classmethod
    def current(cls) -> "Account":
        uid = os.geteuid()
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        return cls(name, uid, os.getegid(), tuple(os.getgroups()))


def account_name(username: str) -> str:
    """GCSv5's default mapping: ``alice@example.org`` -> ``alice``."""
    return username.split("@", 1)[0]


# -- the operations -------------------------------------------------------------
# Plain functions of plain values, run in-process or in an account's worker.

def _probe(path: str) -> Optional[str]:
    """What ``path`` is, following symlinks: "dir", "file", "other", or None
    when it does not exist.  EACCES and other errors are raised."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "other"


def _is_symlink(path: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return False
        raise


def _scandir(path: str) -> List[Tuple[str, bool, bool]]:
    """(name, is_dir, is_symlink) of each entry, as os.walk classifies them."""
    out = []
    with os.scandir(path) as it:
        for entry in it:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            out.append((entry.name, is_dir, entry.is_symlink()))
    return out


def _stat(path: str) -> Tuple[int, float, float, int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime, st.st_atime, st.st_mode, st.st_uid, st.st_gid


def _mkdir(path: str, parents: bool, exist_ok: bool) -> None:
    if parents:
        os.makedirs(path, exist_ok=exist_ok)
        return
    try:
        os.mkdir(path)
    except FileExistsError:
        if not (exist_ok and os.path.isdir(path)):
            raise


def _create(path: str) -> None:
    """Create or truncate a destination file (as the account: it owns it)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    os.close(fd)


def _copy_chunk(src: str, dst: str, offset: int, budget: int) -> Tuple[int, bool]:
    """Copy up to ``budget`` bytes from ``offset``; (bytes copied, at EOF)."""
    copied, eof = 0, False
    with open(src, "rb") as s, open(dst, "r+b") as d:
        s.seek(offset)
        d.seek(offset)
        while True:
            want = min(CHUNK, budget - copied)
            if want <= 0:
                # a zero-length remainder is still worth one EOF probe
                eof = s.read(1) == b""
                break
            data = s.read(want)
            if not data:
                eof = True
                break
            d.write(data)
            copied += len(data)
    return copied, eof


def _digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _utime(path: str, atime: float, mtime: float) -> None:
    os.utime(path, (atime, mtime))


def _list(path: str) -> List[Tuple[str, str, int, float, int, int, int]]:
    """``ls``: (name, type, size, mtime, mode, uid, gid) per entry; ENOTDIR
    when ``path`` is not a directory."""
    out = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        st = os.lstat(full)
        if stat.S_ISLNK(st.st_mode):
            kind = "invalid_symlink"
        elif stat.S_ISDIR(st.st_mode):
            kind = "dir"
        else:
            kind = "file"
        out.append((name, kind, st.st_size, st.st_mtime, st.st_mode, st.st_uid, st.st_gid))
    return out


def _readable(path: str) -> None:
    """Open for reading and close: EACCES etc. as the account would get them."""
    os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))


def _delete(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    else:
        os.unlink(path)


_OPS: Dict[str, Callable[..., Any]] = {
    "probe": _probe, "is_symlink": _is_symlink, "scandir": _scandir, "stat": _stat,
    "mkdir": _mkdir, "create": _create, "copy_chunk": _copy_chunk, "digest": _digest,
    "utime": _utime, "list": _list, "delete": _delete, "readable": _readable,
}


class Files:
    """The file operations the engine and the API use, done as one account."""

    def __init__(self, account: Account) -> None:
        self.account = account

    def _call(self, op: str, *args: Any) -> Any:
        return _OPS[op](*args)

    def probe(self, path: os.PathLike) -> Optional[str]:
        return self._call("probe", os.fspath(path))

    def exists(self, path: os.PathLike) -> bool:
        return self.probe(path) is not None

    def is_dir(self, path: os.PathLike) -> bool:
        return self.probe(path) == "dir"

    def is_file(self, path: os.PathLike) -> bool:
        return self.probe(path) == "file"

    def is_symlink(self, path: os.PathLike) -> bool:
        return self._call("is_symlink", os.fspath(path))

    def stat(self, path: os.PathLike) -> Tuple[int, float, float, int, int, int]:
        """(size, mtime, atime, mode, uid, gid)"""
        return tuple(self._call("stat", os.fspath(path)))  # type: ignore[return-value]

    def size(self, path: os.PathLike) -> int:
        return self.stat(path)[0]

    def mkdir(self, path: os.PathLike, *, parents: bool = False,
              exist_ok: bool = False) -> None:
        self._call("mkdir", os.fspath(path), parents, exist_ok)

    def create(self, path: os.PathLike) -> None:
        self._call("create", os.fspath(path))

    def copy_chunk(self, src: os.PathLike, dst: os.PathLike, offset: int,
                   budget: int) -> Tuple[int, bool]:
        copied, eof = self._call("copy_chunk", os.fspath(src), os.fspath(dst), offset, budget)
        return int(copied), bool(eof)

    def digest(self, path: os.PathLike) -> str:
        return self._call("digest", os.fspath(path))

    def utime(self, path: os.PathLike, atime: float, mtime: float) -> None:
        self._call("utime", os.fspath(path), atime, mtime)

    def listing(self, path: os.PathLike) -> List[Tuple[str, str, int, float, int, int, int]]:
        return [tuple(e) for e in self._call("list", os.fspath(path))]  # type: ignore[misc]

    def check_readable(self, path: os.PathLike) -> None:
        """Raise the OSError opening ``path`` for reading would give."""
        self._call("readable", os.fspath(path))

    def delete(self, path: os.PathLike) -> None:
        self._call("delete", os.fspath(path))

    def walk(self, top: os.PathLike, followlinks: bool = False,
             onerror: Optional[Callable[[OSError], None]] = None) -> Any:
        """``os.walk(top, followlinks=False, onerror=...)`` as this account:
        same tuples, errors (with ``filename``) to ``onerror``, and pruning
        ``dirnames`` in place is honoured.  Symlinked directories are never
        entered (``followlinks`` must be False: Globus's recursive_symlinks
        "ignore")."""
        if followlinks:
            raise ValueError("the emulator never follows symlinks in a recursive item")
        top = os.fspath(top)
        try:
            entries = self._call("scandir", top)
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            return
        dirs = [name for name, is_dir, _link in entries if is_dir]
        nondirs = [name for name, is_dir, _link in entries if not is_dir]
        links = {name for name, _d, link in entries if link}
        yield top, dirs, nondirs
        for name in dirs:
            if name in links:
                continue
            yield from self.walk(os.path.join(top, name), onerror=onerror)

    def close(self) -> None:
        pass


class _Worker(Files):
    """``Files`` served by a child process running as the account."""

    def __init__(self, account: Account) -> None:
        super().__init__(account)
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None
        self._pid = 0

    def _spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child; exercised by the tests
            code = 1
            try:
                parent.close()
                _serve_as(self.account, child)
                code = 0
            finally:
                os._exit(code)
        child.close()
        self._sock, self._pid = parent, pid

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            for attempt in (1, 2):
                if self._sock is None:
                    self._spawn()
                try:
                    _send(self._sock, [op, list(args)])
                    reply = _recv(self._sock)
                    break
                except (OSError, EOFError):
                    # the worker died (killed, or it could not drop to the
                    # account): start a new one once, then report an I/O error
                    self._reap()
                    if attempt == 2:
                        raise OSError(errno.EIO, f"file worker for local account "
                                                 f"{self.account.name!r} failed") from None
        if reply[0] == "ok":
            return reply[1]
        _, num, message, filename = reply
        raise OSError(num, message, filename) if filename is not None else OSError(num, message)

    def _reap(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._pid:
            try:
                os.waitpid(self._pid, 0)
            except ChildProcessError:
                pass
            self._pid = 0

    def close(self) -> None:
        with self._lock:
            self._reap()


def _serve_as(account: Account, sock: socket.socket) -> None:  # pragma: no cover - child
    """The worker's whole life: shed the parent's descriptors and privileges,
    then answer requests until the parent closes its end."""
    # Objects inherited from the parent are never collected here: a finalizer
    # closing a descriptor number of the parent's could close one of ours.
    gc.freeze()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, max(os.sysconf("SC_OPEN_MAX"), 1 << 16))
    os.setgroups(list(account.groups))
    os.setgid(account.gid)
    os.setuid(account.uid)
    if os.getuid() != account.uid or os.geteuid() != account.uid:
        return
    os.chdir("/")
    while True:
        try:
            op, args = _recv(sock)
        except (EOFError, OSError):
            return
        try:
            reply = ["ok", _OPS[op](*args)]
        except OSError as exc:
            reply = ["err", exc.errno or errno.EIO, exc.strerror or str(exc), exc.filename]
        except Exception as exc:  # noqa: BLE001 - a bug: report it, keep serving
            reply = ["err", errno.EIO, f"emulator file worker: {type(exc).__name__}", None]
        _send(sock, reply)


def _send(sock: socket.socket, doc: Any) -> None:
    data = json.dumps(doc).encode("utf-8")
    sock.sendall(struct.pack("!I", len(data)) + data)


def _recv(sock: socket.socket) -> Any:
    head = _exactly(sock, 4)
    return json.loads(_exactly(sock, struct.unpack("!I", head)[0]).decode("utf-8"))


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError
        buf += part
    return buf


class AccountMap:
    """Which local account each identity's file operations run as.

    ``mapping``: ``"username"`` (an identity's username without ``@domain``,
    GCSv5's default identity mapping) or ``"self"`` (every identity as the
    emulator's own account: for tests whose identities are not local
    accounts).  ``assign()`` names one identity's account explicitly."""

    def __init__(self, mapping: str = SELF) -> None:
        self.set_mapping(mapping)
        self._explicit: Dict[str, str] = {}
        self._workers: Dict[int, Files] = {}
        self._lock = threading.Lock()
        self._me = Account.current()

    def set_mapping(self, mapping: str) -> None:
        if mapping not in MAPPINGS:
            raise ValueError(f"account mapping {mapping!r}: expected one of "
                             + ", ".join(MAPPINGS))
        self.mapping = mapping

    def assign(self, identity_username: str, account: str) -> None:
        """Map one identity (by its username) to a named local account."""
        acct = Account.named(account)
        self._check_reachable(acct)
        self._explicit[identity_username] = account

    def _check_reachable(self, acct: Account) -> None:
        if self._me.uid != 0 and acct.uid != self._me.uid:
            raise AccountRefused(
                f"the emulator runs as {self._me.name!r} (uid {self._me.uid}), not root, "
                f"so it cannot act as local account {acct.name!r}; run it as root, or "
                f"map identities to {self._me.name!r}")

    def account_for(self, identity_username: str) -> Account:
        explicit = self._explicit.get(identity_username)
        if explicit is not None:
            return Account.named(explicit)
        if self.mapping == SELF:
            return self._me
        name = account_name(identity_username)
        try:
            acct = Account.named(name)
        except AccountRefused:
            raise AccountRefused(f"identity {identity_username!r} maps to no local account "
                                 f"(no user {name!r} on this host)") from None
        self._check_reachable(acct)
        return acct

    def files(self, identity_username: str) -> Files:
        """The ``Files`` of the identity's account; AccountRefused if none."""
        acct = self.account_for(identity_username)
        with self._lock:
            files = self._workers.get(acct.uid)
            if files is None or files.account != acct:
                if files is not None:
                    files.close()
                if acct.uid == self._me.uid:
                    # Already this account: the kernel checks it in-process.
                    files = Files(acct)
                else:
                    files = _Worker(acct)
                self._workers[acct.uid] = files
            return files

    def close(self) -> None:
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for w in workers:
            w.close()


class RefusedFiles(Files):
    """Stands for an identity without a usable account: every operation
    raises the refusal, so each caller reports it where it reports EACCES."""

    def __init__(self, refusal: AccountRefused) -> None:
        super().__init__(Account("?", -1, -1, ()))
        self.refusal = refusal

    def _call(self, op: str, *args: Any) -> Any:
        raise AccountRefused(self.refusal.strerror)


__all__ = ["Account", "AccountMap", "AccountRefused", "Files", "RefusedFiles", "SELF",
           "USERNAME", "account_name"]
