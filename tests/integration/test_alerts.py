"""AlertEngine end to end: rules -> deliveries -> a real SMTP server (aiosmtpd on
loopback) or a real sendmail/command subprocess; dedup through the ledger
(in-memory fake and the real SQLite journal)."""
from __future__ import annotations

import logging

import pytest

from alerts_helpers import FakeLedger, free_port, smtp_server, start_smtp, write_script  # noqa: F401
from pbs_globus_staging import alerts
from pbs_globus_staging.alerts import (ABANDONED, DEFERRED, EVENT_KINDS, FAILED, SENT, SITE_KINDS,
                                       SUPPRESSED, AlertEngine, StagingEvent, parse_rules)
from pbs_globus_staging.mail import Deliverer, MailError, SendmailMailer, SmtpMailer

T0 = 1_800_000_000.0
TASK = "8f4c2a1e-1111-2222-3333-444455556666"
HOUR = 3600.0


def ev(kind="stagein_failed", **kw) -> StagingEvent:
    base = dict(job_id="123.pbs01", owner="alice@login1", queue="workq", project="climate",
                task_id=TASK, bytes=5 * 2**30, files=12, time=T0,
                message="Permission denied on /eagle/climate/in (EndpointPermissionDenied)")
    if kind in SITE_KINDS:
        base = dict(time=T0, message="3 cycles failed")
    base.update(kw)
    return StagingEvent(kind=kind, **base)


def engine_for(server, rules=None, *, ledger=None, **cfg):
    data = {"admins": ["hpc-admin@example.org"],
            "mail": {"method": "smtp", "host": server.host, "port": server.port,
                     "from": "pbs-staging@example.org", "timeout": 3}}
    if rules is not None:
        data["rules"] = rules
    data.update(cfg)
    config = parse_rules(data, source="test.yaml")
    ledger = ledger if ledger is not None else FakeLedger()
    deliver = Deliverer.from_config(config)
    return AlertEngine(config, ledger=ledger, deliver=deliver, hostname="pbs01"), ledger


def rcpts(server):
    return [sorted(m.rcpt_tos) for m in server.messages]


# ----------------------------------------------------------------------------- once per event

@pytest.mark.parametrize("kind", EVENT_KINDS)
def test_each_kind_fires_exactly_once(smtp_server, kind):
    eng, ledger = engine_for(smtp_server, [
        {"name": "everything", "on": ["all"], "do": ["mail_owner", "mail_admins"]}])
    e = ev(kind)
    first = eng.process([e], now=T0)
    second = eng.process([e], now=T0 + 60)
    assert second == []
    expected = [["hpc-admin@example.org"]] if kind in SITE_KINDS else \
        [["alice@login1"], ["hpc-admin@example.org"]]
    assert sorted(rcpts(smtp_server)) == expected
    assert [d.status for d in first] == [SENT] * len(expected)
    title = alerts._KIND_TEXT[kind][0]
    for m in smtp_server.messages:
        subject = m.msg["Subject"]
        body = m.msg.get_content()
        assert subject.startswith("[PBS staging] ")
        assert title in subject
        assert e.message in body
        assert "What to do next:" in body
        assert m.msg["X-PBS-Staging-Event"] == kind
        if kind not in SITE_KINDS:
            assert subject == f"[PBS staging] job 123.pbs01: {title}"
            assert f"https://app.globus.org/activity/{TASK}" in body
            assert "Job:       123.pbs01 (owner alice@login1, queue workq, project climate)" in body
            assert "5.0 GiB in 12 files" in body
        else:
            assert "on pbs01" in subject
    assert len(ledger.marks) == len(expected)


def test_body_carries_the_events_action_and_redacts_secrets(smtp_server):
    eng, _ = engine_for(smtp_server)
    e = ev("user_action", message="token expired: Bearer eyJhbGciOi.secret.sig",
           action="globus login --gcs 6a1c...  then wait; staging resumes")
    eng.process([e], now=T0)
    [m] = smtp_server.messages
    body = m.msg.get_content()
    assert "eyJhbGciOi" not in body and "Bearer [redacted]" in body
    assert "globus login --gcs 6a1c..." in body
    assert m.msg["Subject"] == "[PBS staging] job 123.pbs01: stage-in waiting for you"


