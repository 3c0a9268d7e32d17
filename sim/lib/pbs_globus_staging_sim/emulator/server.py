"""Stdlib HTTP glue: bytes in, ``api.handle``, JSON out.  Loopback by default."""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from . import api

if TYPE_CHECKING:  # pragma: no cover
    from .core import GlobusEmulator

MAX_BODY = 16 << 20


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: "GlobusEmulator"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "GlobusEmulator/1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._send(413, {}, {"code": "ClientError.RequestEntityTooLarge",
                                 "message": "Request body too large"})
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, extra, doc = api.handle(self.server.emulator, self.command, self.path,
                                            headers, body)
        except Exception as exc:  # a bug in the emulator must not hang the client
            status, extra, doc = 500, {}, {"code": "InternalError",
                                           "message": f"emulator error: {type(exc).__name__}"}
            self.server.emulator._record_internal_error(exc)
        self._send(status, extra, doc)

    def _send(self, status: int, extra: dict, doc: Any) -> None:
        # A str is one of Globus Auth's browser pages (auth.py); the APIs speak JSON.
        html = isinstance(doc, str)
        payload = doc.encode() if html else json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8" if html
                         else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        # request lines may carry tokens in query strings of other clients: stay quiet
        return


def make_server(emu: "GlobusEmulator", host: str, port: int) -> _Server:
    server = _Server((host, port), _Handler)
    server.emulator = emu
    return server
