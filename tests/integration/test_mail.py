"""mail.py: sendmail (real subprocess, fake MTA script), SMTP (real aiosmtpd
server on loopback, with AUTH and STARTTLS), credentials file rules, commands."""
from __future__ import annotations

import os
import ssl
import time

import pytest

from alerts_helpers import free_port, make_cert, smtp_server, start_smtp, write_script  # noqa: F401
from pbs_globus_staging import mail
from pbs_globus_staging.errors import ConfigError
from pbs_globus_staging.mail import (CommandError, MailError, MailSettings, SendmailMailer,
                                     SmtpMailer, build_message, make_mailer,
                                     parse_mail_settings, read_credentials, run_command)


def _msg(to=("alice@example.org",), subject="[PBS staging] job 1.s: stage-in failed",
         body="hello\n.\nstill here\n"):
    return build_message(sender="pbs-staging@example.org", recipients=list(to),
                         subject=subject, body=body, hostname="pbs.example.org")


# ----------------------------------------------------------------------------- messages

def test_build_message_headers():
    msg = _msg(to=("a@x.org", "b@y.org"))
    assert msg["To"] == "a@x.org, b@y.org"
    assert msg["From"] == "pbs-staging@example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@pbs.example.org>")
    assert "still here" in msg.get_content()


def test_header_injection_is_refused():
    with pytest.raises(ValueError):
        build_message(sender="a@x.org", recipients=["b@y.org"], subject="x\nBcc: evil@z.org",
                      body="b")


def test_valid_address():
    assert mail.valid_address("alice") and mail.valid_address("alice@hpc.example.org")
    for bad in ("", "a b@x", "a@x\nBcc: y", "-oQ/tmp", "<a@x>", "a@x,b@y", "Alice <a@x>"):
        assert not mail.valid_address(bad), bad


def test_redact():
    text = mail.redact("Authorization: Bearer abc.DEF-1 access_token=s3cr3t&x=1 "
                       '{"refresh_token": "r3fr3sh"} password:hunter2')
    for secret in ("abc.DEF-1", "s3cr3t", "r3fr3sh", "hunter2"):
        assert secret not in text
    assert "x=1" in text


# ----------------------------------------------------------------------------- sendmail

@pytest.fixture
def fake_sendmail(tmp_path):
    out = tmp_path / "sendmail.out"
    args = tmp_path / "sendmail.args"
    path = write_script(tmp_path / "sendmail", f"""#!/bin/sh
printf '%s\\n' "$@" > {args}
cat > {out}
""")
    return path, out, args


def test_sendmail_pipes_message_with_t_oi(fake_sendmail):
    path, out, args = fake_sendmail
    SendmailMailer(path, sender="pbs-staging@example.org").send(_msg())
    assert args.read_text().split("\n")[:4] == ["-t", "-oi", "-f", "pbs-staging@example.org"]
    text = out.read_text()
    assert "To: alice@example.org" in text
    assert "Subject: [PBS staging] job 1.s: stage-in failed" in text
    # -oi: the lone "." line reaches the MTA untouched (the MTA must not end there).
    assert "hello\n.\nstill here" in text


def test_sendmail_recipients_never_in_argv(fake_sendmail):
    path, _, args = fake_sendmail
    SendmailMailer(path).send(_msg(to=("alice@example.org",)))
    assert "alice@example.org" not in args.read_text()


def test_sendmail_missing_is_unavailable(tmp_path):
    with pytest.raises(MailError) as exc:
        SendmailMailer(str(tmp_path / "nope")).send(_msg())
    assert exc.value.unavailable
    assert "not found" in str(exc.value)


def test_sendmail_nonzero_exit(tmp_path):
    path = write_script(tmp_path / "sendmail", "#!/bin/sh\ncat >/dev/null\n"
                        "echo 'queue full password=hunter2' >&2\nexit 75\n")
    with pytest.raises(MailError) as exc:
        SendmailMailer(path).send(_msg())
    assert "status 75" in str(exc.value) and "queue full" in str(exc.value)
    assert "hunter2" not in str(exc.value)