def test_distinct_events_each_fire(smtp_server):
    eng, _ = engine_for(smtp_server)
    eng.process([ev(job_id="1.s"), ev(job_id="2.s"), ev(job_id="1.s", task_id="other")], now=T0)
    assert len(smtp_server.messages) == 3


def test_new_engine_same_ledger_does_not_resend(smtp_server):
    """Agent restart: the ledger (journal) remembers what went out."""
    eng, ledger = engine_for(smtp_server)
    eng.process([ev(), ev("agent_unhealthy")], now=T0)
    assert len(smtp_server.messages) == 2
    eng2, _ = engine_for(smtp_server, ledger=ledger)
    assert eng2.process([ev(), ev("agent_unhealthy")], now=T0 + 10) == []
    assert eng2.process_persistent([ev("agent_unhealthy")], now=T0 + 10) == []
    assert len(smtp_server.messages) == 2


# ----------------------------------------------------------------------------- defaults

def test_default_rules(smtp_server, caplog):
    eng, _ = engine_for(smtp_server)
    caplog.set_level(logging.INFO, logger="pbs_globus_staging.alerts")
    eng.process([ev("stagein_succeeded"), ev("stagein_submitted"), ev("stageout_submitted")],
                now=T0)
    assert smtp_server.messages == []
    eng.process([ev("stagein_failed"), ev("stageout_failed", task_id="t2"),
                 ev("globus_unreachable"), ev("slow")], now=T0)
    assert rcpts(smtp_server) == [["alice@login1"], ["alice@login1"], ["hpc-admin@example.org"]]
    logged = caplog.text
    assert "alert owner-failed: stagein_failed job=123.pbs01" in logged
    assert "alert log-trouble: slow job=123.pbs01" in logged


def test_defaults_without_admins_only_log(smtp_server):
    config = parse_rules({"mail": {"method": "smtp", "host": smtp_server.host,
                                   "port": smtp_server.port}}, source="t")
    eng = AlertEngine(config, ledger=FakeLedger(), deliver=Deliverer.from_config(config))
    [d] = eng.process([ev("agent_unhealthy")], now=T0)
    assert d.channel == "log" and d.status == SENT
    assert smtp_server.messages == []


# ----------------------------------------------------------------------------- suppression

def test_m_n_suppresses_owner_mail_not_admin_mail(smtp_server):
    eng, ledger = engine_for(smtp_server, [
        {"name": "r", "on": ["stagein_failed"], "do": ["mail_owner", "mail_admins"]}])
    out = eng.process([ev(mail_points="n")], now=T0)
    assert rcpts(smtp_server) == [["hpc-admin@example.org"]]
    assert [(d.action, d.status) for d in out] == [("mail_owner", SUPPRESSED),
                                                   ("mail_admins", SENT)]
    assert "-m n" in out[0].error
    # A suppressed mail is not recorded: if the user qalters -m back on, it goes out.
    assert ("r/mail_owner", ev().dedup_key()) not in ledger.rows


@pytest.mark.parametrize("when,fires", [
    ({"users": ["alice"]}, True),
    ({"users": ["bob"]}, False),
    ({"queues": ["workq", "debug"]}, True),
    ({"queues": ["debug"]}, False),
    ({"projects": ["climate"]}, True),
    ({"projects": ["physics"]}, False),
    ({"min_bytes": 5 * 2**30}, True),
    ({"min_bytes": 5 * 2**30 + 1}, False),
    ({"users": ["alice"], "queues": ["debug"]}, False),
])
def test_rule_conditions(smtp_server, when, fires):
    eng, _ = engine_for(smtp_server, [
        {"name": "r", "on": ["stagein_failed"], "when": when, "do": ["mail_owner"]}])
    out = eng.process([ev()], now=T0)
    assert len(smtp_server.messages) == (1 if fires else 0)
    assert len(out) == (1 if fires else 0)


def test_conditions_never_match_site_events(smtp_server):
    eng, _ = engine_for(smtp_server, [
        {"name": "r", "on": ["agent_unhealthy"], "when": {"queues": ["workq"]},
         "do": ["mail_admins"]}])
    assert eng.process([ev("agent_unhealthy")], now=T0) == []


