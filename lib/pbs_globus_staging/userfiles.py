"""One race-free reader of files that a user controls, for code running as root.

The queuejob hook reads manifests, the agent reads each user's token file, the
client secret and the SMTP credentials: all as root, all from paths someone
else may be able to change while we look.  :func:`read_user_file` is the only
routine that does it:

* the path is walked from ``/`` one component at a time, each opened with
  ``O_NOFOLLOW`` relative to its parent's descriptor, so no symlink anywhere is
  followed and nothing can be swapped in between a check and the read;
* the leaf is ``lstat``-ed relative to its directory and must be a regular
  file (or a symlink, which the open refuses) before it is opened (a fifo or a
  device is never opened), then opened
  ``O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC`` and checked again with
  ``fstat`` on the open descriptor (same inode, regular, owner, mode, size);
* at most ``max_bytes`` are read, even from a file that grows meanwhile.

What differs per caller are keyword-only options: who must own the file,
which mode bits it must not have, the size cap, a root-controlled ``base``
whose symlinks may be resolved (root's own view), who may own the directories
below that base and whether they may be writable by others, and whether the
kernel's permission check is repeated for the unprivileged user on whose
behalf root reads (so root is no oracle into private directories).

Every refusal is one :class:`UserFileError`: ``reason`` says what is wrong
(one of the constants below), ``where`` the path at fault, and its message is
one line naming the problem and the expected form.  It never holds anything
read from the file: that may be a secret.

Standard library only, Python 3.6+: the queuejob hook imports it via ``request``.
"""

import errno
import os
import stat
from typing import Collection, Optional, Sequence, Tuple

__all__ = [
    "UserFileError", "read_user_file", "user_gids",
    "MISSING", "SYMLINK", "NOT_DIR", "NOT_REGULAR", "DENIED", "OWNER", "MODE",
    "DIR_OWNER", "DIR_WRITABLE", "TOO_BIG", "CHANGED", "BAD_PATH", "OS_ERROR",
]

# What is wrong (UserFileError.reason).
MISSING = "missing"            # a component or the file does not exist
SYMLINK = "symlink"            # a component or the file is a symbolic link
NOT_DIR = "not-dir"            # a directory component is something else
NOT_REGULAR = "not-regular"    # the file is a directory, fifo, device, socket
DENIED = "denied"              # the kernel, or the user's permission bits, say no
OWNER = "owner"                # the file has the wrong owner
MODE = "mode"                  # the file has a forbidden mode bit
DIR_OWNER = "dir-owner"        # a directory below the base has the wrong owner
DIR_WRITABLE = "dir-writable"  # a directory below the base is writable by others
TOO_BIG = "too-big"            # more than max_bytes
CHANGED = "changed"            # the file was replaced between lstat and open
BAD_PATH = "bad-path"          # not an absolute path, or it has a '..' component
OS_ERROR = "os-error"          # anything else the kernel said (strerror in detail)

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_FILE_FLAGS = (os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
               | _CLOEXEC)
_SEARCH, _READ = 1, 4


