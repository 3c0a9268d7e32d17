"""Trigger-action alerts for staging events ("let it crash" monitoring).

Stdlib only, pure logic: what the agent saw (``StagingEvent``) is matched
against the site's rules (``alerts:`` in the site config) and turned into
deliveries (mail, a site command, a log line).  All I/O goes through injected
callables: ``ledger`` (the journal: what was already sent) and ``deliver``
(``mail.Deliverer``: actually sends).

Delivery is at-least-once: a delivery is recorded in the ledger only after it
succeeded, so a crash between the two sends it again rather than never.

PBS habits kept: ``-M`` (Mail_Users) replaces the owner's address, ``-m n``
(Mail_Points) turns off mail to the owner, and a rule may require a mail
point (``a`` abort, ``b`` begin, ``e`` end) in the job's ``-m``.  When ``-m``
was not given PBS's default is ``a``.

The package: ``event`` (StagingEvent and its kinds), ``rules`` (the site's
rules, validated at load), ``ledger`` (what was sent; delivery statuses),
``engine`` (``AlertEngine``), ``sink`` (the agent's wiring).  The public names
are re-exported here: ``from pbs_globus_staging.alerts import X`` keeps working.
"""
from __future__ import annotations

from ..errors import ConfigError
from .engine import AlertEngine, _fmt_bytes, task_link
from .event import (_KIND_TEXT, EVENT_KINDS, GLOBUS_ACTIVITY_URL, PBS_DEFAULT_MAIL_POINTS,
                    SITE_KINDS, StagingEvent)
from .ledger import ABANDONED, DEFERRED, FAILED, SENT, SUPPRESSED, Ledger
from .rules import (ACTION_WORDS, DEFAULT_RULES, MAIL_POINTS, MIN_REPEAT, PLACEHOLDERS, Action,
                    AlertConfig, Conditions, Rule, parse_duration, parse_rules)
from .sink import PERSISTENT_KINDS, sink_for_agent

__all__ = [
    "ABANDONED", "ACTION_WORDS", "DEFAULT_RULES", "DEFERRED", "EVENT_KINDS", "FAILED",
    "GLOBUS_ACTIVITY_URL", "MAIL_POINTS", "MIN_REPEAT", "PBS_DEFAULT_MAIL_POINTS",
    "PERSISTENT_KINDS", "PLACEHOLDERS", "SENT", "SITE_KINDS", "SUPPRESSED", "Action",
    "AlertConfig", "AlertEngine", "ConfigError", "Conditions", "Ledger", "Rule",
    "StagingEvent", "parse_duration", "parse_rules", "sink_for_agent", "task_link",
    "_KIND_TEXT", "_fmt_bytes",
]