def test_dash_M_overrides_owner_address(smtp_server, caplog):
    eng, _ = engine_for(smtp_server, [{"name": "r", "on": ["stagein_failed"], "do": ["mail_owner"]}])
    eng.process([ev(mail_users=["bob@uni.edu", "carol@lab.gov", "bad addr\nBcc: x@y"])], now=T0)
    assert rcpts(smtp_server) == [["bob@uni.edu", "carol@lab.gov"]]
    assert smtp_server.messages[0].msg["To"] == "bob@uni.edu, carol@lab.gov"
    assert "ignoring unusable -M" in caplog.text


def test_dash_M_as_pbs_string(smtp_server):
    eng, _ = engine_for(smtp_server, [{"name": "r", "on": ["stagein_failed"], "do": ["mail_owner"]}])
    eng.process([ev(mail_users="bob@uni.edu,carol@lab.gov")], now=T0)
    assert rcpts(smtp_server) == [["bob@uni.edu", "carol@lab.gov"]]


@pytest.mark.parametrize("owner,mail_domain,expected", [
    ("alice@login1", None, "alice@login1"),
    ("alice@login1", "example.org", "alice@example.org"),
    ("alice", None, "alice@pbs01"),
])
def test_owner_address(smtp_server, owner, mail_domain, expected):
    cfg = {"mail_domain": mail_domain} if mail_domain else {}
    eng, _ = engine_for(smtp_server, [{"name": "r", "on": ["stagein_failed"],
                                       "do": ["mail_owner"]}], **cfg)
    eng.process([ev(owner=owner)], now=T0)
    assert rcpts(smtp_server) == [[expected]]


@pytest.mark.parametrize("points,fires", [("", False), ("a", False), ("abe", True),
                                          ("e", True), ("n", False)])
def test_mail_point_required(smtp_server, points, fires):
    """-m absent means PBS's default 'a', which lacks 'e'."""
    eng, _ = engine_for(smtp_server, [{"name": "r", "on": ["stageout_succeeded"],
                                       "mail_point": "e", "do": ["mail_owner", "log"]}])
    out = eng.process([ev("stageout_succeeded", mail_points=points)], now=T0)
    assert len(smtp_server.messages) == (1 if fires else 0)
    assert bool(out) == fires


def test_fixed_addresses_action(smtp_server):
    eng, _ = engine_for(smtp_server, [{"name": "r", "on": ["stagein_failed"],
                                       "do": [{"mail": ["data-team@example.org"]}]}])
    eng.process([ev(mail_points="n")], now=T0)   # -m n is about the owner only
    assert rcpts(smtp_server) == [["data-team@example.org"]]


# ----------------------------------------------------------------------------- repeat

def test_repeat_schedule(smtp_server):
    eng, ledger = engine_for(smtp_server)   # default: user_action repeats every 6h
    cond = ev("user_action")
    sent_at = []
    for t in (T0, T0 + 1 * HOUR, T0 + 5.9 * HOUR, T0 + 6 * HOUR, T0 + 7 * HOUR,
              T0 + 11.9 * HOUR, T0 + 12 * HOUR):
        if any(d.channel == "mail" and d.status == SENT
               for d in eng.process_persistent([cond], now=t)):
            sent_at.append((t - T0) / HOUR)
    assert sent_at == [0, 6, 12]
    assert len(smtp_server.messages) == 3
    assert ledger.rows[("owner-user-action/mail_owner", cond.dedup_key())][2] == 3


def test_one_off_events_never_repeat(smtp_server):
    eng, _ = engine_for(smtp_server)
    eng.process([ev("user_action")], now=T0)
    eng.process([ev("user_action")], now=T0 + 24 * HOUR)
    assert len(smtp_server.messages) == 1


def test_persistent_without_repeat_fires_once(smtp_server):
    eng, _ = engine_for(smtp_server, [{"name": "r", "on": ["slow"], "do": ["mail_owner"]}])
    for t in (T0, T0 + 24 * HOUR, T0 + 48 * HOUR):
        eng.process_persistent([ev("slow")], now=t)
    assert len(smtp_server.messages) == 1


