"""Delivering alerts: mail (local sendmail or SMTP) and site commands.

Stdlib only.  ``alerts`` decides *what* to send; this module does the I/O.
The agent wires them together::

    cfg = alerts.parse_rules(site_config.get("alerts"), source=path)
    engine = alerts.AlertEngine(cfg, ledger=journal, deliver=mail.Deliverer.from_config(cfg))

Like PBS's own job mail, the default transport is the local ``sendmail``
(``/usr/sbin/sendmail -t -oi``), so the site's MTA does queueing and retries.
"""
from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import re
import smtplib
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Mapping, Protocol, Sequence

from . import userfiles
from .errors import ConfigError, StagingError
from .userfiles import UserFileError, read_user_file

log = logging.getLogger(__name__)

DEFAULT_SENDMAIL = "/usr/sbin/sendmail"
# PBS's server attribute mail_from defaults to "adm"; the local MTA qualifies it.
DEFAULT_FROM = "adm"
# Commands run from the agent, which itself must finish inside the periodic
# hook's alarm; a hung notifier must not eat the cycle.
DEFAULT_COMMAND_TIMEOUT = 30.0
DEFAULT_MAIL_TIMEOUT = 10.0
# How much of a failing command's or sendmail's output goes into the log.
_OUTPUT_SNIPPET = 300
# Commands get a fixed, small environment: the agent's own may hold secrets
# (e.g. a Globus client secret passed in by a service manager).
_COMMAND_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG": "C.UTF-8"}


class MailError(StagingError):
    """A message could not be handed over.

    ``unavailable`` is true when the transport itself is down (no sendmail,
    SMTP server unreachable, bad credentials file): later messages in the same
    cycle would fail the same way, so the caller stops trying until the next
    cycle instead of waiting out one timeout per message.
    """

    def __init__(self, message: str, *, unavailable: bool = False) -> None:
        super().__init__(" ".join(str(message).split()))
        self.unavailable = unavailable


class CommandError(StagingError):
    """An alert command failed (exit status, timeout, cannot start)."""


class Mailer(Protocol):
    def send(self, msg: EmailMessage) -> None:
        """Hand ``msg`` to the mail system or raise :class:`MailError`."""


# --------------------------------------------------------------------------- settings

_ADDRESS_RE = re.compile(r"^[^\s\x00-\x1f\x7f@<>,;:()\[\]\"\\]+(@[A-Za-z0-9.-]+)?$")


def valid_address(addr: str) -> bool:
    """A plain ``user`` or ``user@host`` address, as PBS's -M takes: no display
    names, no spaces, no header-breaking characters."""
    return bool(isinstance(addr, str) and _ADDRESS_RE.match(addr)) and not addr.startswith("-")


@dataclass(frozen=True)
class MailSettings:
    method: str = "sendmail"                 # "sendmail" | "smtp"
    sendmail: str = DEFAULT_SENDMAIL
    sender: str = DEFAULT_FROM               # YAML key: from
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    credentials_file: str | None = None
    cafile: str | None = None                # CA bundle for STARTTLS (default: system store)
    timeout: float = DEFAULT_MAIL_TIMEOUT


