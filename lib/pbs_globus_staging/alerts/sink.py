"""Agent wiring: the callable the agent hands its events to."""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

from ..events import Kind
from ..mail import Deliverer
from .engine import AlertEngine
from .event import StagingEvent
from .ledger import Ledger
from .rules import parse_rules

log = logging.getLogger("pbs_globus_staging.alerts")

# --------------------------------------------------------------------------- agent wiring

# Conditions rather than moments: repeat rules apply when the agent reports them again.
PERSISTENT_KINDS = frozenset({Kind.USER_ACTION, Kind.SLOW, Kind.AGENT_UNHEALTHY,
                              Kind.GLOBUS_UNREACHABLE})


def sink_for_agent(site_config: Any, *, journal: Ledger,
                   clock: Callable[[], float] | None = None) -> Callable[[list], None]:
    """The callable the agent hands its event dicts to at the end of a cycle.

    Raises ConfigError at startup for a bad ``alerts:`` section; afterwards
    never raises (bad events are logged and skipped).
    """
    import time as _time

    config = parse_rules(getattr(site_config, "alerts", None),
                         source=str(getattr(site_config, "source", "site config")))
    engine = AlertEngine(config, ledger=journal, deliver=Deliverer.from_config(config))
    now_fn = clock or _time.time

    def sink(events: list) -> None:
        once, persistent = [], []
        for raw in events:
            try:
                ev = raw if isinstance(raw, StagingEvent) else StagingEvent.from_mapping(raw)
            except (TypeError, ValueError) as exc:
                log.warning("alerts: skipping malformed event %r: %s",
                            raw.get("kind") if isinstance(raw, Mapping) else raw, exc)
                continue
            (persistent if ev.kind in PERSISTENT_KINDS else once).append(ev)
        now = now_fn()
        engine.process(once, now=now)
        engine.process_persistent(persistent, now=now)

    sink.engine = engine  # type: ignore[attr-defined]  # for tests and `globus-staging status`
    return sink
