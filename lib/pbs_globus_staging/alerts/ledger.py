"""What was already sent (the journal, behind the ``Ledger`` protocol) and the
status of each delivery."""
from __future__ import annotations

import datetime as _dt
from typing import Any, Protocol

from ..states import DeliveryStatus

# --------------------------------------------------------------------------- deliveries

# The words are states.DeliveryStatus's; these names are the alerts package's own API.
SENT = DeliveryStatus.SENT
FAILED = DeliveryStatus.FAILED
DEFERRED = DeliveryStatus.DEFERRED
ABANDONED = DeliveryStatus.ABANDONED
SUPPRESSED = DeliveryStatus.SUPPRESSED


class Ledger(Protocol):
    """What the journal offers: which alerts went out, and when.

    ``alert_state`` returns None (never sent) or the journal's ``AlertRow``
    (``first_sent``, ``last_sent``, ``count``), or a plain
    ``(first_sent, last_sent, count)`` tuple.
    """

    def alert_state(self, rule: str, key: str) -> Any: ...

    def mark_alert(self, rule: str, key: str, *, at: float) -> Any: ...


def _last_sent(state: Any) -> Any:
    if hasattr(state, "last_sent"):
        return state.last_sent
    return state[1]


def _epoch(value: Any) -> float | None:
    """Ledger times as seconds; tolerant of datetime or ISO text from a journal."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, _dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=_dt.timezone.utc)
        return value.timestamp()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return _epoch(_dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
    raise TypeError(f"cannot read a time from {type(value).__name__}")
