"""What the ``globus-staging`` commands share: the site config, the journal,
the Globus backend, logging, exit codes and the caller's identity.

The wiring module: each command module in ``commands/`` takes these from
here, and ``cli.py`` (the entry point) only builds the parser from the
command modules and dispatches, so no command imports the entry point.
Every command ends either by returning an exit code or by raising
``CliExit`` with a one-line message.
"""
from __future__ import annotations

import json
import logging
import os
import pwd
import sys
from pathlib import Path
from typing import Any, List, Optional

from .errors import ConfigError

EXIT_OK, EXIT_BAD, EXIT_USAGE, EXIT_RETRY, EXIT_NOTFOUND = 0, 1, 2, 3, 4
DEFAULT_SITE_CONFIG = "/etc/pbs-globus-staging/site.yaml"


# ------------------------------------------------------------------ site
def load_site(path: Optional[str]):
    from . import siteconfig
    path = path or os.environ.get("GLOBUS_STAGING_CONFIG") or DEFAULT_SITE_CONFIG
    if not os.path.exists(path) and path == DEFAULT_SITE_CONFIG:
        raise ConfigError(f"{path}: no site config (pass --config FILE; "
                          "'globus-staging files site.yaml.example' prints an example)")
    return siteconfig.load(path)


def pbs_home(cfg) -> str:
    return cfg.pbs.home or pbs_home_default()


def pbs_home_default() -> str:
    from .pbsctl import read_pbs_conf
    return read_pbs_conf().get("PBS_HOME") or "/var/spool/pbs"


def journal_path(cfg) -> str:
    return cfg.journal.path or os.path.join(pbs_home(cfg), "globus_staging", "journal.sqlite")


def state_dir(cfg) -> Path:
    return Path(journal_path(cfg)).parent


def open_journal(cfg, *, readonly: bool = False):
    from .journal import Journal
    return Journal.open(journal_path(cfg), readonly=readonly)


def make_backend(cfg):
    from . import credentials
    from .globus_backend import GlobusBackend
    cred = cfg.credentials
    if cred.mode == "client":
        if not cred.client_id or not cred.client_secret_file:
            raise ConfigError(f"{cfg.source}: credentials: client mode needs client_id and "
                              "client_secret_file")
        provider = credentials.ClientCredentialsProvider(
            client_id=cred.client_id, client_secret_file=Path(cred.client_secret_file),
            token_storage_path=state_dir(cfg) / "client-tokens.db", auth_url=cfg.globus.auth_url,
            data_access_collections=cfg.collections.data_access)
    else:
        if not cred.client_id:
            raise ConfigError(f"{cfg.source}: credentials.client_id: the native app's client "
                              "id is needed in user mode")
        provider = credentials.UserTokenProvider(
            client_id=cred.client_id, token_dir_template=cred.token_dir,
            cache_path=state_dir(cfg) / "user-tokens.db", auth_url=cfg.globus.auth_url)
    return GlobusBackend(credentials=provider, transfer_url=cfg.globus.transfer_url,
                         max_retries=cfg.globus.max_retries, http_timeout=cfg.globus.http_timeout)


def make_alerts(cfg, journal):
    """The alert sink the agent calls with its events (None when unconfigured)."""
    try:
        from . import alerts as alerts_mod
    except ImportError:
        return None
    factory = getattr(alerts_mod, "sink_for_agent", None)
    if factory is None:
        return None
    return factory(cfg, journal=journal)


def setup_logging(verbose: bool, log_file: Optional[str] = None) -> None:
    handlers: List[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            Path(log_file).parent.mkdir(parents=True, exist_ok=True)
            # Root-only like the journal: it names every user's jobs and paths,
            # and its directory is traversable (users reach their summaries).
            os.close(os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            if os.stat(log_file).st_mode & 0o077:
                os.chmod(log_file, 0o600)
            handlers.append(logging.FileHandler(log_file))
        except OSError:
            pass
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # The SDK logs request details at DEBUG; keep tokens out of logs regardless.
    logging.getLogger("globus_sdk").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


# ------------------------------------------------------------------ caller
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


def with_json(parser: Any) -> Any:
    """The ``--json`` option of the commands that print a report."""
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser
