"""The ``globus-staging`` subcommands, one module per command (globus-cli
style).

Each command module has ``register(sub)``, which adds its argparse
subparser with ``set_defaults(func=...)``, and the run function it names.
They take what they share (site config, journal, backend, exit codes,
``CliExit``, the caller) from ``..services``, never from the entry point
``cli.py``, which lists the modules in ``COMMANDS`` and dispatches.
``userviews`` is not a command: the per-user summaries the agent writes and
``show``/``status`` read.
"""
from __future__ import annotations

# Kept so that code written against the old home of these names still runs.
from ..services import (EXIT_BAD, EXIT_NOTFOUND, EXIT_OK, EXIT_RETRY, EXIT_USAGE, CliExit,
                        acting_admin, caller_name, emit, is_root, require_root)

__all__ = ["EXIT_OK", "EXIT_BAD", "EXIT_USAGE", "EXIT_RETRY", "EXIT_NOTFOUND", "CliExit",
           "acting_admin", "caller_name", "emit", "is_root", "require_root"]