def test_sendmail_timeout(tmp_path):
    path = write_script(tmp_path / "sendmail", "#!/bin/sh\nexec sleep 10\n")
    t0 = time.monotonic()
    with pytest.raises(MailError) as exc:
        SendmailMailer(path, timeout=0.3).send(_msg())
    assert time.monotonic() - t0 < 5
    assert exc.value.unavailable and "did not finish" in str(exc.value)


# ----------------------------------------------------------------------------- SMTP

def test_smtp_delivers(smtp_server):
    SmtpMailer(smtp_server.host, smtp_server.port, timeout=5).send(_msg(to=("a@x.org", "b@y.org")))
    [got] = smtp_server.messages
    assert sorted(got.rcpt_tos) == ["a@x.org", "b@y.org"]
    assert got.mail_from == "pbs-staging@example.org"
    assert got.msg["Subject"] == "[PBS staging] job 1.s: stage-in failed"


def test_smtp_down_is_unavailable():
    with pytest.raises(MailError) as exc:
        SmtpMailer("127.0.0.1", free_port(), timeout=2).send(_msg())
    assert exc.value.unavailable
    assert "unreachable" in str(exc.value)


def _cred_file(tmp_path, content="mailer:s3cret-pw\n", mode=0o600):
    p = tmp_path / "smtp.cred"
    p.write_text(content)
    os.chmod(p, mode)
    return str(p)


def test_smtp_auth_with_credentials_file(tmp_path):
    server = start_smtp(users={"mailer": "s3cret-pw"})
    try:
        SmtpMailer(server.host, server.port, credentials_file=_cred_file(tmp_path),
                   timeout=5).send(_msg())
        assert len(server.messages) == 1
        assert server.capture.logins and server.capture.logins[0][0] == "mailer"
    finally:
        server.stop()


def test_smtp_wrong_password_never_quoted(tmp_path):
    server = start_smtp(users={"mailer": "right"})
    try:
        with pytest.raises(MailError) as exc:
            SmtpMailer(server.host, server.port, credentials_file=_cred_file(tmp_path),
                       timeout=5).send(_msg())
        assert "s3cret-pw" not in str(exc.value)
        assert "refused the login" in str(exc.value)
        assert server.messages == []
    finally:
        server.stop()


@pytest.mark.parametrize("content,mode,problem", [
    ("mailer:pw\n", 0o640, "must be owned by root and not readable"),
    ("mailer:pw\n", 0o604, "must be owned by root and not readable"),
    ("mailer:pw\nother:pw\n", 0o600, "one line user:password"),
    ("just-a-password\n", 0o600, "one line user:password"),
    ("mailer:\n", 0o600, "one line user:password"),
])
def test_credentials_file_rules(tmp_path, content, mode, problem):
    path = _cred_file(tmp_path, content, mode)
    with pytest.raises(MailError) as exc:
        read_credentials(path)
    assert problem in str(exc.value)
    assert "pw" not in str(exc.value).replace(path, "")  # content never quoted


def test_credentials_file_symlink_and_missing(tmp_path):
    real = _cred_file(tmp_path)
    link = tmp_path / "link.cred"
    os.symlink(real, link)
    with pytest.raises(MailError, match="symlink"):
        read_credentials(str(link))
    with pytest.raises(MailError, match="does not exist"):
        read_credentials(str(tmp_path / "absent"))
    assert read_credentials(real) == ("mailer", "s3cret-pw")


def test_credentials_with_colon_in_password(tmp_path):
    assert read_credentials(_cred_file(tmp_path, "u:p:a:ss\n")) == ("u", "p:a:ss")


def test_smtp_starttls(tmp_path):
    cert, key = make_cert(str(tmp_path))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = start_smtp(users={"mailer": "s3cret-pw"}, tls_context=ctx, require_starttls=True)
    try:
        # Without STARTTLS the server refuses to take mail.
        with pytest.raises(MailError):
            SmtpMailer(server.host, server.port, timeout=5).send(_msg())
        # A certificate the client does not trust is refused.
        with pytest.raises(MailError) as exc:
            SmtpMailer(server.host, server.port, starttls=True, timeout=5).send(_msg())
        assert exc.value.unavailable
        assert server.messages == []
        SmtpMailer(server.host, server.port, starttls=True, cafile=cert, timeout=5,
                   credentials_file=_cred_file(tmp_path)).send(_msg())
        assert len(server.messages) == 1 and server.capture.logins
    finally:
        server.stop()


