"""The staging request grammar: values of ``stagein_globus`` / ``stageout_globus``.

Stdlib only: the queuejob hook imports this inside ``pbs_server`` on every
qsub, so parsing must be fast, must never raise anything but
``errors.RequestError`` for a bad value, and must never touch the network.

The grammar (docs/internals.md, "The request grammar"; user guide in
docs/grammar.md) needs neither commas nor spaces, so a value works unquoted in
``qsub -l stagein_globus=VALUE`` and ``#PBS -l stagein_globus=VALUE``::

    VALUE   := ELEMENT ( '+' ELEMENT )*
    ELEMENT := ITEM | 'task=' UUID | 'manifest=' ABSPATH | OPTION
    ITEM    := LOCAL '@' COLLECTION ':' REMOTE
"""

from ._py36 import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import re
import unicodedata
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from . import userfiles
from .errors import RequestError

__all__ = [
    "Direction", "Deadline", "Item", "Options", "StagingRequest",
    "parse", "render", "expand_manifests", "read_manifest", "request_key",
    "resource_name", "is_uuid", "MAX_VALUE_LENGTH", "MAX_ITEMS",
    "MANIFEST_MAX_BYTES", "MANIFEST_MAX_ITEMS",
]

MAX_VALUE_LENGTH = 4096         # characters in one resource value
MAX_ITEMS = 1000                # items written directly in one value
MANIFEST_MAX_BYTES = 1 << 20    # one manifest file
MANIFEST_MAX_ITEMS = 10000      # items after expanding all manifests
MAX_DEADLINE_SECONDS = 400 * 86400   # a relative deadline beyond this is a typo
_QUOTE_MAX = 60                 # characters of user input quoted in a message
_PATH_QUOTE_MAX = 120           # ... when it is a whole path the user must recognise


class Direction(str, enum.Enum):
    IN = "in"
    OUT = "out"


_RESOURCE = {Direction.IN: "stagein_globus", Direction.OUT: "stageout_globus"}


def resource_name(direction: Union[str, Direction]) -> str:
    """The PBS resource that carries requests of this direction."""
    return _RESOURCE[Direction(direction)]


@dataclasses.dataclass(frozen=True)
class Deadline:
    """A Globus task deadline as the user wrote it.

    Exactly one of ``at`` (aware UTC datetime) and ``seconds`` (relative to
    submission) is set.  ``form`` is the canonical text, so that render()
    gives back what the user meant (``2d`` stays ``2d``, not ``48h``).
    """

    at: Optional[_dt.datetime] = None
    seconds: Optional[int] = None
    form: str = ""

    def resolve(self, *, now: _dt.datetime) -> _dt.datetime:
        """The absolute deadline for a transfer submitted at ``now`` (aware)."""
        if self.at is not None:
            return self.at
        return now + _dt.timedelta(seconds=self.seconds or 0)


