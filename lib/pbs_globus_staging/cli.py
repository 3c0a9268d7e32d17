"""``globus-staging``: the agent, the admin's tools, the user's view.

Exit codes scripts can rely on (every command):

  0  ok
  1  the thing asked about is in a bad state (``check`` found a problem, a
     ``retry`` of a request that has not failed, a job that already ran)
  2  usage or configuration error (bad arguments, invalid site config)
  3  a retryable outage (PBS or Globus unreachable, the journal locked)
  4  not found, not yours, or not allowed (another user's job reads exactly
     like a missing one; admin actions as a non-root user)

Users: ``show JOBID``, ``status``, ``login``.  Admins (root): ``status``,
``check``, ``retry``, ``cancel``, ``adopt``, ``release``, ``install`` /
``upgrade`` / ``uninstall``, and ``agent`` (what the periodic hook runs).
Each command lives in its own module in ``commands/`` (its subparser and its
run function); what they share comes from ``services``.  This module only
builds the parser from them and turns every failure into one line and an
exit code.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from .commands import (adopt, agent, cancel, check, files, install, login, release, retry,
                       show, status, uninstall)
from .errors import ConfigError, RetryableError, StagingError
from .services import (DEFAULT_SITE_CONFIG, EXIT_BAD, EXIT_NOTFOUND, EXIT_OK, EXIT_RETRY,
                       EXIT_USAGE, CliExit, journal_path, load_site, make_backend,
                       open_journal, pbs_home, state_dir)

# Besides main: the names scripts and tests already take from the entry point.
__all__ = ["main", "build_parser", "COMMANDS", "DEFAULT_SITE_CONFIG", "EXIT_OK", "EXIT_BAD",
           "EXIT_USAGE", "EXIT_RETRY", "EXIT_NOTFOUND", "CliExit", "load_site", "pbs_home",
           "journal_path", "state_dir", "open_journal", "make_backend"]

# In the order ``--help`` lists them; the commands of other distributions follow.
COMMANDS = (agent, install, uninstall, files, show, status, login, check, retry, cancel,
            adopt, release)
# Where another distribution registers a command module (one with ``register(sub)``): the
# test doubles (pbs-globus-staging-sim) add ``demo`` and ``emulator`` this way, so the
# product imports none of them and a production install has neither.
PLUGIN_GROUP = "pbs_globus_staging.commands"


def add_plugin_commands(sub) -> None:
    """Add the commands other installed distributions register, after the product's own.
    A name the CLI already has is not even loaded (a plugin cannot replace ``show``); one
    that fails to load is left out with one line on stderr (the rest still work)."""
    from importlib.metadata import entry_points
    found = entry_points()
    eps = (found.select(group=PLUGIN_GROUP) if hasattr(found, "select")   # 3.10+
           else found.get(PLUGIN_GROUP, ()))
    for ep in sorted(eps, key=lambda e: e.name):
        if ep.name in sub.choices:
            continue
        try:
            module = ep.load()
        except Exception as exc:  # noqa: BLE001 -- another package's bug, not ours to raise
            print(f"globus-staging: command {ep.name!r} from {ep.value} not loaded "
                  f"({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        module.register(sub)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="globus-staging",
                                description="Globus data staging for PBS jobs.")
    p.add_argument("--config", help=f"site config YAML (default {DEFAULT_SITE_CONFIG} "
                                     "or $GLOBUS_STAGING_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS:
        command.register(sub)
    add_plugin_commands(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliExit as exc:
        print(f"globus-staging: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"globus-staging: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RetryableError as exc:
        print(f"globus-staging: {exc} (try again later)", file=sys.stderr)
        return EXIT_RETRY
    except StagingError as exc:
        print(f"globus-staging: {exc}", file=sys.stderr)
        return EXIT_BAD
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 -- a bug must not print a traceback to users
        import logging
        import traceback
        logging.getLogger("pbs_globus_staging").error(
            "internal error in %s: %s", getattr(args, "command", "?"),
            "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        print(f"globus-staging: internal error ({type(exc).__name__}: {exc}); "
              "details are in the log; please report it to your PBS administrator",
              file=sys.stderr)
        return EXIT_BAD


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