_MAIL_KEYS = {"method", "sendmail", "from", "host", "port", "starttls",
              "credentials_file", "cafile", "timeout"}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_mail_settings(data: Any, *, source: str, where: str = "alerts.mail") -> MailSettings:
    """Validate the ``alerts.mail`` mapping; raise ConfigError naming key and file."""
    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {where}.{key}: {problem}")

    if data is None:
        return MailSettings()
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {where}: expected a mapping like "
                          "{method: sendmail, from: pbs-staging@example.org}")
    unknown = sorted(str(k) for k in data if k not in _MAIL_KEYS)
    if unknown:
        raise bad(unknown[0], "unknown key (expected one of: " + ", ".join(sorted(_MAIL_KEYS)) + ")")
    method = data.get("method", "sendmail")
    if method not in ("sendmail", "smtp"):
        raise bad("method", f"{method!r} is not a mail method (expected sendmail or smtp)")
    kw: dict[str, Any] = {"method": method}
    if "sendmail" in data:
        path = data["sendmail"]
        if not isinstance(path, str) or not os.path.isabs(path):
            raise bad("sendmail", "expected an absolute path like /usr/sbin/sendmail")
        kw["sendmail"] = path
    if "from" in data:
        sender = data["from"]
        if not valid_address(sender):
            raise bad("from", f"{sender!r} is not a mail address (expected user or user@host)")
        kw["sender"] = sender
    if "host" in data:
        host = data["host"]
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise bad("host", "expected a host name like localhost or smtp.example.org")
        kw["host"] = host
    if "port" in data:
        port = data["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise bad("port", f"{port!r} is not a port number (expected 1-65535)")
        kw["port"] = port
    if "starttls" in data:
        if not isinstance(data["starttls"], bool):
            raise bad("starttls", "expected true or false")
        kw["starttls"] = data["starttls"]
    for key in ("credentials_file", "cafile"):
        if key in data and data[key] is not None:
            if not isinstance(data[key], str) or not os.path.isabs(data[key]):
                raise bad(key, "expected an absolute path")
            kw[key] = data[key]
    if "timeout" in data:
        t = data["timeout"]
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 300:
            raise bad("timeout", f"{t!r} is not a timeout (expected seconds, 0 < t <= 300)")
        kw["timeout"] = float(t)
    settings = MailSettings(**kw)
    if (settings.method == "smtp" and settings.credentials_file and not settings.starttls
            and not _is_loopback(settings.host)):
        # smtplib would send the password in the clear.
        raise bad("credentials_file", f"SMTP credentials would go unencrypted to {settings.host}; "
                  "set starttls: true (or use a local relay)")
    return settings


# --------------------------------------------------------------------------- mailers

class SendmailMailer:
    """The local MTA, as PBS mails jobs: ``sendmail -t -oi -f FROM``.

    ``-t`` takes recipients from the headers, so no address ever becomes a
    command-line argument (an address like ``-oQ/tmp`` cannot turn into an
    option).  ``-oi`` stops a lone ``.`` line from ending the message.
    """

    def __init__(self, path: str = DEFAULT_SENDMAIL, *, sender: str | None = None,
                 timeout: float = DEFAULT_MAIL_TIMEOUT) -> None:
        self.path = path
        self.sender = sender
        self.timeout = timeout

    def send(self, msg: EmailMessage) -> None:
        argv = [self.path, "-t", "-oi"]
        if self.sender and valid_address(self.sender):
            argv += ["-f", self.sender]
        try:
            proc = subprocess.run(argv, input=msg.as_bytes(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=self.timeout,
                                  env=_COMMAND_ENV, check=False)
        except FileNotFoundError:
            raise MailError(f"sendmail not found at {self.path}; install an MTA or set "
                            "alerts.mail.sendmail", unavailable=True) from None
        except PermissionError:
            raise MailError(f"sendmail at {self.path} is not executable", unavailable=True) from None
        except subprocess.TimeoutExpired:
            raise MailError(f"sendmail at {self.path} did not finish within {self.timeout:g} s",
                            unavailable=True) from None
        except OSError as exc:
            raise MailError(f"cannot run {self.path}: {exc.strerror}", unavailable=True) from None
        if proc.returncode != 0:
            out = _snippet(proc.stdout)
            raise MailError(f"{self.path} exited with status {proc.returncode}"
                            + (f": {out}" if out else ""))


def read_credentials(path: str) -> tuple[str, str]:
    """``user:password`` from a root-only file.  Errors never quote the content."""
    full = os.path.abspath(path)
    try:
        # The file's directory is the admin's (symlinks resolved, root's view).
        raw = read_user_file(full, owner=0, max_bytes=4096, forbid_mode=0o077,
                             base=os.path.dirname(full))
    except UserFileError as err:
        if err.reason == userfiles.MISSING:
            problem = "does not exist"
        elif err.reason in (userfiles.NOT_REGULAR, userfiles.CHANGED):
            problem = "is not a regular file"
        elif err.reason in (userfiles.OWNER, userfiles.MODE):
            problem = ("must be owned by root and not readable by group or others "
                       "(chown root; chmod 600)")
        elif err.reason == userfiles.TOO_BIG:
            problem = "must hold one line user:password"
        else:
            raise MailError(f"cannot open SMTP credentials file {path}: "
                            f"{err.detail or 'a symbolic link'} (a symlink is not accepted)",
                            unavailable=True) from None
        raise MailError(f"SMTP credentials file {path} {problem}", unavailable=True) from None
    lines = [ln for ln in raw.decode("utf-8", "replace").splitlines() if ln.strip()]
    if len(raw) > 4096 or len(lines) != 1 or ":" not in lines[0]:
        raise MailError(f"SMTP credentials file {path} must hold one line user:password",
                        unavailable=True)
    user, _, password = lines[0].strip().partition(":")
    if not user or not password:
        raise MailError(f"SMTP credentials file {path} must hold one line user:password",
                        unavailable=True)
    return user, password


class SmtpMailer:
    """An SMTP relay (smtplib).  Credentials are read at each send, so fixing the
    file needs no agent restart; they are never logged."""

    def __init__(self, host: str = "localhost", port: int = 25, *, starttls: bool = False,
                 credentials_file: str | None = None, timeout: float = DEFAULT_MAIL_TIMEOUT,
                 cafile: str | None = None, local_hostname: str | None = None) -> None:
        self.host = host
        self.port = port
        self.starttls = starttls
        self.credentials_file = credentials_file
        self.timeout = timeout
        self.cafile = cafile
        # smtplib would call socket.getfqdn() for EHLO, which can stall on DNS.
        self.local_hostname = local_hostname or socket.gethostname() or "localhost"

    def send(self, msg: EmailMessage) -> None:
        creds = read_credentials(self.credentials_file) if self.credentials_file else None
        where = f"SMTP server {self.host}:{self.port}"
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout,
                              local_hostname=self.local_hostname) as smtp:
                if self.starttls:
                    ctx = ssl.create_default_context(cafile=self.cafile)
                    smtp.starttls(context=ctx)
                if creds:
                    smtp.login(*creds)
                refused = smtp.send_message(msg)
        except smtplib.SMTPAuthenticationError as exc:
            raise MailError(f"{where} refused the login from {self.credentials_file} "
                            f"(code {exc.smtp_code})", unavailable=True) from None
        except smtplib.SMTPRecipientsRefused as exc:
            raise MailError(f"{where} refused every recipient: "
                            + ", ".join(sorted(exc.recipients))) from None
        except smtplib.SMTPResponseException as exc:
            text = _snippet(exc.smtp_error)
            raise MailError(f"{where} answered {exc.smtp_code}: {text}",
                            unavailable=400 <= exc.smtp_code < 500) from None
        except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise MailError(f"{where} unreachable: {reason}", unavailable=True) from None
        if refused:
            log.warning("%s refused some recipients: %s", where, ", ".join(sorted(refused)))


def make_mailer(cfg: MailSettings) -> Mailer:
    if cfg.method == "smtp":
        return SmtpMailer(cfg.host, cfg.port, starttls=cfg.starttls,
                          credentials_file=cfg.credentials_file, timeout=cfg.timeout,
                          cafile=cfg.cafile)
    return SendmailMailer(cfg.sendmail, sender=cfg.sender, timeout=cfg.timeout)


# --------------------------------------------------------------------------- messages + commands

def build_message(*, sender: str, recipients: Sequence[str], subject: str, body: str,
                  headers: Mapping[str, str] | None = None, hostname: str | None = None,
                  now: float | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(now if now is not None else time.time(), usegmt=True)
    # make_msgid() without a domain calls socket.getfqdn(), which can stall on DNS.
    msg["Message-ID"] = email.utils.make_msgid(domain=hostname or socket.gethostname() or "localhost")
    # RFC 3834: vacation responders and ticket systems must not answer this.
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg


def run_command(argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT
                ) -> subprocess.CompletedProcess:
    """Run an alert command: an argument list, never a shell; output captured."""
    try:
        proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, env=_COMMAND_ENV,
                              shell=False, check=False, close_fds=True)
    except subprocess.TimeoutExpired:
        raise CommandError(f"{argv[0]} did not finish within {timeout:g} s (killed)") from None
    except OSError as exc:
        raise CommandError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        out = _snippet(proc.stdout)
        raise CommandError(f"{argv[0]} exited with status {proc.returncode}"
                           + (f": {out}" if out else ""))
    return proc


# Globus error texts, sendmail/SMTP replies and command output end up in logs
# and mails; none of them should ever carry a credential.
_SECRET_RES = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)\b((?:access|refresh|id)_?token|client_secret|password|passwd|secret)"
               r"(\"?\s*[:=]\s*\"?)[^\s\"',&;]+"),
)


