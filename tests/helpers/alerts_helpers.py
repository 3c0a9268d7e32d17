"""Shared by test_alerts*.py and test_mail*.py: a real SMTP server on loopback
(aiosmtpd) that captures what it receives, and an in-memory alert ledger."""
from __future__ import annotations

import email
import email.policy
import os
import socket
import subprocess
from dataclasses import dataclass, field

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list
    msg: email.message.EmailMessage


class Capture:
    def __init__(self) -> None:
        self.messages: list[Received] = []
        self.logins: list[tuple[str, str]] = []

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"


@dataclass
class SmtpServer:
    host: str
    port: int
    capture: Capture
    controller: Controller = field(repr=False)

    @property
    def messages(self) -> list[Received]:
        return self.capture.messages

    def stop(self) -> None:
        self.controller.stop()


def start_smtp(port: int | None = None, *, users: dict | None = None, tls_context=None,
               require_starttls: bool = False) -> SmtpServer:
    capture = Capture()
    kw = {}
    if users is not None:
        def authenticator(server, session, envelope, mechanism, auth_data):
            if isinstance(auth_data, LoginPassword):
                login, password = auth_data.login.decode(), auth_data.password.decode()
                if users.get(login) == password:
                    capture.logins.append((login, mechanism))
                    return AuthResult(success=True)
            # handled=False: the server answers 535 itself.
            return AuthResult(success=False, handled=False)
        kw.update(authenticator=authenticator, auth_require_tls=tls_context is not None)
    if tls_context is not None:
        kw.update(tls_context=tls_context, require_starttls=require_starttls)
    port = port or free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=port, ready_timeout=5, **kw)
    controller.start()
    return SmtpServer("127.0.0.1", port, capture, controller)


@pytest.fixture
def smtp_server():
    server = start_smtp()
    yield server
    server.stop()


class FakeLedger:
    """The journal's alert-state protocol, in memory."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[float, float, int]] = {}
        self.marks: list[tuple[str, str, float]] = []

    def alert_state(self, rule: str, key: str):
        return self.rows.get((rule, key))

    def mark_alert(self, rule: str, key: str, at: float) -> None:
        first, _, count = self.rows.get((rule, key), (at, at, 0))
        self.rows[(rule, key)] = (first, at, count + 1)
        self.marks.append((rule, key, at))


def make_cert(tmp_path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (EC key: milliseconds to make)."""
    cert, key = os.path.join(tmp_path, "cert.pem"), os.path.join(tmp_path, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=30)
    return cert, key


def write_script(path, text: str) -> str:
    path = str(path)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o755)
    return path
