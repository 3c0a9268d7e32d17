"""Client mode: where a local path really leads, checked before submission.

In client-credentials mode Globus acts as the site's one service account for
every user, so it follows any symbolic link a user plants: ``~/x ->
/home/alice`` would let bob read or write alice's files while the string check
in ``policy`` sees only ``/home/bob/x``.  Right before the agent submits, each
local path is resolved here the way the kernel would follow it, and must still
lie under the job owner's roots.

The walk is race-free in the way the token reader in ``credentials`` is: every
component is looked at relative to an open descriptor of its parent with
``O_NOFOLLOW``, so a symlink swapped in during the walk is seen (and resolved),
never followed blindly.  Links are resolved by hand (``readlink`` relative to
the descriptor), at most ``MAX_LINKS`` of them.  A component that does not
exist yet ends the walk: the rest is literal (Globus will create it).

A window remains between this check and Globus touching the file; a user
could replace a directory with a link in between.  Globus in user mode (the
job owner's own identity and account) has no such window; client mode trades
it for needing no per-user login.

Stdlib only (the agent uses it; hooks need not).
"""
from __future__ import annotations

import errno
import os
import stat
from typing import List, Optional, Sequence, Tuple

from .errors import RequestError
from .request import _PATH_QUOTE_MAX, Direction, StagingRequest, _q as _quote

MAX_LINKS = 40                  # as the kernel's own limit on one lookup
MAX_SCAN_ENTRIES = 100000       # entries of an existing stage-in destination searched for links
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_SHOW_MAX = 4


def _q(path: str) -> str:
    return _quote(path, _PATH_QUOTE_MAX)

__all__ = ["resolve", "check_request", "MAX_LINKS", "MAX_SCAN_ENTRIES"]


class _Loop(Exception):
    pass


def resolve(path: str) -> Tuple[str, bool]:
    """(the path ``path`` leads to with every existing symlink resolved,
    whether any link was followed).  The result is absolute and normalised;
    ``_Loop`` if links nest deeper than MAX_LINKS."""
    todo: List[str] = [p for p in reversed(path.split("/")) if p]
    fds = [os.open("/", _DIR & ~os.O_NOFOLLOW)]
    names: List[str] = []
    links = 0
    missing = False
    try:
        while todo:
            name = todo.pop()
            if name == ".":
                continue
            if name == "..":
                if names:
                    names.pop()
                    if len(fds) > len(names) + 1:   # it was an opened directory
                        os.close(fds.pop())
                # back in existing directories: a later mkdir would make the
                # missing part real, so go on resolving from here
                missing = missing and len(fds) <= len(names)
                continue
            if missing:
                names.append(name)
                continue
            try:
                st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    missing = True
                    names.append(name)
                    continue
                raise
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise _Loop(path)
                target = os.readlink(name, dir_fd=fds[-1])
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                    names = []
                todo.extend(p for p in reversed(target.split("/")) if p)
                continue
            if stat.S_ISDIR(st.st_mode):
                try:
                    fds.append(os.open(name, _DIR, dir_fd=fds[-1]))
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        todo.append(name)      # swapped since the stat: look again
                        links += 1
                        if links > MAX_LINKS:
                            raise _Loop(path) from None
                        continue
                    raise
                names.append(name)
                continue
            # a file (or other non-directory): anything after it cannot exist
            names.append(name)
            missing = True
    finally:
        for fd in fds:
            os.close(fd)
    return "/" + "/".join(names), links > 0


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _listing(values: Sequence[str]) -> str:
    shown = ", ".join(values[:_SHOW_MAX])
    if len(values) > _SHOW_MAX:
        shown += f" (and {len(values) - _SHOW_MAX} more)"
    return shown


def _links_below(top: str):
    """Each symlink in the existing tree ``top`` (a resolved directory), as
    ``(path, None)``; ``(None, count)`` once more than MAX_SCAN_ENTRIES
    entries were looked at."""
    seen = 0
    for dirpath, dirnames, filenames, dfd in os.fwalk(top, follow_symlinks=False):
        for name in dirnames + filenames:
            seen += 1
            if seen > MAX_SCAN_ENTRIES:
                yield None, seen
                return
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                yield os.path.join(dirpath, name), None


def check_request(req: StagingRequest, *, user: str, roots: Sequence[str],
                  resource: str) -> None:
    """Refuse (``RequestError``, one line) a request whose local path leads
    outside ``roots`` once symlinks are followed, or whose recursive stage-in
    would write through a symlink in an existing destination that does."""
    d = Direction(req.direction)

    def fail(msg: str) -> RequestError:
        return RequestError(msg, resource=resource)

    real_roots = []
    for r in roots:
        try:
            real_roots.append(resolve(r)[0])
        except (OSError, _Loop):
            continue
    rule = f"allowed for {user}: {_listing(list(roots))}"
    for item in req.items:
        where = item.origin or "an item"
        try:
            real, linked = resolve(item.local)
        except _Loop:
            raise fail(f"{where}: local path {_q(item.local)} has more than {MAX_LINKS} "
                       "nested symbolic links; name the real path") from None
        except OSError as exc:
            raise fail(f"{where}: local path {_q(item.local)} cannot be checked "
                       f"({exc.strerror})") from None
        if not _under(real, real_roots):
            how = "through a symbolic link " if linked else ""
            raise fail(f"{where}: local path {_q(item.local)} leads {how}to {_q(real)}, "
                       f"which is outside the areas you may use; {rule}")
        if not (d is Direction.IN and item.recursive):
            continue
        try:
            is_dir = stat.S_ISDIR(os.stat(real, follow_symlinks=False).st_mode)
        except OSError:
            continue
        if not is_dir:
            continue
        for link, seen in _links_below(real):
            if link is None:
                raise fail(f"{where}: local directory {_q(item.local)} already holds more "
                           f"than {MAX_SCAN_ENTRIES} entries, too many to check for symbolic "
                           "links before a stage-in into it; stage into a new directory")
            try:
                target = resolve(link)[0]
            except (OSError, _Loop):
                target = None
            if target is None or not _under(target, real_roots):
                raise fail(f"{where}: local directory {_q(item.local)} holds a symbolic "
                           f"link {_q(link)} leading outside the areas you may use, which "
                           f"the stage-in would write through; remove it; {rule}")