def test_repeat_survives_restart(smtp_server):
    eng, ledger = engine_for(smtp_server)
    eng.process_persistent([ev("globus_unreachable")], now=T0)
    eng2, _ = engine_for(smtp_server, ledger=ledger)
    assert not [d for d in eng2.process_persistent([ev("globus_unreachable")], now=T0 + HOUR)]
    assert [d.status for d in eng2.process_persistent([ev("globus_unreachable")],
                                                      now=T0 + 6 * HOUR)
            if d.channel == "mail"] == [SENT]
    assert len(smtp_server.messages) == 2


# ----------------------------------------------------------------------------- failures

def test_smtp_down_then_up():
    port = free_port()
    config = parse_rules({"mail": {"method": "smtp", "host": "127.0.0.1", "port": port,
                                   "timeout": 2}}, source="t")
    ledger = FakeLedger()
    eng = AlertEngine(config, ledger=ledger, deliver=Deliverer.from_config(config))
    events = [ev(job_id="1.s"), ev(job_id="2.s")]
    out = eng.process(events, now=T0 + 60)   # nothing listens: must not raise
    mail = [d for d in out if d.channel == "mail"]
    assert [d.status for d in mail] == [FAILED, DEFERRED]
    assert "unreachable" in mail[0].error and "not tried" in mail[1].error
    assert not any(r.endswith("/mail_owner") for r, _ in ledger.rows)
    # The log action is independent of mail and went out (once).
    assert sum(1 for d in out if d.channel == "log" and d.status == SENT) == 2

    server = start_smtp(port)
    try:
        out = eng.process(events, now=T0 + 120)
        assert [d.status for d in out] == [SENT, SENT]   # only the mails; logs are done
        assert sorted(m.msg["X-PBS-Staging-Job"] for m in server.messages) == ["1.s", "2.s"]
        assert eng.process(events, now=T0 + 180) == []
    finally:
        server.stop()


class Flaky:
    def __init__(self, fail_times=10**9, exc=None):
        self.fail_times, self.calls = fail_times, 0
        self.exc = exc or MailError("550 mailbox unavailable")

    def __call__(self, delivery):
        self.calls += 1
        if self.calls <= self.fail_times:
            raise self.exc


def test_failed_delivery_retried_then_abandoned_after_retry_window():
    config = parse_rules({"retry_for": "1d", "rules": [
        {"name": "r", "on": ["stagein_failed"], "do": ["mail_owner"]}]}, source="t")
    ledger, deliver = FakeLedger(), Flaky()
    eng = AlertEngine(config, ledger=ledger, deliver=deliver)
    assert [d.status for d in eng.process([ev()], now=T0 + HOUR)] == [FAILED]
    # A new agent process (no in-memory counts) still retries...
    eng = AlertEngine(config, ledger=ledger, deliver=deliver)
    assert [d.status for d in eng.process([ev()], now=T0 + 2 * HOUR)] == [FAILED]
    assert ledger.rows == {}
    # ... until the event is a day past due: then it gives up, for good.
    [d] = eng.process([ev()], now=T0 + 25 * HOUR)
    assert d.status == ABANDONED and "550" in d.error
    assert eng.process([ev()], now=T0 + 26 * HOUR) == []
    assert deliver.calls == 3


def test_failed_delivery_bounded_by_attempts_without_event_time():
    config = parse_rules({"max_attempts": 3, "rules": [
        {"name": "r", "on": ["stagein_failed"], "do": ["mail_owner"]}]}, source="t")
    deliver = Flaky()
    eng = AlertEngine(config, ledger=FakeLedger(), deliver=deliver)
    statuses = [eng.process([ev(time=None)], now=T0 + i)[0].status if i < 3 else
                eng.process([ev(time=None)], now=T0 + i) for i in range(4)]
    assert statuses == [FAILED, FAILED, ABANDONED, []]
    assert deliver.calls == 3


def test_failure_then_success_is_marked_once():
    config = parse_rules({"rules": [{"name": "r", "on": ["stagein_failed"],
                                     "do": ["mail_owner"]}]}, source="t")
    ledger = FakeLedger()
    eng = AlertEngine(config, ledger=ledger, deliver=Flaky(fail_times=1))
    assert eng.process([ev()], now=T0)[0].status == FAILED
    assert eng.process([ev()], now=T0 + 60)[0].status == SENT
    assert ledger.marks == [("r/mail_owner", ev().dedup_key(), T0 + 60)]