class UserFileError(Exception):
    """A user-controlled file that must not be used, and why (one line).

    ``reason``: one of the module's constants; ``where``: the path at fault
    (a directory on the way, or the file); ``name``: that component's name;
    ``directory``: whether ``where`` is a directory; ``trusted``: whether it
    is a component of the caller's root-controlled ``base``; ``st``: its
    ``os.stat_result`` when known (owner, mode, size); ``detail``: the
    kernel's words for OS_ERROR/MISSING/DENIED, or the size limit for TOO_BIG.
    """

    def __init__(self, reason: str, where: str, message: str, *, name: str = "",
                 directory: bool = False, trusted: bool = False,
                 st: Optional[os.stat_result] = None, detail: object = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.where = where
        self.name = name
        self.directory = directory
        self.trusted = trusted
        self.st = st
        self.detail = detail


def user_gids(uid: int) -> frozenset:
    """The groups of ``uid`` from the password and group databases (empty if unknown)."""
    try:
        import pwd
        pw = pwd.getpwuid(uid)
        return frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
    except (KeyError, ImportError, OSError):
        return frozenset()


def _may(st: os.stat_result, uid: int, gids: Collection[int], want: int) -> bool:
    """The kernel's permission-bit check (without ACLs) for ``uid``: owner bits,
    else group bits, else other bits."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid in gids:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & want == want


def _split(path: str, base: Optional[str]) -> Tuple[list, int]:
    """(components, how many of them belong to the trusted base)."""
    path = os.fspath(path)
    if not path.startswith("/"):
        raise UserFileError(BAD_PATH, path, "{}: is not an absolute path; expected "
                            "/absolute/path/to/file".format(path))
    comps = [c for c in path.split("/") if c not in ("", ".")]
    if not comps or ".." in comps:
        raise UserFileError(BAD_PATH, path, "{}: expected an absolute path to a file, "
                            "without '..'".format(path))
    if base is None:
        return comps, 0
    real = os.path.realpath(os.fspath(base))      # root's view of a root-owned prefix
    bcomps = [c for c in real.split("/") if c]
    given = [c for c in os.path.normpath(os.fspath(base)).split("/") if c]
    if comps[:len(given)] != given or len(comps) <= len(given):
        raise UserFileError(BAD_PATH, path, "{}: expected a file below {}".format(path, base))
    return bcomps + comps[len(given):], len(bcomps)


def read_user_file(path: str, *, owner: int, max_bytes: int,
                   forbid_mode: int = 0o022,
                   base: Optional[str] = None,
                   dir_owners: Optional[Collection[int]] = None,
                   parent_owners: Optional[Collection[int]] = None,
                   private_dirs: bool = False,
                   access_uid: Optional[int] = None,
                   access_gids: Optional[Sequence[int]] = None) -> bytes:
    """The bytes of the regular file ``path``, read race-free; else UserFileError.

    ``owner``: the uid that must own the file.  ``forbid_mode``: mode bits the
    file must not have (0o022: writable by others; 0o077: any access by
    others).  ``max_bytes``: the size cap.  ``base``: a prefix of ``path``
    that only root controls; its symlinks are resolved first (``realpath``),
    then it is walked with ``O_NOFOLLOW`` like the rest (so a swap made since
    is still refused).  Without it every symlink on the way is refused.
    Directories below the base: ``dir_owners`` (who may own them),
    ``parent_owners`` (who may own the file's own directory, default
    ``dir_owners``), ``private_dirs`` (not writable by group or others, unless
    root-owned and sticky like /tmp).  ``access_uid``/``access_gids`` (default:
    the user's groups): every directory on the way must be searchable and the
    file readable by that user, checked *before* anything is looked up, so a
    file in a directory the user cannot search is refused in the same words
    whether it exists or not.
    """
    comps, ntrusted = _split(path, base)
    gids = None
    if access_uid is not None:
        gids = user_gids(access_uid) if access_gids is None else frozenset(access_gids)
    try:
        dirfd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except OSError as e:
        raise UserFileError(OS_ERROR, "/", "/: cannot be opened ({})".format(e.strerror),
                            directory=True, detail=e.strerror) from None
    fd = -1
    shown_file = os.fspath(path)
    try:
        walked = "/"
        last_dir = len(comps) - 2
        for index, comp in enumerate(comps[:-1]):
            _check_access(dirfd, access_uid, gids, _SEARCH, walked)
            walked = walked.rstrip("/") + "/" + comp
            trusted = index < ntrusted
            try:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=dirfd)
            except OSError as e:
                raise _why(comp, dirfd, walked, e, directory=True, trusted=trusted) from None
            os.close(dirfd)
            dirfd = nfd
            if not trusted and (dir_owners is not None or private_dirs):
                st = os.fstat(dirfd)
                owners = dir_owners
                if index == last_dir and parent_owners is not None:
                    owners = parent_owners
                if owners is not None and st.st_uid not in owners:
                    raise UserFileError(
                        DIR_OWNER, walked, "{}: directory owned by uid {}; expected one owned "
                        "by uid {}".format(walked, st.st_uid, " or ".join(map(str, owners))),
                        name=comp, directory=True, st=st)
                if private_dirs and st.st_mode & 0o022 and not (
                        st.st_uid == 0 and st.st_mode & stat.S_ISVTX):
                    raise UserFileError(
                        DIR_WRITABLE, walked, "{}: directory writable by group or others; "
                        "expected chmod go-w".format(walked), name=comp, directory=True, st=st)
        _check_access(dirfd, access_uid, gids, _SEARCH, walked)
        name = comps[-1]
        try:
            st0 = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except OSError as e:
            raise _why(name, dirfd, shown_file, e, directory=False) from None
        # A symlink is refused by the O_NOFOLLOW open below (ELOOP, its target is
        # never touched); anything else that is not a regular file is never opened.
        if not stat.S_ISREG(st0.st_mode) and not stat.S_ISLNK(st0.st_mode):
            raise UserFileError(NOT_REGULAR, shown_file, "{}: is not a regular file; expected "
                                "a regular file".format(shown_file), name=name, st=st0)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dirfd)
        except OSError as e:
            raise _why(name, dirfd, shown_file, e, directory=False) from None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (st0.st_dev, st0.st_ino) or not stat.S_ISREG(st.st_mode):
            raise UserFileError(CHANGED, shown_file, "{}: changed while it was being read; "
                                "try again".format(shown_file), name=name, st=st)
        if st.st_uid != owner:
            raise UserFileError(OWNER, shown_file, "{}: is owned by uid {}; expected uid {}"
                                .format(shown_file, st.st_uid, owner), name=name, st=st)
        if access_uid is not None and not _may(st, access_uid, gids or (), _READ):
            raise _denied(shown_file, name, st)
        if st.st_mode & forbid_mode:
            raise UserFileError(
                MODE, shown_file, "{}: has mode {:04o}; expected none of {:04o} "
                "(chmod {} {})".format(shown_file, stat.S_IMODE(st.st_mode), forbid_mode,
                                       _chmod(forbid_mode), shown_file),
                name=name, st=st)
        if st.st_size > max_bytes:
            raise _too_big(shown_file, name, st, max_bytes)
        chunks = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 16, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise _too_big(shown_file, name, None, max_bytes)
        return b"".join(chunks)
    except OSError as e:
        raise UserFileError(OS_ERROR, shown_file, "{}: cannot be read ({})".format(
            shown_file, e.strerror), detail=e.strerror) from None
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(dirfd)


def _chmod(forbid: int) -> str:
    """``go-w`` for 0o022, ``go-rwx`` for 0o077: what takes the forbidden bits away."""
    who = ("u" if forbid & 0o700 else "") + ("g" if forbid & 0o070 else "") + \
        ("o" if forbid & 0o007 else "")
    bits = (forbid >> 6) | (forbid >> 3) | forbid
    what = ("r" if bits & 4 else "") + ("w" if bits & 2 else "") + ("x" if bits & 1 else "")
    return "{}-{}".format(who, what)


def _too_big(where: str, name: str, st: Optional[os.stat_result], limit: int) -> UserFileError:
    size = "{} bytes".format(st.st_size) if st is not None else "more than {} bytes".format(limit)
    return UserFileError(TOO_BIG, where, "{}: is {}; expected at most {} bytes".format(
        where, size, limit), name=name, st=st, detail=limit)


def _denied(where: str, name: str, st: Optional[os.stat_result],
            directory: bool = False) -> UserFileError:
    return UserFileError(DENIED, where, "{}: Permission denied; expected a path the user "
                         "may read".format(where), name=name, directory=directory, st=st,
                         detail=os.strerror(errno.EACCES))


def _check_access(dirfd: int, uid: Optional[int], gids: Optional[Collection[int]],
                  want: int, where: str) -> None:
    if uid is None:
        return
    st = os.fstat(dirfd)
    if not _may(st, uid, gids or (), want):
        raise _denied(where, os.path.basename(where), st, directory=True)


def _why(name: str, dirfd: int, where: str, err: OSError, *, directory: bool,
         trusted: bool = False) -> UserFileError:
    """An open or lstat failure, named by what is really there."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        st = None
    kw = dict(name=name, directory=directory, trusted=trusted, st=st, detail=err.strerror)
    if st is not None and stat.S_ISLNK(st.st_mode):
        return UserFileError(SYMLINK, where, "{}: is a symbolic link; expected {}".format(
            where, "the real path" if directory else "the file itself"), **kw)
    if st is not None and directory and not stat.S_ISDIR(st.st_mode):
        return UserFileError(NOT_DIR, where, "{}: is not a directory; expected a directory"
                             .format(where), **kw)
    if err.errno == errno.ENOENT:
        return UserFileError(MISSING, where, "{}: does not exist; expected an existing "
                             "{}".format(where, "directory" if directory else "file"), **kw)
    if err.errno == errno.EACCES:
        return UserFileError(DENIED, where, "{}: Permission denied; expected a path root "
                             "may read".format(where), **kw)
    return UserFileError(OS_ERROR, where, "{}: cannot be opened ({})".format(
        where, err.strerror), **kw)
