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
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import socket
import textwrap
import urllib.parse
from dataclasses import dataclass, field, fields, replace
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from . import events, units
from .errors import ConfigError
# mail is the transport and knows nothing of rules: the dependency runs this way only.
from .mail import Delivery, MailSettings, parse_mail_settings, redact, valid_address

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- events

# One list, in events.py: a rule `on:` anything else is refused at config load.
EVENT_KINDS = events.KINDS
SITE_KINDS = events.SITE_KINDS

# kind -> (what happened, in a subject line; what to do when the event has no action)
_KIND_TEXT = {
    "stagein_submitted": ("stage-in submitted",
                          "Nothing. The job stays held until its input data has arrived."),
    "stagein_succeeded": ("stage-in done",
                          "Nothing. The job has been released to the scheduler."),
    "stagein_failed": ("stage-in failed",
                       "Read Globus's message above and the job comment (qstat -f JOB). "
                       "Fix the cause (path, permissions, collection), then submit the job "
                       "again; delete the held job with qdel if it is still queued."),
    "user_action": ("stage-in waiting for you",
                    "Globus needs you to log in again or to give consent. Run the command "
                    "shown in the job comment (qstat -f JOB); staging resumes by itself "
                    "afterwards."),
    "slow": ("staging is not progressing",
             "Check the transfer on the Globus web page below. Nothing to do if the other "
             "side is just slow; qdel the job to give up."),
    "stageout_submitted": ("stage-out submitted", "Nothing."),
    "stageout_succeeded": ("stage-out done", "Nothing. Your results are at their destination."),
    "stageout_failed": ("stage-out failed",
                        "Your results are still on the site's file system. Read Globus's "
                        "message above, then copy them yourself (globus transfer) before the "
                        "site's purge policy removes them."),
    "job_deleted": ("job deleted during staging",
                    "Nothing, if you deleted it on purpose. Its transfer is no longer needed."),
    "agent_unhealthy": ("staging agent unhealthy",
                        "Check the agent's log on the PBS server host and run "
                        "`globus-staging agent --once` there to see the error."),
    "globus_unreachable": ("Globus unreachable",
                           "Staging is paused and resumes by itself when Globus answers. "
                           "Check the network from the PBS server host and "
                           "https://status.globus.org."),
}

GLOBUS_ACTIVITY_URL = "https://app.globus.org/activity/"
PBS_DEFAULT_MAIL_POINTS = "a"


@dataclass(frozen=True)
class StagingEvent:
    """Something the agent saw.  ``job_id`` is None for site-wide events.

    ``message`` is what happened (Globus's own text where there is one),
    ``action`` what the reader should do next (empty: a default per kind).
    ``mail_users`` / ``mail_points`` are the job's ``-M`` / ``-m``.
    ``key`` overrides :meth:`dedup_key`; for a persistent condition it should
    change when the condition ends and a new one begins.
    """

    kind: str
    job_id: str | None = None
    owner: str = ""
    queue: str = ""
    project: str = ""
    bytes: int = 0
    files: int = 0
    task_id: str = ""
    message: str = ""
    action: str = ""
    time: float | None = None
    mail_users: Sequence[str] = ()
    mail_points: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown staging event kind {self.kind!r} "
                             f"(expected one of: {', '.join(EVENT_KINDS)})")
        users = self.mail_users
        if isinstance(users, str):  # PBS keeps Mail_Users as "a@x,b@y"
            users = users.split(",")
        object.__setattr__(self, "mail_users",
                           tuple(u.strip() for u in (users or ()) if u and u.strip()))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StagingEvent:
        """From the agent's event dicts: unknown keys ignored, None means unset."""
        kw = {k: v for k, v in data.items() if k in _EVENT_FIELDS and v is not None}
        return cls(**kw)

    def dedup_key(self) -> str:
        return self.key or f"{self.job_id or '-'}:{self.kind}:{self.task_id or '-'}"

    @property
    def effective_mail_points(self) -> str:
        return self.mail_points or PBS_DEFAULT_MAIL_POINTS

    @property
    def user(self) -> str:
        """The owner's user name (PBS's Job_Owner is ``user@submithost``)."""
        return self.owner.partition("@")[0]


_EVENT_FIELDS = frozenset(f.name for f in fields(StagingEvent))

# --------------------------------------------------------------------------- rules

ACTION_WORDS = ("mail_owner", "mail_admins", "log")
MAIL_POINTS = "abe"
PLACEHOLDERS = ("job_id", "kind", "owner", "user", "queue", "project", "bytes", "files",
                "task_id", "link", "message", "action", "time", "rule", "key")
_PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_TASK_ID_RE = re.compile(r"^[0-9A-Za-z-]{1,64}$")
MIN_REPEAT = 60.0


