"""The grammar: ``parse()`` a resource value into a ``StagingRequest`` (stdlib only,
Python 3.6+; the queuejob hook runs it on every qsub)."""

import datetime as _dt
import re
import unicodedata
from typing import Callable, Dict, List, Optional, Tuple, Union

from .. import units
from ..errors import RequestError
from .model import (_ALL_KEYS, _ELEMENT_KEYS, _EXAMPLE, _LOOKALIKE, _ONFAIL, _RESOURCE, _SYNC,
                    _WHEN, MAX_DEADLINE_SECONDS, MAX_ITEMS, MAX_VALUE_LENGTH, Deadline,
                    Direction, Item, Options, StagingRequest, _Fail, _item_form, _q)
from .render import _render_item

# ---------------------------------------------------------------------------
# Paths

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")
_ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}\Z")
# Printable ASCII without space and comma: what may appear literally in a path.
_RAW_OK = re.compile(r"[!-+\--~]*\Z")
_ESCAPE_RE = re.compile(r"%(?:([0-9A-Fa-f]{2})|(.{0,2}))", re.S)


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
        secs = n * int(dict(units.DURATION_UNITS)[m.group(2)])   # the one unit table
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
