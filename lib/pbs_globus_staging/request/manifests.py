"""Manifests: files of items, read as root as far as the job owner could (stdlib
only, Python 3.6+)."""

from .._py36 import dataclasses
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

from .. import userfiles
from ..errors import RequestError
from .grammar import _check_duplicate, _parse_item
from .model import (_PATH_QUOTE_MAX, _RESOURCE, MANIFEST_MAX_BYTES, MANIFEST_MAX_ITEMS,
                    Direction, Item, StagingRequest, _Fail, _item_form, _q)

def read_manifest(path: str, *, owner_uid: int, max_bytes: int = MANIFEST_MAX_BYTES,
                  owner_gids: Optional[Sequence[int]] = None) -> bytes:
    """Read a user's manifest as root, but only as far as the job owner could.

    ``userfiles.read_user_file`` walks the path with O_NOFOLLOW from ``/``
    (no symlink anywhere), repeating the kernel's permission check for the
    owner (``owner_uid``, in ``owner_gids`` -- by default their groups from
    the password and group databases) before each lookup, so a file in a
    directory the owner cannot search is refused with the same words whether
    it exists or not: the hook, running as root, is no oracle into other
    users' private directories.  The file must be a regular file owned by
    ``owner_uid``, readable by them and writable only by them.  Raises
    ``_Fail`` with a message for the user.
    """
    comps = [c for c in path.split("/") if c]
    if not path.startswith("/") or not comps or ".." in comps:
        raise _Fail("is not an absolute path to a file")
    try:
        return userfiles.read_user_file(path, owner=owner_uid, max_bytes=max_bytes,
                                        forbid_mode=0o022, access_uid=owner_uid,
                                        access_gids=owner_gids)
    except userfiles.UserFileError as e:
        raise _Fail(_manifest_problem(e, path, max_bytes)) from None


def _manifest_problem(e: "userfiles.UserFileError", path: str, max_bytes: int) -> str:
    """What read_user_file refused, in the words qsub prints after the manifest's name."""
    uf = userfiles
    where = _q(e.where, _PATH_QUOTE_MAX)
    if e.reason == uf.SYMLINK:
        if e.directory:
            return f"cannot be read: {where} is a symbolic link; name the real path"
        return "is a symbolic link; name the file itself"
    if e.reason == uf.NOT_DIR:
        return f"cannot be read: {where} is not a directory"
    if e.reason == uf.DENIED:
        return f"cannot be read: {where}: Permission denied"
    if e.reason in (uf.NOT_REGULAR, uf.CHANGED):
        return ("is not a regular file" if e.reason == uf.NOT_REGULAR
                else "changed while it was being read; try again")
    if e.reason == uf.OWNER:
        return "is not owned by the job owner; a manifest must be your own file"
    if e.reason == uf.MODE:
        return f"is writable by others; run: chmod go-w {path}"
    if e.reason == uf.TOO_BIG:
        size = f"{e.st.st_size} bytes" if e.st is not None else f"more than {max_bytes} bytes"
        return f"is {size}; a manifest may be at most {max_bytes} bytes"
    if e.reason == uf.BAD_PATH:
        return "is not an absolute path to a file"
    if e.reason == uf.MISSING:
        return f"cannot be read: {where}: {e.detail}"
    return f"cannot be read ({e.detail})"


def expand_manifests(req: StagingRequest, *, owner_uid: int,
                     max_bytes: int = MANIFEST_MAX_BYTES,
                     read_file: Optional[Callable[[str], Union[bytes, str]]] = None,
                     max_items: int = MANIFEST_MAX_ITEMS,
                     resource: Optional[str] = None) -> StagingRequest:
    """Return ``req`` with the items of its manifests appended (manifests are
    kept, for display).  ``read_file(path)`` replaces the secure reader (tests,
    the PBS double).  Errors are ``RequestError`` naming manifest and line."""
    if not req.manifests:
        return req
    d = Direction(req.direction)
    res = resource or _RESOURCE[d]
    items = list(req.items)
    seen_items: Dict[Item, str] = {}
    seen_dest: Dict[Tuple[str, str], str] = {}

    def fail(msg: str) -> RequestError:
        return RequestError(msg, resource=res)

    for it in items:
        _check_duplicate(it, it.origin or "an item", d, seen_items, seen_dest, fail)
    for path in req.manifests:
        mname = f"manifest {_q(path, _PATH_QUOTE_MAX)}"
        try:
            if read_file is None:
                data: Union[bytes, str] = read_manifest(path, owner_uid=owner_uid,
                                                        max_bytes=max_bytes)
            else:
                data = read_file(path)
        except _Fail as e:
            raise fail(f"{mname} {e}") from None
        except OSError as e:
            raise fail(f"{mname} cannot be read ({e.strerror})") from None
        if isinstance(data, bytes):
            if len(data) > max_bytes:
                raise fail(f"{mname} is {len(data)} bytes; a manifest may be at most "
                           f"{max_bytes} bytes")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as e:
                line = data[:e.start].count(b"\n") + 1
                raise fail(f"{mname} line {line} is not UTF-8 text") from None
        else:
            text = data
            if len(text) > max_bytes and len(text.encode("utf-8", "surrogatepass")) > max_bytes:
                raise fail(f"{mname} is more than {max_bytes} bytes; a manifest may be at "
                           f"most {max_bytes} bytes")
        for lineno, line in enumerate(text.split("\n"), 1):
            s = line.strip(" \t\r")
            if not s or s.startswith("#"):
                continue
            where = f"{mname} line {lineno}: item"
            if not s.startswith("/") and "=" in s.split("@", 1)[0]:
                raise fail(f"{mname} line {lineno} {_q(s)}: a manifest holds items "
                           f"only, one per line; {_item_form(d)}")
            if s[0] != "/" and "@" in s:
                raise fail(f"{where} {_q(s)}: the local path must be absolute; "
                           f"{_item_form(d)}")
            if len(items) >= max_items:
                raise fail(f"more than {max_items} items with manifests; split the job's "
                           "data into fewer, larger directories")
            item = _parse_item(s, where, d, res)
            item = dataclasses.replace(item, origin=f"{mname} line {lineno}")
            _check_duplicate(item, f"{mname} line {lineno}", d, seen_items, seen_dest, fail)
            items.append(item)
    return dataclasses.replace(req, items=tuple(items))