def test_unexpected_exception_in_deliver_is_contained():
    config = parse_rules({"rules": [{"name": "r", "on": ["stagein_failed"],
                                     "do": ["mail_owner"]}]}, source="t")
    eng = AlertEngine(config, ledger=FakeLedger(),
                      deliver=Flaky(exc=RuntimeError("boom access_token=abc123")))
    [d] = eng.process([ev()], now=T0)
    assert d.status == FAILED and "boom" in d.error and "abc123" not in d.error


class BrokenLedger(FakeLedger):
    def alert_state(self, rule, key):
        raise OSError("database is locked")


def test_unreadable_ledger_sends_nothing_and_does_not_raise(caplog):
    config = parse_rules({}, source="t")
    deliver = Flaky(fail_times=0)
    eng = AlertEngine(config, ledger=BrokenLedger(), deliver=deliver)
    assert eng.process([ev()], now=T0) == []
    assert deliver.calls == 0
    assert "database is locked" in caplog.text


# ----------------------------------------------------------------------------- sendmail + commands

def test_sendmail_path_end_to_end(tmp_path):
    out = tmp_path / "mail.out"
    sendmail = write_script(tmp_path / "sendmail", f"#!/bin/sh\ncat > {out}\n")
    config = parse_rules({"mail": {"method": "sendmail", "sendmail": sendmail,
                                   "from": "pbs@example.org"}}, source="t")
    deliver = Deliverer.from_config(config)
    assert isinstance(deliver.mailer, SendmailMailer)
    eng = AlertEngine(config, ledger=FakeLedger(), deliver=deliver)
    eng.process([ev(mail_users=["bob@uni.edu"])], now=T0)
    text = out.read_text()
    assert "To: bob@uni.edu" in text
    assert "From: pbs@example.org" in text
    assert "Subject: [PBS staging] job 123.pbs01: stage-in failed" in text


def test_command_action_substitutes_args_without_shell(tmp_path):
    args = tmp_path / "args"
    prog = write_script(tmp_path / "notify", f"#!/bin/sh\nprintf '%s\\n' \"$@\" >> {args}\n")
    marker = tmp_path / "pwned"
    config = parse_rules({"rules": [{"name": "hook", "on": ["stagein_failed"], "do": [
        {"command": [prog, "{job_id}", "{kind}", "--task={task_id}", "{message}", "{{literal}}",
                     "{link}"]}]}]}, source="t")
    eng = AlertEngine(config, ledger=FakeLedger(), deliver=Deliverer.from_config(config))
    evil = f"$(touch {marker}); `touch {marker}` | rm -rf /"
    [d] = eng.process([ev(message=evil)], now=T0)
    assert d.status == SENT and d.channel == "command"
    assert args.read_text().splitlines() == [
        "123.pbs01", "stagein_failed", f"--task={TASK}", evil, "{literal}",
        f"https://app.globus.org/activity/{TASK}"]
    assert not marker.exists()
    eng.process([ev(message=evil)], now=T0 + 60)
    assert len(args.read_text().splitlines()) == 6   # ran once


def test_command_failure_and_timeout_are_reported_not_raised(tmp_path, caplog):
    failing = write_script(tmp_path / "fail", "#!/bin/sh\necho 'cannot reach pager' >&2\nexit 2\n")
    hanging = write_script(tmp_path / "hang", "#!/bin/sh\nexec sleep 10\n")
    config = parse_rules({"command_timeout": 0.3, "rules": [
        {"name": "a", "on": ["stagein_failed"], "do": [{"command": [failing]}]},
        {"name": "b", "on": ["stagein_failed"], "do": [{"command": [hanging]}]}]}, source="t")
    eng = AlertEngine(config, ledger=FakeLedger(), deliver=Deliverer.from_config(config))
    out = eng.process([ev()], now=T0)
    assert [d.status for d in out] == [FAILED, FAILED]
    assert "status 2: cannot reach pager" in out[0].error
    assert "did not finish within 0.3 s" in out[1].error
    assert "will retry" in caplog.text


# ----------------------------------------------------------------------------- real journal

