"""The request's types, limits and message helpers (stdlib only, Python 3.6+)."""

from .._py36 import dataclasses
import datetime as _dt
import unicodedata
from typing import List, Optional, Tuple, Union

from ..states import RES_STAGEIN, RES_STAGEOUT, Direction

MAX_VALUE_LENGTH = 4096         # characters in one resource value
MAX_ITEMS = 1000                # items written directly in one value
MANIFEST_MAX_BYTES = 1 << 20    # one manifest file
MANIFEST_MAX_ITEMS = 10000      # items after expanding all manifests
MAX_DEADLINE_SECONDS = 400 * 86400   # a relative deadline beyond this is a typo
_QUOTE_MAX = 60                 # characters of user input quoted in a message
_PATH_QUOTE_MAX = 120           # ... when it is a whole path the user must recognise


_RESOURCE = {Direction.IN: RES_STAGEIN, Direction.OUT: RES_STAGEOUT}


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
