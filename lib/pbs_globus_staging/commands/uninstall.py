"""``uninstall``: remove what ``install`` created (and, with ``--purge``, the
journal); say what is left and whose it is."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

from ..services import EXIT_BAD, EXIT_OK, journal_path
from .install import add_options, installer_inputs


def register(sub) -> None:
    i = sub.add_parser("uninstall", help="remove what install created and the "
                       "agent's log, views and token caches; keep the journal")
    add_options(i)
    i.add_argument("--purge", action="store_true",
                   help="also remove the journal (the job history)")
    i.set_defaults(func=cmd_uninstall)


def cmd_uninstall(args) -> int:
    installer, cfg, pbs_exec, cf_path, plan, _data = installer_inputs(args)
    journal = Path(journal_path(cfg))
    remove, keep = installer.state_files(hook_config=cf_path, journal=journal,
                                         purge=args.purge)
    problems: List[str] = []
    if args.dry_run:
        for name, _s, _a in plan.hooks:
            print(f"delete hook {name}")
        for name, _ in installer.RESOURCES:
            print(f"delete resource {name}")
        for path in remove:
            print(f"remove {path}")
    else:
        problems = installer.uninstall(plan, installer.Qmgr(pbs_exec=pbs_exec))
        for p in problems:
            print(f"globus-staging: {p}", file=sys.stderr)
        installer.remove_state_files(remove)
    if keep:
        print(f"kept: the journal {journal} (the job history 'show' reads); "
              "'globus-staging uninstall --purge' removes it too")
    # Credentials the install did not create: say where they are, never drop them silently.
    if cfg.credentials.mode == "user":
        print(f"not removed: each user's Globus login (refresh token) in "
              f"{cfg.credentials.token_dir}, which belongs to the user; a user deletes it "
              "there, or revokes it at https://app.globus.org/account/consents")
    elif cfg.credentials.client_secret_file:
        print(f"not removed: the client secret {cfg.credentials.client_secret_file} "
              "(the site's own file)")
    return EXIT_BAD if problems else EXIT_OK