def test_with_the_real_journal(smtp_server, tmp_path):
    from pbs_globus_staging.journal import Journal

    path = tmp_path / "journal.sqlite"
    with Journal.open(path) as journal:
        eng, _ = engine_for(smtp_server, ledger=journal)
        eng.process([ev()], now=T0)
        eng.process_persistent([ev("user_action")], now=T0)
    assert len(smtp_server.messages) == 2
    # "Agent restart": a fresh process opens the same journal.
    with Journal.open(path) as journal:
        eng, _ = engine_for(smtp_server, ledger=journal)
        assert [d for d in eng.process([ev()], now=T0 + 60) if d.channel == "mail"] == []
        assert eng.process_persistent([ev("user_action")], now=T0 + HOUR) == []
        out = eng.process_persistent([ev("user_action")], now=T0 + 6 * HOUR)
        assert [d.status for d in out if d.channel == "mail"] == [SENT]
        row = journal.alert_state("owner-user-action/mail_owner", ev("user_action").dedup_key())
        assert (row.first_sent, row.last_sent, row.count) == (T0, T0 + 6 * HOUR, 2)
    assert len(smtp_server.messages) == 3


def test_from_mapping_agent_event_dicts(smtp_server):
    eng, _ = engine_for(smtp_server)
    e = StagingEvent.from_mapping({"kind": "stagein_failed", "time": T0, "job_id": "7.s",
                                   "owner": "dave@login2", "mail_points": None,
                                   "mail_users": [], "unrelated": 1})
    eng.process([e], now=T0)
    assert rcpts(smtp_server) == [["dave@login2"]]


def test_unknown_event_kind_rejected():
    with pytest.raises(ValueError, match="unknown staging event kind"):
        StagingEvent(kind="stagein_exploded")


def test_smtp_mailer_is_used_for_smtp_config(smtp_server):
    eng, _ = engine_for(smtp_server)
    assert isinstance(eng.deliver.mailer, SmtpMailer)


def test_bare_sender_is_qualified_for_smtp(smtp_server):
    config = parse_rules({"mail": {"method": "smtp", "host": smtp_server.host,
                                   "port": smtp_server.port}}, source="t")
    deliver = Deliverer(SmtpMailer(smtp_server.host, smtp_server.port), sender=config.mail.sender,
                        hostname="pbs01.example.org")
    AlertEngine(config, ledger=FakeLedger(), deliver=deliver).process([ev()], now=T0)
    [m] = smtp_server.messages
    assert m.mail_from == "adm@pbs01.example.org" and m.msg["From"] == "adm@pbs01.example.org"


def test_sink_for_agent_with_site_config_and_journal(smtp_server, tmp_path):
    from types import SimpleNamespace

    from pbs_globus_staging.journal import Journal

    site = SimpleNamespace(source="/etc/site.yaml", alerts={
        "admins": ["ops@example.org"],
        "mail": {"method": "smtp", "host": smtp_server.host, "port": smtp_server.port}})
    clock = [T0]
    with Journal.open(tmp_path / "j.sqlite") as journal:
        sink = alerts.sink_for_agent(site, journal=journal, clock=lambda: clock[0])
        agent_events = [
            {"kind": "stagein_failed", "time": T0, "job_id": "9.s", "owner": "erin",
             "queue": "q", "project": "p", "mail_points": None, "mail_users": ["erin@uni.edu"],
             "message": "FILE_NOT_FOUND", "task_id": TASK},
            {"kind": "globus_unreachable", "time": T0, "message": "connection refused"},
            {"kind": "no_such_kind", "time": T0},
        ]
        sink(agent_events)
        sink(agent_events)                        # same events again: nothing new
        clock[0] = T0 + 6 * HOUR
        sink(agent_events[1:2])                   # condition still there after 6h: reminder
    assert rcpts(smtp_server) == [["erin@uni.edu"], ["ops@example.org"], ["ops@example.org"]]


def test_sink_for_agent_bad_config_is_one_line():
    from types import SimpleNamespace
    site = SimpleNamespace(source="/etc/site.yaml", alerts={"rules": [{"name": "x"}]})
    with pytest.raises(alerts.ConfigError) as exc:
        alerts.sink_for_agent(site, journal=FakeLedger())
    assert str(exc.value) == ("/etc/site.yaml: alerts.rules[0] (x).on: expected a list of "
                              "event kinds, e.g. [stagein_failed]")
