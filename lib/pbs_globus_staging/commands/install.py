"""``install`` and ``upgrade`` (the same: create or re-import the resources,
the hooks and their config with qmgr)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping, Optional

from ..services import EXIT_OK, journal_path, load_site, open_journal, pbs_home


def add_options(p) -> None:
    """The options install, upgrade and uninstall share."""
    p.add_argument("--dry-run", action="store_true", help="print the qmgr commands only")
    p.add_argument("--python", help="interpreter the periodic hook runs the agent with")
    p.add_argument("--freq", type=int, help="periodic hook freq (seconds)")
    p.add_argument("--alarm", type=int, help="periodic hook alarm (seconds)")


def register(sub) -> None:
    for name, text in (("install", "create resources and hooks with qmgr"),
                       ("upgrade", "re-import hooks and config (= install)")):
        i = sub.add_parser(name, help=text)
        add_options(i)
        i.set_defaults(func=cmd_install)


def installer_inputs(args, *, environ: Optional[Mapping[str, str]] = None):
    from .. import installer
    from ..pbsctl import read_pbs_conf
    environ = os.environ if environ is None else environ
    cfg = load_site(args.config)
    conf = read_pbs_conf(environ=environ)
    pbs_exec = cfg.pbs.exec or conf.get("PBS_EXEC") or "/opt/pbs"
    home = pbs_home(cfg)
    cf_path = Path(home) / "globus_staging" / "globus_staging.json"
    plan = installer.make_plan(hook_config=cf_path, periodic_freq=args.freq,
                               periodic_alarm=args.alarm)
    periodic_attrs = dict(plan.hooks[-1][2])
    # the periodic hook's .HK holds both (or --alarm/--freq replaced them): one place
    alarm = float(periodic_attrs["alarm"])
    freq = float(periodic_attrs["freq"])
    # The run must end before the next one is due, or PBS skips that one and
    # the release lag doubles: leave the interpreter start-up some room.
    budget = installer.run_budget(cfg.agent.cycle_budget, freq=freq, alarm=alarm)
    data = installer.hook_config(site_config_path=Path(os.path.abspath(cfg.source)), site=cfg,
                                 journal=journal_path(cfg),
                                 python=args.python or cfg.agent.python or sys.executable,
                                 cycle_budget=budget, alarm=alarm, env=_forward_env(environ))
    return installer, cfg, pbs_exec, cf_path, plan, data


def _forward_env(environ: Mapping[str, str]) -> dict:
    keys = ("GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_SERVICE_URL_AUTH", "PBS_CONF_FILE",
            "GLOBUS_STAGING_CONFIG")
    return {k: environ[k] for k in keys if environ.get(k)}


def cmd_install(args, *, qmgr=None, environ: Optional[Mapping[str, str]] = None,
                out=None) -> int:
    """``install``; ``qmgr`` (an ``installer.Qmgr``), ``environ`` and ``out`` are the
    command's own by default (the test sites pass the double's, in-process)."""
    out = sys.stdout if out is None else out
    installer, cfg, pbs_exec, cf_path, plan, data = installer_inputs(args, environ=environ)
    if args.dry_run:
        print("# pbs-globus-staging: qmgr script (run as root: qmgr < FILE)", file=out)
        print(f"# hook config to be written to {cf_path}", file=out)
        for line in plan.script(assume_empty=True):
            print(line, file=out)
        return EXIT_OK
    installer.write_hook_config(cf_path, data)
    journal = open_journal(cfg)
    journal.close()
    installer.install(plan, qmgr or installer.Qmgr(pbs_exec=pbs_exec), out=out)
    print(f"installed: hook config {cf_path}; journal {journal_path(cfg)}", file=out)
    return EXIT_OK