@dataclasses.dataclass(frozen=True)
class Item:
    """One transfer item.  ``local`` is on the site's collection, ``remote`` on
    ``collection`` (a lowercase UUID or an alias the site policy resolves).
    Paths are decoded (no percent-escapes) and normalised; directories end
    with ``/``; a home-relative remote path is ``/~/...``."""

    local: str
    collection: str
    remote: str
    recursive: bool
    # Where the item came from ("item 2", "manifest '/x' line 5"), for
    # messages written later by policy; not part of the item's identity.
    origin: str = dataclasses.field(default="", compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Options:
    sync_level: Optional[str] = None          # exists | size | mtime | checksum
    verify_checksum: Optional[bool] = None
    deadline: Optional[Deadline] = None
    onfail: Optional[str] = None              # stage-in: hold | delete
    cleanup: Optional[str] = None             # stage-in: absolute path of a job script
    when: Optional[str] = None                # stage-out: ok | always | notok


@dataclasses.dataclass(frozen=True)
class StagingRequest:
    direction: Direction
    items: Tuple[Item, ...] = ()
    tasks: Tuple[str, ...] = ()               # grafted Globus task ids, lowercase
    manifests: Tuple[str, ...] = ()
    options: Options = Options()


# ---------------------------------------------------------------------------
# Messages

_EXAMPLE = {
    Direction.IN: "/lus/alice/in/@theta-dtn:/~/in/",
    Direction.OUT: "/lus/alice/out/@theta-dtn:/~/results/",
}
_SYNC = ("exists", "size", "mtime", "checksum")
_ONFAIL = ("hold", "delete")
_WHEN = ("ok", "always", "notok")
_OPTION_KEYS = {
    Direction.IN: ("sync", "checksum", "deadline", "onfail", "cleanup"),
    Direction.OUT: ("sync", "checksum", "deadline", "when"),
}
_ELEMENT_KEYS = {
    Direction.IN: ("task", "manifest") + _OPTION_KEYS[Direction.IN],
    Direction.OUT: ("manifest",) + _OPTION_KEYS[Direction.OUT],
}
_ALL_KEYS = frozenset(("task", "manifest", "sync", "checksum", "deadline",
                       "onfail", "cleanup", "when"))


def _q(text: str, limit: int = _QUOTE_MAX) -> str:
    """Quote user input for a one-line message: ``'`` and backslash escaped
    with a backslash; control, invisible and direction-changing characters
    escaped; long input cut in the middle so both ends (a path's start and its
    file name) stay visible."""
    if len(text) > limit:
        head = limit // 3
        return _q(text[:head])[:-1] + "..." + _q(text[-(limit - head):])[1:]
    out: List[str] = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7F:
            # Escape the quote and the escape character, so the quoted part
            # ends exactly where the user's input ends ("'/a\\'; rm'").
            out.append("\\" + ch if ch in "\\'" else ch)
        elif o < 0x80 or unicodedata.category(ch)[0] in "CZ" or o in _LOOKALIKE:
            out.append(f"\\x{o:02x}" if o <= 0xFF else
                       (f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"))
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def _item_form(d: Direction) -> str:
    return f"expected LOCAL@COLLECTION:REMOTE, e.g. {_EXAMPLE[d]}"


class _Fail(Exception):
    """Internal: a problem found inside a part; the caller adds where it was."""


# ---------------------------------------------------------------------------
# Paths

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
# Printable ASCII without space and comma: what may appear literally in a path.
_RAW_OK = re.compile(r"[!-+\--~]*\Z")
_ESCAPE_RE = re.compile(r"%(?:([0-9A-Fa-f]{2})|(.{0,2}))", re.S)

# Characters that look like grammar or path punctuation but are not caught by
# NFKC folding to ASCII.  (Fullwidth forms fold and are caught generically.)
_LOOKALIKE = {
    0x2044: "/", 0x2215: "/", 0x29F8: "/", 0x2571: "/", 0x27CB: "/",
    0x3033: "/", 0x1735: "/", 0x0337: "/", 0x0338: "/", 0x20EB: "/",
    0x29F5: "\\", 0x29F9: "\\", 0x2216: "\\", 0x2572: "\\",
    0x2236: ":", 0xA789: ":", 0x02D0: ":", 0x0589: ":", 0x05C3: ":",
    0x0703: ":", 0x0704: ":", 0x16EC: ":", 0x1361: ":",
    0x2024: ".", 0x0701: ".", 0x0702: ".", 0xA4F8: ".", 0x06D4: ".",
    0x2027: ".", 0x00B7: ".", 0x02D7: "-", 0x2010: "-", 0x2011: "-",
}


def is_uuid(text: str) -> bool:
    return bool(_UUID_RE.match(text))


def _check_unicode(ch: str) -> None:
    o = ord(ch)
    cat = unicodedata.category(ch)
    if cat[0] in "CZ":
        # Control, format (bidi overrides, zero-width), unassigned, private,
        # surrogates and non-ASCII spaces: invisible or misleading in a path.
        raise _Fail(f"contains the invisible or control character U+{o:04X}")
    looks = _LOOKALIKE.get(o)
    if looks is None:
        folded = unicodedata.normalize("NFKC", ch)
        if folded != ch and any(c < "\x80" for c in folded):
            looks = folded
    if looks is not None:
        raise _Fail(f"contains U+{o:04X}, which looks like {looks!r}; "
                    "type the plain ASCII character")


def _check_raw(raw: str) -> None:
    """Characters as written (before decoding escapes)."""
    if _RAW_OK.match(raw):
        return
    for ch in raw:
        if ch == " ":
            raise _Fail("contains a space; write it as %20")
        if ch == ",":
            raise _Fail("contains ','; write it as %2C")
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            raise _Fail(f"contains the control character \\x{o:02x}")
        if o >= 0x80:
            _check_unicode(ch)


def _decode(raw: str) -> str:
    if "%" not in raw:
        return raw

    def one(m: "re.Match[str]") -> str:
        if m.group(1) is None:
            bad = "%" + m.group(2)
            raise _Fail(f"has an invalid escape {_q(bad)}; write % as %25 "
                        "(escapes are %XX in hex, e.g. %2B for +)")
        code = int(m.group(1), 16)
        if not 0x20 <= code <= 0x7E:
            raise _Fail(f"has the escape %{m.group(1)}, which is not a printable "
                        "ASCII character")
        return chr(code)

    return _ESCAPE_RE.sub(one, raw)


def _path(raw: str, *, remote: bool = False, file_only: bool = False) -> str:
    """Decode, validate and normalise one path; raises _Fail."""
    # Fast path for the common case (already normal, nothing escaped): every
    # '.' or '..' component and every '//' would show as '/.' or '//'.
    if (raw[:1] == "/" and "%" not in raw and "/." not in raw and "//" not in raw
            and (raw[1:2] != "~" or (remote and raw.startswith("/~/")))
            and _RAW_OK.match(raw)):
        if file_only and raw.endswith("/"):
            raise _Fail("ends with '/'; it must name a file")
        return raw
    _check_raw(raw)
    path = _decode(raw)
    if remote and path.startswith("~/"):
        path = "/" + path
    if remote and path in ("~", "/~"):
        raise _Fail("names your home without a trailing '/'; write ~/ for your home directory")
    if not path.startswith("/"):
        if path.startswith("~"):
            raise _Fail("starts with '~user'; only ~/ (your own home) is allowed"
                        if remote else "is not an absolute path on this site")
        raise _Fail("is not an absolute path (it must start with /"
                    + (" or ~/)" if remote else ")"))
    parts = path.split("/")
    if ".." in parts:
        raise _Fail("contains a '..' component")
    if parts[1].startswith("~") and not (remote and parts[1] == "~" and len(parts) > 2):
        if remote:
            raise _Fail("starts with '~user'; only ~/ (your own home) is allowed")
        raise _Fail("starts with '~'; the local side is an absolute path on this site")
    kept = [p for p in parts if p and p != "."]
    is_dir = parts[-1] in ("", ".")
    norm = "/" + "/".join(kept)
    if is_dir and kept:
        norm += "/"
    if file_only and norm.endswith("/"):
        raise _Fail("ends with '/'; it must name a file")
    return norm


# ---------------------------------------------------------------------------
# Elements

def _parse_item(part: str, where: str, d: Direction, res: str) -> Item:
    at = part.find("@")
    if at < 0:
        raise RequestError(f"{where} {_q(part)} has no '@'; {_item_form(d)}",
                           resource=res)
    local_raw, rest = part[:at], part[at + 1:]
    colon = rest.find(":")
    if colon < 0:
        raise RequestError(f"{where} {_q(part)} has no ':' after the collection; "
                           f"{_item_form(d)}", resource=res)
    coll, remote_raw = rest[:colon], rest[colon + 1:]
    try:
        local = _path(local_raw)
    except _Fail as e:
        raise RequestError(f"{where}: local path {_q(local_raw)} {e}; {_item_form(d)}",
                           resource=res) from None
    if _UUID_RE.match(coll):
        coll = coll.lower()
    elif not _ALIAS_RE.match(coll):
        raise RequestError(
            f"{where}: collection {_q(coll)} is neither a collection UUID nor an "
            "alias (a letter, then letters, digits, '_', '.', '-'); "
            f"{_item_form(d)}", resource=res)
    if not remote_raw:
        raise RequestError(f"{where} {_q(part)} has no remote path after ':'; "
                           f"{_item_form(d)}", resource=res)
    try:
        remote = _path(remote_raw, remote=True)
    except _Fail as e:
        raise RequestError(f"{where}: remote path {_q(remote_raw)} {e}; {_item_form(d)}",
                           resource=res) from None
    ldir, rdir = local.endswith("/"), remote.endswith("/")
    if ldir != rdir:
        raise RequestError(
            f"{where} {_q(part)}: one side ends with '/' and the other does not; "
            "end both with '/' for a directory, neither for a file",
            resource=res)
    return Item(local, coll, remote, ldir, origin=where)


def _parse_deadline(value: str) -> Deadline:
    m = re.match(r"([0-9]{1,6})([mhd])\Z", value)
    if m:
        n = int(m.group(1))
        secs = n * {"m": 60, "h": 3600, "d": 86400}[m.group(2)]
        if n == 0 or secs > MAX_DEADLINE_SECONDS:
            raise _Fail("must be between 1m and 400d")
        return Deadline(seconds=secs, form=f"{n}{m.group(2)}")
    m = re.match(r"([0-9]{4})-([0-9]{2})-([0-9]{2})(?:T([0-9]{2}):([0-9]{2}))?Z?\Z", value)
    if m:
        y, mo, da = int(m.group(1)), int(m.group(2)), int(m.group(3))
        has_time = m.group(4) is not None
        hh, mi = (int(m.group(4)), int(m.group(5))) if has_time else (0, 0)
        try:
            at = _dt.datetime(y, mo, da, hh, mi, tzinfo=_dt.timezone.utc)
        except ValueError as e:
            raise _Fail(f"is not a valid date ({e})") from None
        form = at.strftime("%Y-%m-%dT%H:%M" if has_time else "%Y-%m-%d")
        if len(form) != (16 if has_time else 10):  # years < 1000 on some libcs
            form = (f"{y:04d}-{mo:02d}-{da:02d}" +
                    (f"T{hh:02d}:{mi:02d}" if has_time else ""))
        return Deadline(at=at, form=form)
    raise _Fail("is not a date or a duration")


def _choice(key: str, value: str, allowed: Tuple[str, ...]) -> str:
    if value not in allowed:
        raise _Fail(f"is not valid; expected {key}=" + "|".join(allowed))
    return value


def parse(value: str, *, direction: Union[str, Direction], resource: Optional[str] = None,
          max_length: int = MAX_VALUE_LENGTH, max_items: int = MAX_ITEMS) -> StagingRequest:
    """Parse one resource value.  Raises ``RequestError`` (one line, naming the
    offending part and the expected form) and nothing else for any ``value``."""
    d = Direction(direction)
    res = resource or _RESOURCE[d]

    def fail(msg: str) -> RequestError:
        return RequestError(msg, resource=res)

    return _parse(value, d, res, fail, max_length, max_items)


_KEY_RE = re.compile(r"[A-Za-z_]{1,20}\Z")


def _parse(value: object, d: Direction, res: str, fail: Callable[[str], RequestError],
           max_length: int, max_items: int) -> StagingRequest:
    if not isinstance(value, str):
        raise fail("the value must be text")
    if len(value) > max_length:
        raise fail(f"the value is {len(value)} characters long; at most {max_length} "
                   "are allowed (put long lists in a file and use manifest=PATH)")
    text = value.strip()
    if not text:
        raise fail(f"the value is empty; {_item_form(d)}, joined by '+'")
    parts = text.split("+")
    items: List[Item] = []
    tasks: List[str] = []
    manifests: List[str] = []
    opts: Dict[str, object] = {}
    seen_items: Dict[Item, str] = {}
    seen_dest: Dict[Tuple[str, str], str] = {}
    for n, part in enumerate(parts, 1):
        where = f"item {n}"
        if not part:
            raise fail(f"{where} is empty (two '+' in a row, or a '+' at an end); "
                       f"{_item_form(d)}")
        if part[0] == "/":
            if len(items) >= max_items:
                raise fail(f"more than {max_items} items; put long lists in a file "
                           "and use manifest=PATH")
            item = _parse_item(part, where, d, res)
            _check_duplicate(item, where, d, seen_items, seen_dest, fail)
            items.append(item)
            continue
        eq = part.find("=")
        key = part[:eq] if eq > 0 else ""
        if not key or not _KEY_RE.match(key):
            if "@" in part:
                local = part[:part.find("@")]
                raise fail(f"{where}: local path {_q(local)} is not an absolute path "
                           f"(it must start with /); {_item_form(d)}")
            raise fail(f"{where} {_q(part)} has no '@'; {_item_form(d)}")
        val = part[eq + 1:]
        keys = _ELEMENT_KEYS[d]
        if key not in keys:
            if key in _ALL_KEYS:
                other = "stage-out" if d is Direction.IN else "stage-in"
                raise fail(f"{key}= is only allowed for {other} (in "
                           f"{_RESOURCE[Direction.OUT if d is Direction.IN else Direction.IN]}); "
                           f"{res} accepts " + " ".join(k + "=" for k in keys))
            raise fail(f"{where}: unknown option {_q(key + '=')}; expected one of "
                       + " ".join(k + "=" for k in keys) + f" or an item like {_EXAMPLE[d]}")
        try:
            if key == "task":
                if not _UUID_RE.match(val):
                    raise _Fail("is not valid; expected task=UUID (a Globus task id, "
                                "e.g. task=1f2e3d4c-0000-11ee-8000-0242ac120002)")
                task = val.lower()
                if task in tasks:
                    raise _Fail("is given twice")
                tasks.append(task)
            elif key == "manifest":
                path = _path(val, file_only=True)
                if path in manifests:
                    raise _Fail("is given twice")
                manifests.append(path)
            else:
                if key in opts:
                    raise _Fail(f"is given twice; give {key}= once")
                if key == "sync":
                    opts[key] = _choice(key, val, _SYNC)
                elif key == "checksum":
                    opts[key] = _choice(key, val, ("yes", "no")) == "yes"
                elif key == "deadline":
                    opts[key] = _parse_deadline(val)
                elif key == "onfail":
                    opts[key] = _choice(key, val, _ONFAIL)
                elif key == "when":
                    opts[key] = _choice(key, val, _WHEN)
                elif key == "cleanup":
                    opts[key] = _path(val, file_only=True)
        except _Fail as e:
            expected = {
                "manifest": "; expected manifest=/absolute/path/to/file",
                "cleanup": "; expected cleanup=/absolute/path/to/script",
                "deadline": "; expected deadline=YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) "
                            "or a duration like 36h or 7d",
            }.get(key, "")
            raise fail(f"{where} {_q(part)} {e}{expected}") from None
    if not (items or tasks or manifests):
        raise fail(f"{_q(text)} names nothing to transfer; {_item_form(d)} "
                   "(or task=UUID or manifest=PATH)")
    options = Options(
        sync_level=opts.get("sync"),                # type: ignore[arg-type]
        verify_checksum=opts.get("checksum"),       # type: ignore[arg-type]
        deadline=opts.get("deadline"),              # type: ignore[arg-type]
        onfail=opts.get("onfail"),                  # type: ignore[arg-type]
        cleanup=opts.get("cleanup"),                # type: ignore[arg-type]
        when=opts.get("when"),                      # type: ignore[arg-type]
    )
    return StagingRequest(d, tuple(items), tuple(tasks), tuple(manifests), options)


def _check_duplicate(item: Item, where: str, d: Direction, seen_items: Dict[Item, str],
                     seen_dest: Dict[Tuple[str, str], str],
                     fail: Callable[[str], RequestError]) -> None:
    prev = seen_items.get(item)
    if prev is not None:
        raise fail(f"{where} {_q(_render_item(item))} repeats {prev}; "
                   "name each item once")
    # Two items writing to one place race each other inside Globus.
    dest = ("", item.local) if d is Direction.IN else (item.collection, item.remote)
    prev = seen_dest.get(dest)
    if prev is not None:
        raise fail(f"{where} {_q(_render_item(item))} writes to the same destination "
                   f"as {prev}; give each item its own destination")
    seen_items[item] = where
    seen_dest[dest] = where


# ---------------------------------------------------------------------------
# Rendering

_ESCAPES = {c: f"%{ord(c):02X}" for c in "%+@, \"'\\"}


def _esc(path: str) -> str:
    if not any(c in _ESCAPES for c in path):
        return path
    return "".join(_ESCAPES.get(c, c) for c in path)


def _render_item(item: Item) -> str:
    return f"{_esc(item.local)}@{item.collection}:{_esc(item.remote)}"


def render(req: StagingRequest) -> str:
    """The canonical value: items, task=, manifest=, then options in a fixed
    order.  ``parse(render(r), direction=r.direction) == r`` for every valid r."""
    parts = [_render_item(i) for i in req.items]
    parts += [f"task={t}" for t in req.tasks]
    parts += [f"manifest={_esc(m)}" for m in req.manifests]
    o = req.options
    if o.sync_level is not None:
        parts.append(f"sync={o.sync_level}")
    if o.verify_checksum is not None:
        parts.append("checksum=" + ("yes" if o.verify_checksum else "no"))
    if o.deadline is not None:
        parts.append(f"deadline={o.deadline.form}")
    if o.onfail is not None:
        parts.append(f"onfail={o.onfail}")
    if o.cleanup is not None:
        parts.append(f"cleanup={_esc(o.cleanup)}")
    if o.when is not None:
        parts.append(f"when={o.when}")
    return "+".join(parts)


def request_key(req: StagingRequest, *, identity: str) -> str:
    """A stable sha256 hex key of (identity, direction, canonical request), used
    to recognise the same request across jobs and agent restarts.  Manifest
    paths are part of it, so give it the expanded request."""
    body = json.dumps([1, identity, Direction(req.direction).value, render(req)],
                      ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------
# Manifests

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
