"""A person at a browser, for the emulator's Globus Auth login pages.

``follow_login_url`` does what a user does with the URL ``globus-staging
login`` prints: opens it (a real HTTP GET with urllib), picks an identity on the
emulator's authorize page, and reads the code off the page Globus shows native
apps.  ``cli_login`` runs the real ``globus-staging login`` as a subprocess and
pastes that code into its prompt through stdin.
"""
from __future__ import annotations

import html
import os
import re
import subprocess
import sys
import threading
import urllib.request
from typing import Dict, List, Optional, Sequence

_IDENTITY_LINK = re.compile(
    r'<a class="identity" data-username="([^"]*)" href="([^"]*)">')
_CODE = re.compile(r'<code id="auth-code">([^<]+)</code>')


class LoginPageError(AssertionError):
    pass


def _get(url: str) -> str:
    # urllib follows the 302 back to the redirect_uri, as a browser does.
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback emulator
        return resp.read().decode("utf-8")


def follow_login_url(url: str, username: str) -> str:
    """Open the authorize URL, log in as ``username``, return the code shown."""
    page = _get(url)
    links = {html.unescape(u): html.unescape(h) for u, h in _IDENTITY_LINK.findall(page)}
    if username not in links:
        raise LoginPageError(f"no identity {username!r} on the login page "
                             f"(offered: {sorted(links)})")
    base = re.match(r"^(https?://[^/]+)", url)
    assert base is not None
    done = _get(base.group(1) + links[username])
    m = _CODE.search(done)
    if not m:
        raise LoginPageError(f"no authorization code on the page: {done[:300]!r}")
    return html.unescape(m.group(1))


def cli_login(config: str, username: str, args: Sequence[str] = (), *,
              env: Optional[Dict[str, str]] = None, timeout: float = 60,
              user_cmd: Sequence[str] = ()) -> subprocess.CompletedProcess:
    """Run ``globus-staging login ARGS`` and log in as ``username`` through its URL.

    ``user_cmd`` prefixes the command (e.g. ``runuser -u alice --``) to run it
    as another account.  Returns the finished process (stdout has the URL
    banner, the prompt and the command's own answer).
    """
    run_env = dict(os.environ if env is None else env)
    run_env.pop("SUDO_USER", None)
    run_env["PYTHONUNBUFFERED"] = "1"
    cmd = [*user_cmd, sys.executable, "-m", "pbs_globus_staging", "--config", str(config),
           "login", *args]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=run_env)
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    seen: List[str] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        url = None
        for line in proc.stdout:
            seen.append(line)
            if "/v2/oauth2/authorize?" in line:
                url = line.strip()
                break
        if url is None:
            proc.wait()
            err = proc.stderr.read() if proc.stderr else ""
            raise LoginPageError(f"login printed no authorize URL: {''.join(seen)!r} {err!r}")
        code = follow_login_url(url, username)
        out, err = proc.communicate(code + "\n")
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(seen) + (out or ""),
                                       err or "")


__all__ = ["follow_login_url", "cli_login", "LoginPageError"]