def redact(text: str) -> str:
    """Mask anything that looks like a bearer token, password or client secret."""
    text = _SECRET_RES[0].sub(lambda m: f"{m.group(1)} [redacted]", text)
    return _SECRET_RES[1].sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", text)


def _snippet(data: Any) -> str:
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    text = redact(" ".join(str(data or "").split()))
    return text[:_OUTPUT_SNIPPET] + ("..." if len(text) > _OUTPUT_SNIPPET else "")


# What ``alerts`` hands the transport.  It lives here, not in alerts, so that
# the dependency runs one way: alerts (the rules) imports mail (the I/O).
@dataclass(frozen=True)
class Delivery:
    rule: str
    action: str                 # Action.label
    key: str                    # the event's dedup key
    kind: str                   # event kind
    job_id: str | None
    channel: str                # mail | command | log
    status: str = ""
    recipients: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""
    argv: tuple[str, ...] = ()
    error: str = ""             # one line, secrets redacted

    @property
    def ledger_rule(self) -> str:
        return f"{self.rule}/{self.action}"


class DeliveryConfig(Protocol):
    """What :meth:`Deliverer.from_config` reads (``alerts.AlertConfig`` has it)."""

    mail: MailSettings
    command_timeout: float


class Deliverer:
    """The ``deliver`` callable for :class:`alerts.AlertEngine`: performs one
    mail or command delivery, raising :class:`MailError` / :class:`CommandError`."""

    def __init__(self, mailer: Mailer, *, sender: str = DEFAULT_FROM,
                 command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
                 hostname: str | None = None) -> None:
        self.mailer = mailer
        self.sender = sender
        self.command_timeout = command_timeout
        self.hostname = hostname or socket.gethostname() or "localhost"
        if isinstance(mailer, SmtpMailer) and "@" not in sender:
            # sendmail qualifies a bare "adm" itself; an SMTP relay would refuse it.
            self.sender = f"{sender}@{self.hostname}"

    @classmethod
    def from_config(cls, config: DeliveryConfig) -> Deliverer:
        return cls(make_mailer(config.mail), sender=config.mail.sender,
                   command_timeout=config.command_timeout)

    def __call__(self, delivery: Delivery) -> None:
        if delivery.channel == "mail":
            headers = {"X-PBS-Staging-Event": delivery.kind}
            if delivery.job_id:
                headers["X-PBS-Staging-Job"] = delivery.job_id
            msg = build_message(sender=self.sender, recipients=delivery.recipients,
                                subject=delivery.subject, body=delivery.body,
                                headers=headers, hostname=self.hostname)
            self.mailer.send(msg)
        elif delivery.channel == "command":
            proc = run_command(delivery.argv, timeout=self.command_timeout)
            out = _snippet(proc.stdout)
            if out:
                log.debug("alert command %s said: %s", delivery.argv[0], out)
        else:
            raise ValueError(f"cannot deliver on channel {delivery.channel!r}")
