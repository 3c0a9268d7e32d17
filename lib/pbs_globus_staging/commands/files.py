"""``files``: where the package keeps what it ships, or one file filled in."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..errors import ConfigError
from ..services import (DEFAULT_SITE_CONFIG, EXIT_OK, load_site, pbs_home_default,
                        state_dir)


def register(sub) -> None:
    f = sub.add_parser("files", help="where the package keeps its hooks, example config, "
                                     "systemd unit and logrotate rule; or print one")
    f.add_argument("name", nargs="?", help="print this one (site.yaml.example, "
                                           "globus-staging-agent.service, "
                                           "globus-staging.logrotate) with this install's paths")
    f.set_defaults(func=cmd_files)


def cmd_files(args) -> int:
    """Where the package keeps what it ships, or one of those files filled in
    with this install's paths (the program, the site config, the agent log)."""
    from .. import installer
    if not args.name:
        print(f"hooks: {installer.default_hooks_dir()}")
        for name in installer.SHIPPED:
            print(f"{name}: {installer.DATA_DIR / name}")
        return EXIT_OK
    site_config = args.config or os.environ.get("GLOBUS_STAGING_CONFIG") or DEFAULT_SITE_CONFIG
    try:
        agent_log = str(state_dir(load_site(site_config)) / "agent.log")
    except ConfigError:          # no site config yet: the defaults
        agent_log = os.path.join(pbs_home_default(), "globus_staging", "agent.log")
    program = Path(sys.executable).with_name("globus-staging")
    sys.stdout.write(installer.shipped_file(
        args.name, site_config=os.path.abspath(site_config), agent_log=agent_log,
        program=str(program) if program.exists() else f"{sys.executable} -m pbs_globus_staging"))
    return EXIT_OK
