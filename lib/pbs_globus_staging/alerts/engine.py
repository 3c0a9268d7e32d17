"""The engine: events x rules -> deliveries, each (rule, action, event) once."""
from __future__ import annotations

import datetime as _dt
import logging
import re
import socket
import textwrap
import urllib.parse
from dataclasses import replace
from typing import Callable, Iterable, Sequence

from .. import units
from ..events import Kind
from ..mail import Delivery, redact, valid_address
from .event import _KIND_TEXT, GLOBUS_ACTIVITY_URL, StagingEvent
from .ledger import (ABANDONED, DEFERRED, FAILED, SENT, SUPPRESSED, Ledger, _epoch,
                     _last_sent)
from .rules import _PLACEHOLDER_RE, _TASK_ID_RE, Action, AlertConfig, Rule

log = logging.getLogger("pbs_globus_staging.alerts")

def _fmt_time(t: float | None) -> str:
    if t is None:
        return ""
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fmt_bytes(n: int) -> str:
    return units.human_bytes(n)  # the same text as the job comment's progress


def task_link(task_id: str) -> str:
    if not task_id or not _TASK_ID_RE.match(task_id):
        return ""
    return GLOBUS_ACTIVITY_URL + urllib.parse.quote(task_id)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class AlertEngine:
    """Matches events against rules and delivers each (rule, action, event) once.

    ``deliver(delivery)`` performs a mail or command delivery and raises on
    failure (``mail.Deliverer``); ``log`` actions are written here.  Nothing
    raises out of :meth:`process` / :meth:`process_persistent`: failures come
    back as deliveries with a status, and are logged.
    """

    def __init__(self, config: AlertConfig, *, ledger: Ledger,
                 deliver: Callable[[Delivery], None], hostname: str | None = None) -> None:
        self.config = config
        self.ledger = ledger
        self.deliver = deliver
        self.hostname = hostname or socket.gethostname() or "localhost"
        # Failed tries per (ledger rule, key) by this process: the bound for
        # events without a time (the time-based bound survives restarts).
        self._failures: dict[tuple[str, str], int] = {}

    # -- public

    def process(self, events: Iterable[StagingEvent], *, now: float) -> list[Delivery]:
        """One-off events: each matching (rule, action, event) is delivered once, ever."""
        return self._run(events, now=now, persistent=False)

    def process_persistent(self, conditions: Iterable[StagingEvent], *, now: float
                           ) -> list[Delivery]:
        """Conditions still true this cycle (waiting for the user, agent unhealthy,
        Globus unreachable...): delivered once, then again every ``repeat`` of
        the rule while the caller keeps passing them."""
        return self._run(conditions, now=now, persistent=True)

    def owner_recipients(self, ev: StagingEvent) -> tuple[str, ...]:
        """``-M`` if given, else the owner at mail_domain (or the submit host, or here)."""
        users = tuple(u for u in ev.mail_users if valid_address(u))
        dropped = [u for u in ev.mail_users if not valid_address(u)]
        if dropped:
            log.warning("job %s: ignoring unusable -M address(es): %s", ev.job_id,
                        ", ".join(repr(u) for u in dropped))
        if users:
            return users
        user, _, host = ev.owner.partition("@")
        if not user:
            return ()
        addr = f"{user}@{self.config.mail_domain or host or self.hostname}"
        return (addr,) if valid_address(addr) else ()

    # -- internals

    def _run(self, events: Iterable[StagingEvent], *, now: float, persistent: bool
             ) -> list[Delivery]:
        out: list[Delivery] = []
        mail_down = ""  # the transport's error once it failed this cycle
        for ev in events:
            key = ev.dedup_key()
            for rule in self.config.rules:
                if not rule.applies(ev):
                    continue
                for action in rule.do:
                    d, transport_down = self._one(ev, key, rule, action, now=now,
                                                  persistent=persistent, mail_down=mail_down)
                    if d is None:
                        continue
                    if transport_down and d.channel == "mail":
                        mail_down = d.error
                    out.append(d)
        return out

    def _one(self, ev: StagingEvent, key: str, rule: Rule, action: Action, *, now: float,
             persistent: bool, mail_down: str) -> tuple[Delivery | None, bool]:
        """One action for one event; also says whether the transport itself is down."""
        ledger_rule = f"{rule.name}/{action.label}"
        try:
            state = self.ledger.alert_state(ledger_rule, key)
            last = _epoch(_last_sent(state)) if state is not None else None
        except Exception as exc:  # journal locked or broken: cannot tell, so don't send now
            log.warning("alerts: cannot read alert state for %s %s: %s", ledger_rule, key,
                        _one_line(redact(str(exc))))
            return None, False
        if state is None:
            due_at = ev.time
        else:
            if not (persistent and rule.repeat):
                return None, False
            if last is not None and now - last < rule.repeat:
                return None, False
            due_at = (last + rule.repeat) if last is not None else None

        d = self._build(ev, key, rule, action)
        if d is None or d.status == SUPPRESSED:
            return d, False
        if d.channel == "log":
            self._log_event(ev, rule)
            return self._mark(replace(d, status=SENT), now), False
        if d.channel == "mail" and mail_down:
            return replace(d, status=DEFERRED, error=f"not tried: {mail_down}"), False
        try:
            self.deliver(d)
        except Exception as exc:
            return (self._failed(d, exc, due_at=due_at, now=now),
                    bool(getattr(exc, "unavailable", False)))
        self._failures.pop((ledger_rule, key), None)
        return self._mark(replace(d, status=SENT), now), False

    def _failed(self, d: Delivery, exc: Exception, *, due_at: float | None, now: float
                ) -> Delivery:
        error = _one_line(redact(str(exc))) or type(exc).__name__
        if len(self._failures) > 10000:  # events that stopped coming; keep memory bounded
            self._failures.clear()
        tries = self._failures.get((d.ledger_rule, d.key), 0) + 1
        self._failures[(d.ledger_rule, d.key)] = tries
        # A failed delivery stays unmarked so the next cycle tries again -- but
        # not forever: a permanently bad address or broken command would be
        # retried (and logged, and wait out its timeout) every cycle for the
        # life of the journal, and an alert about a day-old event is stale; the
        # job comment and the state word carry the rest.  The time bound holds
        # across agent restarts (the agent usually runs as a fresh process per
        # periodic-hook cycle); the count bound covers events without a time.
        stale = due_at is not None and now - due_at >= self.config.retry_for
        if stale or tries >= self.config.max_attempts:
            why = (f"still failing {(now - due_at) / 3600:.1f} h after it was due"
                   if stale else f"failed {tries} times")
            log.error("alerts: giving up on %s for %s (rule %s, %s): %s; %s",
                      d.channel, d.job_id or "site", d.rule, d.kind, error, why)
            self._failures.pop((d.ledger_rule, d.key), None)
            out = self._mark(replace(d, status=ABANDONED, error=error), now)
        else:
            log.warning("alerts: %s for %s (rule %s, %s) failed, will retry: %s",
                        d.channel, d.job_id or "site", d.rule, d.kind, error)
            out = replace(d, status=FAILED, error=error)
        return out

    def _mark(self, d: Delivery, now: float) -> Delivery:
        try:
            self.ledger.mark_alert(d.ledger_rule, d.key, at=now)
        except Exception as exc:
            # Sent but not recorded: it will go out again next cycle (at-least-once).
            log.warning("alerts: sent %s for %s but could not record it: %s", d.ledger_rule,
                        d.key, _one_line(redact(str(exc))))
        return d

    def _build(self, ev: StagingEvent, key: str, rule: Rule, action: Action) -> Delivery | None:
        base = dict(rule=rule.name, action=action.label, key=key, kind=ev.kind, job_id=ev.job_id)
        if action.kind == "log":
            return Delivery(channel="log", **base)
        if action.kind == "command":
            return Delivery(channel="command", argv=self._argv(action.argv, ev, rule), **base)
        if action.kind == "mail_owner":
            if ev.job_id is None or not ev.owner:
                return None  # a site-wide event has no owner to tell
            if "n" in ev.mail_points:
                return Delivery(channel="mail", status=SUPPRESSED,
                                error="the job asked for no mail (-m n)", **base)
            recipients = self.owner_recipients(ev)
            if not recipients:
                return Delivery(channel="mail", status=SUPPRESSED,
                                error="no usable address for the job owner", **base)
            footer = ("You get this mail because you own this PBS job (its -M address if "
                      "set). Submit with -m n to get no staging mail for a job.")
        elif action.kind == "mail_admins":
            recipients = self.config.admins
            if not recipients:
                return None
            footer = "You get this mail as a staging administrator (alerts.admins)."
        else:  # fixed addresses
            recipients = action.addresses
            footer = "You get this mail through the site's staging alert rules."
        subject, body = self.render(ev, rule_name=rule.name, footer=footer)
        return Delivery(channel="mail", recipients=tuple(recipients), subject=subject,
                        body=body, **base)

    def render(self, ev: StagingEvent, *, rule_name: str, footer: str = "") -> tuple[str, str]:
        """Subject and body: what happened, which job, which transfer, what to do next."""
        title, default_action = _KIND_TEXT[ev.kind]
        if ev.job_id:
            subject = f"[PBS staging] job {ev.job_id}: {title}"
            head = f"{title[0].upper()}{title[1:]} for PBS job {ev.job_id}."
        else:
            subject = f"[PBS staging] {title} on {self.hostname}"
            head = f"{title[0].upper()}{title[1:]} (staging agent on {self.hostname})."
        lines = [head, ""]
        message = redact(ev.message.strip())
        if message:
            lines += ["What happened:", *("  " + ln for ln in message.splitlines()), ""]
        if ev.job_id:
            who = ", ".join(x for x in (f"owner {ev.owner}" if ev.owner else "",
                                        f"queue {ev.queue}" if ev.queue else "",
                                        f"project {ev.project}" if ev.project else "") if x)
            lines.append(f"Job:       {ev.job_id}" + (f" ({who})" if who else ""))
        if ev.task_id:
            lines.append(f"Transfer:  Globus task {ev.task_id}")
            link = task_link(ev.task_id)
            if link:
                lines.append(f"           {link}")
        if ev.bytes or ev.files:
            data = []
            if ev.bytes:
                data.append(_fmt_bytes(ev.bytes))
            if ev.files:
                data.append(f"{ev.files} file{'s' if ev.files != 1 else ''}")
            lines.append("Data:      " + " in ".join(data))
        if ev.time is not None:
            lines.append(f"When:      {_fmt_time(ev.time)}")
        next_step = redact(ev.action.strip())
        if not next_step:
            # Only our own prose is wrapped: a command in the event's action must
            # stay on one line to be copied.
            next_step = textwrap.fill(default_action.replace("JOB", ev.job_id or "JOB"),
                                      width=72, break_long_words=False, break_on_hyphens=False)
        lines += ["", "What to do next:", *("  " + ln for ln in next_step.splitlines()), "",
                  "-- ", f"pbs-globus-staging on {self.hostname}, alert rule {rule_name!r}."]
        if footer:
            lines.append(footer)
        return _one_line(subject), "\n".join(lines) + "\n"

    def _argv(self, template: Sequence[str], ev: StagingEvent, rule: Rule) -> tuple[str, ...]:
        values = {
            "job_id": ev.job_id or "", "kind": ev.kind, "owner": ev.owner, "user": ev.user,
            "queue": ev.queue, "project": ev.project, "bytes": str(ev.bytes or 0),
            "files": str(ev.files or 0), "task_id": ev.task_id, "link": task_link(ev.task_id),
            "message": _one_line(redact(ev.message)), "action": _one_line(redact(ev.action)),
            "time": _fmt_time(ev.time), "rule": rule.name, "key": ev.dedup_key(),
        }

        def sub(m: re.Match) -> str:
            tok = m.group(0)
            if tok == "{{":
                return "{"
            if tok == "}}":
                return "}"
            return values.get(m.group(1), tok)

        # Each argument is substituted on its own and passed as one argv element:
        # a value like "$(rm -rf ~)" stays literal text, as no shell is involved.
        return tuple(_PLACEHOLDER_RE.sub(sub, arg).replace("\0", "") for arg in template)

    def _log_event(self, ev: StagingEvent, rule: Rule) -> None:
        level = logging.WARNING if ev.kind in (
            Kind.STAGEIN_FAILED, Kind.STAGEOUT_FAILED, Kind.USER_ACTION, Kind.SLOW,
            Kind.AGENT_UNHEALTHY, Kind.GLOBUS_UNREACHABLE) else logging.INFO
        log.log(level, "alert %s: %s%s%s%s", rule.name, ev.kind,
                f" job={ev.job_id}" if ev.job_id else "",
                f" task={ev.task_id}" if ev.task_id else "",
                f": {_one_line(redact(ev.message))}" if ev.message else "")
