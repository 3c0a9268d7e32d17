"""parse_rules: the alerts: section of the site config, as YAML really loads it."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pbs_globus_staging.alerts import (EVENT_KINDS, AlertEngine, StagingEvent, parse_duration,
                                       parse_rules)
from pbs_globus_staging.errors import ConfigError

DOC = Path(__file__).resolve().parents[2] / "docs" / "alerts.md"
SRC = "/etc/pbs-globus-staging/site.yaml"


def load(text: str):
    return parse_rules(yaml.safe_load(text)["alerts"], source=SRC)


def test_doc_example_parses():
    """The example in docs/alerts.md is valid (PyYAML reads a bare `on:` as True)."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    cfg = load(blocks[0])
    assert [r.name for r in cfg.rules] == ["owner-failures", "owner-waiting",
                                           "big-project-failures", "owner-done", "site"]
    assert cfg.admins == ("hpc-admin@example.org",)
    assert cfg.mail_domain == "example.org"
    assert cfg.mail.sender == "pbs-staging@example.org"
    waiting = cfg.rules[1]
    assert waiting.on == {"user_action"} and waiting.repeat == 6 * 3600
    big = cfg.rules[2]
    assert big.when.projects == {"climate"} and big.when.min_bytes == 10**12
    assert [a.kind for a in big.do] == ["mail", "command"]
    assert big.do[1].argv == ("/usr/local/bin/notify", "--job={job_id}", "{kind}", "{link}")
    assert cfg.rules[3].mail_point == "e"
    smtp = parse_rules({"mail": yaml.safe_load(blocks[1])["mail"]}, source=SRC).mail
    assert (smtp.method, smtp.port, smtp.starttls) == ("smtp", 587, True)


def test_defaults_when_rules_absent_and_none_when_empty():
    cfg = parse_rules(None, source=SRC)
    assert {r.name for r in cfg.rules} == {"owner-failed", "owner-user-action", "admins-site",
                                           "log-trouble"}
    by = {r.name: r for r in cfg.rules}
    assert by["owner-failed"].on == {"stagein_failed", "stageout_failed"}
    assert by["owner-user-action"].repeat == 6 * 3600
    assert [a.kind for a in by["admins-site"].do] == ["log"]       # no admins configured
    with_admins = parse_rules({"admins": ["root@x.org"]}, source=SRC)
    assert [a.kind for a in {r.name: r for r in with_admins.rules}["admins-site"].do] == \
        ["mail_admins", "log"]
    assert parse_rules({"rules": []}, source=SRC).rules == ()


def test_on_all_and_single_strings():
    cfg = load("alerts:\n  rules:\n    - {name: x, on: all, do: log}\n")
    assert cfg.rules[0].on == set(EVENT_KINDS)


@pytest.mark.parametrize("value,seconds", [("90s", 90), ("30m", 1800), ("6h", 21600),
                                           ("1d", 86400), ("1h30m", 5400), (120, 120)])
def test_parse_duration(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("yaml_text,key,expect", [
    ("alerts: [1]", "alerts", "expected a mapping"),
    ("alerts: {colour: red}", "alerts.colour", "unknown key"),
    ("alerts: {admins: [not an address]}", "alerts.admins", "not a mail address"),
    ("alerts: {mail_domain: 'a b'}", "alerts.mail_domain", "not a domain"),
    ("alerts: {retry_for: soon}", "alerts.retry_for", "not a duration"),
    ("alerts: {command_timeout: 2h}", "alerts.command_timeout", "out of range"),
    ("alerts: {max_attempts: 0}", "alerts.max_attempts", "expected 1-1000"),
    ("alerts: {rules: {name: x}}", "alerts.rules", "expected a list"),
    ("alerts: {rules: [{on: [slow], do: [log]}]}", "alerts.rules[0].name", "not a rule name"),
    ("alerts: {rules: [{name: 'a b', on: [slow], do: [log]}]}", "alerts.rules[0].name",
     "not a rule name"),
    ("alerts: {rules: [{name: x, do: [log]}]}", "alerts.rules[0] (x).on", "expected a list"),
    ("alerts: {rules: [{name: x, on: [stagein_exploded], do: [log]}]}",
     "alerts.rules[0] (x).on", "'stagein_exploded' is not an event kind"),
    ("alerts: {rules: [{name: x, on: [slow]}]}", "alerts.rules[0] (x).do", "expected a list"),
    ("alerts: {rules: [{name: x, on: [slow], do: [page_everyone]}]}",
     "alerts.rules[0] (x).do[0]", "not an action"),
    ("alerts: {rules: [{name: x, on: [slow], do: [mail_admins]}]}",
     "alerts.rules[0] (x).do[0]", "needs a list of addresses in alerts.admins"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log, log]}]}",
     "alerts.rules[0] (x).do", "listed twice"),
    ("alerts: {rules: [{name: x, on: [slow], do: [{command: notify}]}]}",
     "alerts.rules[0] (x).do[0].command", "argument list"),
    ("alerts: {rules: [{name: x, on: [slow], do: [{command: [notify, x]}]}]}",
     "alerts.rules[0] (x).do[0].command", "not an absolute path"),
    ("alerts: {rules: [{name: x, on: [slow], do: [{command: [/bin/echo, '{job_id.__class__}']}]}]}",
     "alerts.rules[0] (x).do[0].command", "unknown placeholder"),
    ("alerts: {rules: [{name: x, on: [slow], do: [{mail: []}]}]}",
     "alerts.rules[0] (x).do[0].mail", "non-empty"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], mail_point: n}]}",
     "alerts.rules[0] (x).mail_point", "not a mail point"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], mail_point: ab}]}",
     "alerts.rules[0] (x).mail_point", "not a mail point"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], repeat: 10s}]}",
     "alerts.rules[0] (x).repeat", "too short"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], repeat: often}]}",
     "alerts.rules[0] (x).repeat", "not a duration"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], when: {users: []}}]}",
     "alerts.rules[0] (x).when.users", "non-empty"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], when: {hosts: [a]}}]}",
     "alerts.rules[0] (x).when.hosts", "unknown condition"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], when: {min_bytes: -1}}]}",
     "alerts.rules[0] (x).when.min_bytes", "not a byte count"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log], then: [log]}]}",
     "alerts.rules[0].then", "unknown key"),
    ("alerts: {rules: [{name: x, on: [slow], do: [log]}, {name: x, on: [slow], do: [log]}]}",
     "alerts.rules", "used twice"),
    ("alerts: {mail: {method: pigeon}}", "alerts.mail.method", "not a mail method"),
])
def test_config_errors(yaml_text, key, expect):
    with pytest.raises(ConfigError) as exc:
        load(yaml_text)
    text = str(exc.value)
    assert text.startswith(f"{SRC}: {key}: "), text
    assert expect in text
    assert "\n" not in text


def test_unknown_placeholder_not_substituted_at_runtime():
    """Only known names are placeholders; validated config cannot reach attributes."""
    cfg = load("alerts:\n  rules:\n    - {name: x, on: [slow], do: [{command: "
               "['/bin/echo', '{{job_id}}', '{job_id}{kind}']}]}\n")
    eng = AlertEngine(cfg, ledger=None, deliver=lambda d: None, hostname="h")
    argv = eng._argv(cfg.rules[0].do[0].argv, StagingEvent(kind="slow", job_id="5.s"),
                     cfg.rules[0])
    assert argv == ("/bin/echo", "{job_id}", "5.sslow")