# ----------------------------------------------------------------------------- settings

def test_parse_mail_settings_defaults_and_values():
    assert parse_mail_settings(None, source="s.yaml") == MailSettings()
    s = parse_mail_settings({"method": "smtp", "host": "relay.example.org", "port": 587,
                             "starttls": True, "credentials_file": "/etc/pbs/smtp.cred",
                             "from": "pbs@example.org", "timeout": 5}, source="s.yaml")
    assert (s.method, s.host, s.port, s.starttls, s.sender, s.timeout) == \
        ("smtp", "relay.example.org", 587, True, "pbs@example.org", 5.0)
    assert isinstance(make_mailer(s), SmtpMailer)
    m = make_mailer(parse_mail_settings({"sendmail": "/usr/lib/sendmail"}, source="s.yaml"))
    assert isinstance(m, SendmailMailer) and m.path == "/usr/lib/sendmail" and m.sender == "adm"


@pytest.mark.parametrize("data,key", [
    ({"method": "carrier-pigeon"}, "alerts.mail.method"),
    ({"sendmail": "sendmail"}, "alerts.mail.sendmail"),
    ({"port": 0}, "alerts.mail.port"),
    ({"port": "25"}, "alerts.mail.port"),
    ({"starttls": "yes"}, "alerts.mail.starttls"),
    ({"from": "Staging <x@y>"}, "alerts.mail.from"),
    ({"credentials_file": "smtp.cred"}, "alerts.mail.credentials_file"),
    ({"method": "smtp", "host": "relay.example.org", "credentials_file": "/etc/c"},
     "alerts.mail.credentials_file"),
    ({"hots": "x"}, "alerts.mail.hots"),
    ("sendmail", "alerts.mail"),
])
def test_parse_mail_settings_errors(data, key):
    with pytest.raises(ConfigError) as exc:
        parse_mail_settings(data, source="/etc/pbs/staging.yaml")
    text = str(exc.value)
    assert text.startswith(f"/etc/pbs/staging.yaml: {key}")
    assert "\n" not in text


def test_credentials_to_loopback_without_tls_allowed():
    s = parse_mail_settings({"method": "smtp", "host": "127.0.0.1", "credentials_file": "/c"},
                            source="s")
    assert s.credentials_file == "/c"


# ----------------------------------------------------------------------------- commands

def test_run_command_argv_literal(tmp_path):
    out = tmp_path / "args"
    prog = write_script(tmp_path / "notify", f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {out}\n")
    marker = tmp_path / "pwned"
    run_command([prog, f"$(touch {marker})", "a b", "; rm -rf /"], timeout=5)
    assert out.read_text().splitlines() == [f"$(touch {marker})", "a b", "; rm -rf /"]
    assert not marker.exists()


def test_run_command_env_is_minimal(tmp_path, monkeypatch):
    monkeypatch.setenv("GLOBUS_CLIENT_SECRET", "topsecret")
    out = tmp_path / "env"
    prog = write_script(tmp_path / "notify", f"#!/bin/sh\nenv > {out}\n")
    run_command([prog], timeout=5)
    assert "topsecret" not in out.read_text()


def test_run_command_failures(tmp_path):
    failing = write_script(tmp_path / "f", "#!/bin/sh\necho boom\nexit 3\n")
    with pytest.raises(CommandError, match="status 3: boom"):
        run_command([failing], timeout=5)
    slow = write_script(tmp_path / "s", "#!/bin/sh\nexec sleep 10\n")
    t0 = time.monotonic()
    with pytest.raises(CommandError, match="did not finish"):
        run_command([slow], timeout=0.3)
    assert time.monotonic() - t0 < 5
    with pytest.raises(CommandError, match="cannot run"):
        run_command([str(tmp_path / "missing")], timeout=5)
