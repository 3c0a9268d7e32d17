"""The site's ``alerts:`` section: rules, actions, conditions, validated at load."""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .. import units
from ..errors import ConfigError
from ..events import Kind
from ..mail import MailSettings, parse_mail_settings, valid_address
from .event import EVENT_KINDS, StagingEvent

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
    {"name": "owner-failed", "on": [Kind.STAGEIN_FAILED, Kind.STAGEOUT_FAILED],
     "do": ["mail_owner", "log"]},
    {"name": "owner-user-action", "on": [Kind.USER_ACTION],
     "do": ["mail_owner", "log"], "repeat": "6h"},
    {"name": "admins-site", "on": [Kind.AGENT_UNHEALTHY, Kind.GLOBUS_UNREACHABLE],
     "do": ["mail_admins", "log"], "repeat": "6h"},
    {"name": "log-trouble", "on": [Kind.SLOW, Kind.JOB_DELETED], "do": ["log"]},
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