@dataclass(frozen=True)
class Action:
    kind: str                               # mail_owner | mail_admins | mail | log | command
    argv: tuple[str, ...] = ()              # command
    addresses: tuple[str, ...] = ()         # mail

    @property
    def label(self) -> str:
        """Stable name of the action inside its rule, part of the ledger's rule id.

        Commands and fixed addresses are named by a digest of their content, so
        reordering ``do:`` does not resend anything, but changing a command does.
        """
        if self.kind == "command":
            return "command:" + _digest(self.argv)
        if self.kind == "mail":
            return "mail:" + _digest(self.addresses)
        return self.kind


def _digest(items: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Conditions:
    users: frozenset[str] | None = None
    queues: frozenset[str] | None = None
    projects: frozenset[str] | None = None
    min_bytes: int = 0

    def matches(self, ev: StagingEvent) -> bool:
        if self.users is not None and ev.user not in self.users:
            return False
        if self.queues is not None and ev.queue not in self.queues:
            return False
        if self.projects is not None and ev.project not in self.projects:
            return False
        return (ev.bytes or 0) >= self.min_bytes


@dataclass(frozen=True)
class Rule:
    name: str
    on: frozenset[str]
    do: tuple[Action, ...]
    when: Conditions = field(default_factory=Conditions)
    mail_point: str | None = None
    repeat: float | None = None  # seconds; only for process_persistent

    def applies(self, ev: StagingEvent) -> bool:
        if ev.kind not in self.on or not self.when.matches(ev):
            return False
        if self.mail_point is not None:
            # A job event whose -m lacks the point; site-wide events have no -m.
            if ev.job_id is None or self.mail_point not in ev.effective_mail_points:
                return False
        return True


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[Rule, ...]
    admins: tuple[str, ...] = ()
    mail: MailSettings = field(default_factory=MailSettings)
    mail_domain: str | None = None      # like PBS's server attribute mail_domain
    command_timeout: float = 30.0
    retry_for: float = 86400.0          # give up on a failing delivery this long after it was due
    max_attempts: int = 20              # ... or after this many failed tries by one agent process


_TOP_KEYS = ("admins", "mail", "mail_domain", "rules", "command_timeout", "retry_for",
             "max_attempts")
_RULE_KEYS = ("name", "on", "when", "do", "mail_point", "repeat")
_WHEN_KEYS = ("users", "queues", "projects", "min_bytes")

DEFAULT_RULES: tuple[Mapping[str, Any], ...] = (
    {"name": "owner-failed", "on": ["stagein_failed", "stageout_failed"],
     "do": ["mail_owner", "log"]},
    {"name": "owner-user-action", "on": ["user_action"],
     "do": ["mail_owner", "log"], "repeat": "6h"},
    {"name": "admins-site", "on": ["agent_unhealthy", "globus_unreachable"],
     "do": ["mail_admins", "log"], "repeat": "6h"},
    {"name": "log-trouble", "on": ["slow", "job_deleted"], "do": ["log"]},
)


def parse_duration(value: Any) -> float:
    """Seconds, > 0, from the site's one duration grammar (``units``): ``90``,
    ``"30m"``, ``"1.5h"``, ``"1h30m"``, ``"1w"``.  ValueError otherwise."""
    seconds = units.parse_duration(value)
    if seconds <= 0:
        raise units.DurationError(value)
    return seconds


def parse_rules(data: Any, *, source: str) -> AlertConfig:
    """Validate the site config's ``alerts:`` section (None: all defaults).

    Raises ConfigError with one line naming the file, the key and the
    expected form.  ``rules`` absent means the built-in defaults;
    ``rules: []`` means no alerts at all.
    """
    def err(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: alerts.{key}: {problem}")

    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: alerts: expected a mapping with admins, mail, rules")
    unknown = sorted(str(k) for k in data if k not in _TOP_KEYS)
    if unknown:
        raise err(unknown[0], f"unknown key (expected one of: {', '.join(_TOP_KEYS)})")

    admins = _address_list(data.get("admins"), lambda p: err("admins", p))
    mail = parse_mail_settings(data.get("mail"), source=source)
    mail_domain = data.get("mail_domain")
    if mail_domain is not None and (not isinstance(mail_domain, str)
                                    or not re.match(r"^[A-Za-z0-9.-]+$", mail_domain)):
        raise err("mail_domain", f"{mail_domain!r} is not a domain (expected like example.org)")
    kw: dict[str, Any] = {}
    for key, lo, hi in (("command_timeout", 0.1, 600), ("retry_for", 60, 30 * 86400)):
        if key in data:
            try:
                seconds = parse_duration(data[key])
            except ValueError:
                raise err(key, f"{data[key]!r} is not a duration (expected "
                          f"{units.DURATION_FORM})") from None
            if not lo <= seconds <= hi:
                raise err(key, f"{data[key]!r} is out of range ({lo:g} s to {hi:g} s)")
            kw[key] = seconds
    if "max_attempts" in data:
        n = data["max_attempts"]
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
            raise err("max_attempts", f"{n!r} is not a count (expected 1-1000)")
        kw["max_attempts"] = n

    if "rules" in data:
        raw_rules = data["rules"]
        if raw_rules is None:
            raw_rules = []
        if not isinstance(raw_rules, list):
            raise err("rules", "expected a list of rules (- name: ..., on: [...], do: [...])")
        rules = tuple(_parse_rule(r, i, err, have_admins=bool(admins))
                      for i, r in enumerate(raw_rules))
    else:
        rules = _default_rules(have_admins=bool(admins), err=err)
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise err("rules", f"rule name {dupes[0]!r} is used twice (names must be unique)")
    return AlertConfig(rules=rules, admins=admins, mail=mail, mail_domain=mail_domain, **kw)


def _default_rules(*, have_admins: bool, err: Callable[[str, str], ConfigError]
                   ) -> tuple[Rule, ...]:
    out = []
    for i, raw in enumerate(DEFAULT_RULES):
        raw = dict(raw)
        if not have_admins:  # nobody to tell; the log line still records it
            raw["do"] = [a for a in raw["do"] if a != "mail_admins"]
        out.append(_parse_rule(raw, i, err, have_admins=have_admins))
    return tuple(out)


def _address_list(value: Any, bad: Callable[[str], ConfigError]) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise bad("expected a list of mail addresses")
    for addr in value:
        if not valid_address(addr):
            raise bad(f"{addr!r} is not a mail address (expected user@host)")
    return tuple(value)


def _str_set(value: Any, bad: Callable[[str], ConfigError]) -> frozenset[str]:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad("expected a non-empty list of names")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise bad("expected a list of names")
    return frozenset(str(v) for v in value)


def _parse_rule(raw: Any, i: int, err: Callable[[str, str], ConfigError], *,
                have_admins: bool) -> Rule:
    where = f"rules[{i}]"
    if not isinstance(raw, Mapping):
        raise err(where, "expected a mapping with name, on, do")
    # YAML 1.1 (PyYAML) reads a bare `on:` key as the boolean True.
    raw = {("on" if k is True else k): v for k, v in raw.items()}
    unknown = sorted(str(k) for k in raw if k not in _RULE_KEYS)
    if unknown:
        raise err(f"{where}.{unknown[0]}", f"unknown key (expected one of: {', '.join(_RULE_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise err(f"{where}.name", f"{name!r} is not a rule name "
                  "(expected letters, digits, '-', '_', '.'; at most 64)")
    where = f"rules[{i}] ({name})"

    on = raw.get("on")
    if isinstance(on, str):
        on = [on]
    if not isinstance(on, list) or not on:
        raise err(f"{where}.on", "expected a list of event kinds, e.g. [stagein_failed]")
    kinds = set()
    for kind in on:
        if kind in ("*", "all"):
            kinds.update(EVENT_KINDS)
        elif kind in EVENT_KINDS:
            kinds.add(kind)
        else:
            raise err(f"{where}.on", f"{kind!r} is not an event kind "
                      f"(expected one of: {', '.join(EVENT_KINDS)}, or all)")

    when = Conditions()
    if raw.get("when") is not None:
        w = raw["when"]
        if not isinstance(w, Mapping):
            raise err(f"{where}.when", "expected a mapping with users, queues, projects, min_bytes")
        bad_keys = sorted(str(k) for k in w if k not in _WHEN_KEYS)
        if bad_keys:
            raise err(f"{where}.when.{bad_keys[0]}",
                      f"unknown condition (expected one of: {', '.join(_WHEN_KEYS)})")
        ckw: dict[str, Any] = {}
        for key in ("users", "queues", "projects"):
            if key in w:
                ckw[key] = _str_set(w[key], lambda p, key=key: err(f"{where}.when.{key}", p))
        if "min_bytes" in w:
            mb = w["min_bytes"]
            if not isinstance(mb, int) or isinstance(mb, bool) or mb < 0:
                raise err(f"{where}.when.min_bytes", f"{mb!r} is not a byte count (expected an "
                          "integer >= 0)")
            ckw["min_bytes"] = mb
        when = Conditions(**ckw)

    do = raw.get("do")
    if isinstance(do, (str, Mapping)):
        do = [do]
    if not isinstance(do, list) or not do:
        raise err(f"{where}.do", "expected a list of actions: mail_owner, mail_admins, log, "
                  "{mail: [addresses]}, {command: [/abs/program, args...]}")
    actions = []
    for j, a in enumerate(do):
        actions.append(_parse_action(a, f"{where}.do[{j}]", err, have_admins=have_admins))
    labels = [a.label for a in actions]
    if len(set(labels)) != len(labels):
        raise err(f"{where}.do", "the same action is listed twice")

    mail_point = raw.get("mail_point")
    if mail_point is not None and (not isinstance(mail_point, str) or mail_point not in MAIL_POINTS
                                   or len(mail_point) != 1):
        raise err(f"{where}.mail_point", f"{mail_point!r} is not a mail point "
                  "(expected a (abort), b (begin) or e (end), as in qsub -m)")
    repeat = None
    if raw.get("repeat") is not None:
        try:
            repeat = parse_duration(raw["repeat"])
        except ValueError:
            raise err(f"{where}.repeat", f"{raw['repeat']!r} is not a duration "
                      f"(expected {units.DURATION_FORM})") from None
        if repeat < MIN_REPEAT:
            raise err(f"{where}.repeat", f"{raw['repeat']!r} is too short (at least 1m)")
    return Rule(name=name, on=frozenset(kinds), do=tuple(actions), when=when,
                mail_point=mail_point, repeat=repeat)


def _parse_action(a: Any, where: str, err: Callable[[str, str], ConfigError], *,
                  have_admins: bool) -> Action:
    if isinstance(a, str):
        if a not in ACTION_WORDS:
            raise err(where, f"{a!r} is not an action (expected mail_owner, mail_admins, log, "
                      "{mail: [...]} or {command: [...]})")
        if a == "mail_admins" and not have_admins:
            raise err(where, "mail_admins needs a list of addresses in alerts.admins")
        return Action(kind=a)
    if isinstance(a, Mapping) and len(a) == 1:
        (kind, value), = a.items()
        if kind == "mail":
            addrs = _address_list(value, lambda p: err(f"{where}.mail", p))
            if not addrs:
                raise err(f"{where}.mail", "expected a non-empty list of mail addresses")
            return Action(kind="mail", addresses=addrs)
        if kind == "command":
            if (not isinstance(value, list) or not value
                    or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                               for x in value)):
                raise err(f"{where}.command", "expected an argument list like "
                          "[/usr/local/bin/notify, '{job_id}', '{kind}'] (no shell)")
            argv = tuple(str(x) for x in value)
            if not os.path.isabs(argv[0]):
                raise err(f"{where}.command", f"{argv[0]!r} is not an absolute path "
                          "(the program runs without a shell or PATH search)")
            for arg in argv:
                if "\0" in arg:
                    raise err(f"{where}.command", "arguments may not contain NUL")
                for m in _PLACEHOLDER_RE.finditer(arg):
                    if m.group(1) is not None and m.group(1) not in PLACEHOLDERS:
                        raise err(f"{where}.command", f"unknown placeholder {{{m.group(1)}}} "
                                  f"(expected one of: {', '.join(PLACEHOLDERS)}; "
                                  "write {{ and }} for literal braces)")
            return Action(kind="command", argv=argv)
    raise err(where, "expected mail_owner, mail_admins, log, {mail: [addresses]} or "
              "{command: [/abs/program, args...]}")


# --------------------------------------------------------------------------- deliveries

SENT = "sent"
FAILED = "failed"            # will be tried again next cycle
DEFERRED = "deferred"        # not tried: the mail transport failed earlier in this cycle
ABANDONED = "abandoned"      # failed, and no more tries (recorded in the ledger)
SUPPRESSED = "suppressed"    # not sent on purpose (-m n, no usable address)


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
            "stagein_failed", "stageout_failed", "user_action", "slow", "agent_unhealthy",
            "globus_unreachable") else logging.INFO
        log.log(level, "alert %s: %s%s%s%s", rule.name, ev.kind,
                f" job={ev.job_id}" if ev.job_id else "",
                f" task={ev.task_id}" if ev.task_id else "",
                f": {_one_line(redact(ev.message))}" if ev.message else "")


# --------------------------------------------------------------------------- agent wiring

# Conditions rather than moments: repeat rules apply when the agent reports them again.
PERSISTENT_KINDS = frozenset({"user_action", "slow", "agent_unhealthy", "globus_unreachable"})


def sink_for_agent(site_config: Any, *, journal: Ledger,
                   clock: Callable[[], float] | None = None) -> Callable[[list], None]:
    """The callable the agent hands its event dicts to at the end of a cycle.

    Raises ConfigError at startup for a bad ``alerts:`` section; afterwards
    never raises (bad events are logged and skipped).
    """
    import time as _time

    from .mail import Deliverer

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
