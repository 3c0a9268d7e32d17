"""``login``: a user gives the staging agent their Globus login.

Runs as the user, on a login node or the PBS server host: the native-app
flow prints a URL, the user logs in and pastes the code back, and the
refresh token is written 0600 into the user's own token directory (the site
config's ``credentials.token_dir`` with ``{user}`` = the caller).  The agent
(root) reads it from there.  There is no way to log in for somebody else:
the user comes from the real uid and the file is written as that uid.
"""
from __future__ import annotations

import os
import pwd
from pathlib import Path
from typing import Any, List, Optional, Sequence

from ..services import EXIT_OK, EXIT_USAGE, CliExit, caller_name, emit, load_site, with_json


def register(sub) -> None:
    lg = with_json(sub.add_parser(
        "login", help="give the staging agent your Globus login (run as yourself)",
        description="Log in to Globus (the URL/code flow) and store a refresh token in your "
                    "token directory, so the agent can stage your data. Needed once, and "
                    "again when a job comment says so. Not used in client-credentials mode."))
    lg.add_argument("--collection", action="append", metavar="ID",
                    help="also consent to data access on this collection (UUID or site "
                         "alias); repeatable")
    # What a job comment asks for when a collection's authentication policy
    # refused the login (Globus's authorization_parameters).
    lg.add_argument("--policy", action="append", metavar="ID",
                    help="log in so as to satisfy this Globus authentication policy; repeatable")
    lg.add_argument("--identity", action="append", metavar="ID",
                    help="log in with this Globus identity (id); repeatable")
    lg.add_argument("--domain", action="append", metavar="DOMAIN",
                    help="log in with an identity from this domain; repeatable")
    lg.add_argument("--mfa", action="store_true",
                    help="log in with multi-factor authentication")
    lg.set_defaults(func=cmd_login)


def token_dir_for(cfg: Any, user: str) -> Path:
    from ..credentials import expand_token_dir
    try:
        home = pwd.getpwnam(user).pw_dir
    except KeyError:
        raise CliExit(EXIT_USAGE, f"login: you ({user}) have no account entry on this "
                                  "host; log in on a host where you do") from None
    base, rest = expand_token_dir(cfg.credentials.token_dir, user, home)
    return Path(base) / rest


def resolve_collections(cfg: Any, names: List[str]) -> List[str]:
    """Collection UUIDs or the site's aliases (``theta-dtn``) -> UUIDs."""
    from ..request import _UUID_RE
    aliases = {k.lower(): v for k, v in dict(cfg.collections.aliases).items()}
    out = []
    for name in names:
        if _UUID_RE.match(name):
            out.append(name.lower())
        elif name.lower() in aliases:
            out.append(str(aliases[name.lower()]).lower())
        else:
            known = ", ".join(sorted(aliases)) or "none defined"
            raise CliExit(EXIT_USAGE, f"login: --collection {name!r} is neither a collection "
                                      f"UUID nor a site alias (aliases: {known})")
    return out


def _previous_collections(token_dir: Path) -> List[str]:
    """Collections the user's current login consented to, so that logging in
    again (say, for a collection's policy) does not drop them."""
    from ..credentials import TOKEN_FILE_NAME, UserTokens
    try:
        with open(token_dir / TOKEN_FILE_NAME, encoding="utf-8") as fh:
            return list(UserTokens.from_json(fh.read(65536)).collections)
    except (OSError, ValueError):
        return []


def run_login(cfg: Any, *, collections: List[str], flow_manager: Optional[Any] = None,
              user: Optional[str] = None, policies: Sequence[str] = (),
              identities: Sequence[str] = (), domains: Sequence[str] = (),
              mfa: bool = False) -> Path:
    """The login flow and the token write; returns the token file.

    Consents to the data_access of ``collections``, of the site's
    ``collections.data_access`` and of what the previous login had; the
    session requirements (``policies`` ...) come from a job comment that
    quoted Globus's AuthPolicyFailed.
    """
    from ..credentials import login_flow, write_user_tokens
    if cfg.credentials.mode == "client":
        raise CliExit(EXIT_USAGE, "login: this site stages data with its own Globus service "
                                  "identity (credentials.mode: client); you have nothing to "
                                  "log in to -- ask the site which paths you may name")
    if not cfg.credentials.client_id:
        raise CliExit(EXIT_USAGE, f"login: {cfg.source}: credentials.client_id is not set; "
                                  "ask the site admin")
    user = user or caller_name()
    token_dir = token_dir_for(cfg, user)
    if not token_dir.parent.is_dir():
        raise CliExit(EXIT_USAGE, f"login: {token_dir.parent} does not exist; the site keeps "
                                  "tokens there (credentials.token_dir) -- ask the site admin")
    wanted = (resolve_collections(cfg, collections)
              + [c.lower() for c in getattr(cfg.collections, "data_access", ())]
              + _previous_collections(token_dir))
    tokens = login_flow(client_id=cfg.credentials.client_id,
                        collection_ids=list(dict.fromkeys(wanted)),
                        auth_url=cfg.globus.auth_url, flow_manager=flow_manager,
                        session_required_policies=list(policies),
                        session_required_identities=list(identities),
                        session_required_single_domain=list(domains),
                        session_required_mfa=mfa)
    return write_user_tokens(tokens, token_dir=token_dir)


def cmd_login(args: Any) -> int:
    cfg = load_site(args.config)
    if os.geteuid() == 0 and os.environ.get("SUDO_USER"):
        # Under sudo the tokens would be root's: the agent would use them for
        # root's jobs, never for the user who typed the command.
        raise CliExit(EXIT_USAGE, "login: run it as yourself, not through sudo")
    path = run_login(cfg, collections=list(args.collection or []),
                     policies=list(getattr(args, "policy", None) or []),
                     identities=list(getattr(args, "identity", None) or []),
                     domains=list(getattr(args, "domain", None) or []),
                     mfa=bool(getattr(args, "mfa", False)))
    emit({"ok": True, "user": caller_name(), "token_file": str(path)}, as_json=args.json,
         text=f"logged in: the staging agent now uses your Globus login ({path}); "
              "held jobs waiting for you resume on its next cycle")
    return EXIT_OK
