"""The ``globus-staging`` subcommands beyond the agent and the installer.

One module per command family (globus-cli style); ``cli.py`` keeps the
parser and the entry point.  Every command ends either by returning an exit
code or by raising ``CliExit`` with a one-line message: 0 ok, 1 the thing is
in a bad state, 2 usage or configuration, 3 retryable outage, 4 not found /
not yours / not allowed.
"""
from __future__ import annotations

import json
import os
import pwd
import sys
from typing import Any, Optional

EXIT_OK, EXIT_BAD, EXIT_USAGE, EXIT_RETRY, EXIT_NOTFOUND = 0, 1, 2, 3, 4


class CliExit(Exception):
    """Stop the command with ``code``; ``message`` is printed as one line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
        self.code = code


def caller_name() -> str:
    """Who is running this, from the real uid (never from the environment)."""
    uid = os.getuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        # No passwd entry: such a caller owns no jobs, so it can see none.
        return f"#{uid}"


def is_root() -> bool:
    return os.geteuid() == 0


def acting_admin() -> str:
    """The name recorded for an admin action: the sudo user when run via sudo."""
    sudo = os.environ.get("SUDO_USER")
    me = caller_name()
    return f"{sudo} (via sudo)" if sudo and me == "root" else me


def require_root(what: str) -> None:
    if not is_root():
        raise CliExit(EXIT_NOTFOUND, f"{what} is an admin action: run it as root "
                                     "(sudo globus-staging ...)")


def emit(data: Any, *, as_json: bool, text: Optional[str] = None) -> None:
    if as_json:
        json.dump(data, sys.stdout, indent=2, default=str, sort_keys=False)
        sys.stdout.write("\n")
    elif text is not None:
        print(text)
