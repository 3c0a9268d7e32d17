"""The user's token file: its format, where it is, and why root refuses one."""
from __future__ import annotations

import dataclasses
import json
import os
import stat
import typing as t

from .. import userfiles
from ..errors import ConfigError, RetryableError, StagingError, WaitingForUser
from ..userfiles import UserFileError
from .common import (LOGIN_ACTION, MAX_TOKEN_FILE_BYTES, TOKEN_FILE_FORMAT,
                     TOKEN_FILE_VERSION)

@dataclasses.dataclass(frozen=True)
class UserTokens:
    """What ``globus-staging login`` leaves in the user's token file."""

    client_id: str
    refresh_token: str = dataclasses.field(repr=False)
    scope: str = ""
    collections: t.Tuple[str, ...] = ()
    created_at: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": TOKEN_FILE_FORMAT,
                "version": TOKEN_FILE_VERSION,
                "client_id": self.client_id,
                "refresh_token": self.refresh_token,
                "scope": self.scope,
                "collections": list(self.collections),
                "created_at": self.created_at,
            },
            indent=1,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "UserTokens":
        """Parse a token file; ValueError names what is wrong (never the token)."""
        try:
            doc = json.loads(text)
        except ValueError:
            raise ValueError("not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != TOKEN_FILE_FORMAT:
            raise ValueError(f"not a {TOKEN_FILE_FORMAT} file")
        if doc.get("version") != TOKEN_FILE_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        rt = doc.get("refresh_token")
        cid = doc.get("client_id")
        if not isinstance(rt, str) or not rt or any(c.isspace() for c in rt):
            raise ValueError("no refresh token in it")
        if not isinstance(cid, str) or not cid:
            raise ValueError("no client_id in it")
        cols = doc.get("collections") or []
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise ValueError("'collections' must be a list of collection ids")
        scope = doc.get("scope") or ""
        created = doc.get("created_at") or 0
        return cls(
            client_id=cid,
            refresh_token=rt,
            scope=scope if isinstance(scope, str) else "",
            collections=tuple(cols),
            created_at=created if isinstance(created, int) else 0,
        )


def expand_token_dir(template: str, user: str, home: str) -> tuple[str, str]:
    """Expand a token-dir template for ``user``.

    Returns ``(trusted_base, rest)``: ``trusted_base`` is a path whose
    components only root controls (the user's home as resolved by root, or
    ``/``); ``rest`` is relative to it and is checked component by component.
    """
    if template.startswith("~{user}") or template.startswith("{home}"):
        head = "~{user}" if template.startswith("~{user}") else "{home}"
        rest = template[len(head):].format(user=user, home=home)
        base = os.path.realpath(home)
    else:
        expanded = template.format(user=user, home=home)
        if not expanded.startswith("/"):
            raise ConfigError(
                f"token_dir_template {template!r}: expected '~{{user}}/...', "
                "'{home}/...' or an absolute path containing {user}"
            )
        base, rest = "/", expanded
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"token_dir_template {template!r}: '..' is not allowed")
    return base, "/".join(parts)


def _token_file_refusal(err: UserFileError, identity: str, shown: str,
                        refuse: t.Callable[..., WaitingForUser]) -> StagingError:
    """What ``read_user_file`` found wrong with a token file, as the user's fix."""
    shown_dir = os.path.dirname(shown)
    uf = userfiles
    st = err.st
    if err.reason == uf.MISSING:
        return refuse(f"{shown} does not exist (never logged in?)", LOGIN_ACTION,
                      code="NotLoggedIn")
    if err.directory:
        if err.reason in (uf.SYMLINK, uf.NOT_DIR):
            return refuse(
                f"{shown_dir} (component {err.name!r}) is a symlink or not a directory",
                "ask the site admin" if err.trusted else f"rm {shown_dir} && {LOGIN_ACTION}",
            )
        if err.reason == uf.DENIED:
            return refuse(
                f"the staging agent (root) may not read {shown_dir} "
                "(root-squashed home directory?)",
                "ask the site admin to set a token_dir_template root can read",
                code="TokenDirUnreadable",
            )
        if err.reason == uf.DIR_OWNER and st is not None:
            return refuse(f"{shown_dir} is owned by uid {st.st_uid}, not by {identity}",
                          f"rm -r {shown_dir} && {LOGIN_ACTION}")
        if err.reason == uf.DIR_WRITABLE:
            return refuse(f"{shown_dir} is writable by group or others",
                          f"chmod 700 {shown_dir}")
        return RetryableError(f"cannot open {shown_dir} for {identity}: {err.detail}")
    if err.reason == uf.SYMLINK:
        return refuse(f"{shown} is a symlink", f"rm {shown} && {LOGIN_ACTION}")
    if err.reason in (uf.NOT_REGULAR, uf.CHANGED):
        return refuse(f"{shown} is not a regular file", f"rm {shown} && {LOGIN_ACTION}")
    if err.reason == uf.OWNER and st is not None:
        return refuse(f"{shown} is owned by uid {st.st_uid}, not by {identity}",
                      f"rm {shown} && {LOGIN_ACTION}")
    if err.reason == uf.MODE and st is not None:
        return refuse(f"{shown} may be read by group or others "
                      f"(mode {stat.S_IMODE(st.st_mode):04o})", f"chmod 600 {shown}")
    if err.reason == uf.TOO_BIG:
        return refuse(f"{shown} is larger than {MAX_TOKEN_FILE_BYTES} bytes",
                      f"rm {shown} && {LOGIN_ACTION}")
    return refuse(f"cannot open {shown} ({err.detail or err.reason})", LOGIN_ACTION)
