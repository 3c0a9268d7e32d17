"""How the product reads and writes a duration and writes a byte count: once, for every module.

Stdlib only and Python 3.6+ (``siteconfig`` uses it, and the event hooks may
import ``siteconfig``): no ``from __future__ import annotations``, no dataclasses.

One duration grammar for the whole site.yaml (``agent:``, ``globus:``,
``alerts:``), described in docs/grammar.md: plain seconds (``90``, ``1.5``) or
one or more NUMBER+UNIT parts, largest unit first (``30s``, ``1.5h``, ``1h30m``,
``1w2d``).  Range checks (zero allowed? at least a minute?) stay with the key.
"""
import math
import re
from typing import Any

__all__ = ["DurationError", "parse_duration", "DURATION_UNITS", "DURATION_EXAMPLES",
           "DURATION_FORM", "duration_text", "human_bytes"]

DURATION_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
DURATION_EXAMPLES = "30s, 10m, 1.5h, 1h30m, 7d, 1w"
DURATION_FORM = ("a number of seconds or a duration like " + DURATION_EXAMPLES
                 + ": units s m h d w, largest first")

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_SECONDS_RE = re.compile(r"(" + _NUMBER + r")\Z")
_PART_RE = re.compile(r"\s*(" + _NUMBER + r")\s*([a-z])")
_RANK = {u: i for i, (u, _) in enumerate(DURATION_UNITS)}
_FACTOR = dict(DURATION_UNITS)


class DurationError(ValueError):
    """One line naming the value and the expected form."""

    def __init__(self, value: Any) -> None:
        text = repr(value)
        if len(text) > 60:
            text = text[:57] + "..."
        super().__init__("{} is not a duration; expected {}".format(text, DURATION_FORM))
        self.value = value


def parse_duration(value: Any) -> float:
    """Seconds (>= 0, finite) from ``90``, ``"90"``, ``"1.5h"``, ``"1h30m"``, ``"1w"``.

    Raises ``DurationError`` otherwise (booleans, negatives, ``"30m1h"``,
    ``"1h1h"``, unknown units, infinities).
    """
    if isinstance(value, bool):
        raise DurationError(value)
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise DurationError(value)
        return float(value)
    if not isinstance(value, str):
        raise DurationError(value)
    text = value.strip()
    m = _SECONDS_RE.match(text)
    if m:
        return _finite(float(m.group(1)), value)
    total, pos, last_rank = 0.0, 0, -1
    while pos < len(text):
        m = _PART_RE.match(text, pos)
        # Units largest first, each once: "30m1h" or "1h1h" is more likely a typo
        # than a wish, so it is refused rather than summed.
        if not m or m.group(2) not in _RANK or _RANK[m.group(2)] <= last_rank:
            raise DurationError(value)
        last_rank = _RANK[m.group(2)]
        total += float(m.group(1)) * _FACTOR[m.group(2)]
        pos = m.end()
    if last_rank < 0:
        raise DurationError(value)
    return _finite(total, value)


def _finite(seconds: float, value: Any) -> float:
    if not math.isfinite(seconds):
        raise DurationError(value)
    return seconds


# Binary (IEC) units, spelled KiB/MiB/GiB: PBS's own sizes (qsub -l mem=4gb,
# qstat's "kb") count in powers of 1024, so an admin comparing a transfer with
# a PBS size compares like with like, and the "i" says which base it is where
# the job comment and the owner's mail are read side by side.
_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def duration_text(seconds: float) -> str:
    """A duration for a message: the largest whole unit that divides it (``7 d``, ``90 s``)."""
    for unit, size in DURATION_UNITS[1:4]:
        if seconds >= size and seconds % size == 0:
            return "{:.0f} {}".format(seconds / size, "min" if unit == "m" else unit)
    return "{:.0f} s".format(seconds)


def human_bytes(n: float) -> str:
    """``512 B``, ``11.8 MiB``: the one byte format of comments, mail and views.

    Short and free of commas (it goes into PBS job comments)."""
    size = float(n)
    for unit in _BYTE_UNITS:
        if unit == "B":
            if abs(round(size)) < 1024:
                return "{:.0f} B".format(size)
        elif abs(round(size, 1)) < 1024 or unit == _BYTE_UNITS[-1]:
            return "{:.1f} {}".format(size, unit)
        size /= 1024.0
    raise AssertionError("unreachable")  # pragma: no cover
