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
The commands live in ``commands/`` (one module per family).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from .errors import ConfigError, RetryableError, StagingError

EXIT_OK, EXIT_BAD, EXIT_USAGE, EXIT_RETRY, EXIT_NOTFOUND = 0, 1, 2, 3, 4
DEFAULT_SITE_CONFIG = "/etc/pbs-globus-staging/site.yaml"


# ------------------------------------------------------------------ plumbing
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


# ------------------------------------------------------------------ commands
def cmd_agent(args) -> int:
    from .agent import Agent
    from .pbsctl import PbsCommands
    cfg = load_site(args.config)
    setup_logging(args.verbose, os.path.join(str(state_dir(cfg)), "agent.log"))
    journal = open_journal(cfg)
    agent = Agent(config=cfg, journal=journal, pbs=PbsCommands(pbs_exec=cfg.pbs.exec),
                  backend=make_backend(cfg), alerts=make_alerts(cfg, journal))
    if getattr(args, "serve", False):
        try:
            return _serve(cfg, agent, journal, args)
        finally:
            journal.close()
    rc = EXIT_OK
    while True:
        stats = agent.run(budget=args.budget)  # None: cycle_budget, or the standalone default
        logging.getLogger("pbs_globus_staging.agent").info(
            "cycle done: passes=%d polls=%d submitted=%d released=%d globus_calls=%d "
            "pbs_calls=%d cpu=%.3fs errors=%d", stats.passes, stats.polls, stats.submitted,
            stats.released, stats.globus_calls, stats.pbs_calls, stats.cpu_seconds,
            len(stats.errors))
        rc = EXIT_OK if stats.ok else EXIT_RETRY
        _publish_user_views(cfg, journal)
        if args.once:
            break
    journal.close()
    return rc


# A served agent's runs: one journal cycle row (and one refresh of the users'
# summaries) per this many seconds.
SERVE_SEGMENT = 30.0


def _serve(cfg, agent, journal, args) -> int:
    """``agent --serve``: the long-lived agent (see serve.py)."""
    from . import serve
    log = logging.getLogger("pbs_globus_staging.agent")
    try:
        server = serve.Server(state_dir(cfg), config_path=cfg.source)
    except serve.AlreadyServing as exc:
        print(f"globus-staging: {exc}; nothing to do")
        return EXIT_OK
    server.install_signals()
    agent.should_stop = lambda: server.stop
    log.info("action=serve_start pid=%d", os.getpid())
    rc = EXIT_OK
    try:
        while not server.stop:
            try:
                stats = agent.run(budget=args.budget or SERVE_SEGMENT, waiter=server.wait)
            except Exception as exc:  # noqa: BLE001 -- a served agent outlives one bad run
                # e.g. PBS restarting (qstat refused in an unexpected way): say so
                # and go on after a pause; every step is journalled and idempotent.
                log.exception("action=run_failed reason=%s", json.dumps(str(exc)[:300]))
                rc = EXIT_RETRY
                server.wait(2.0)
                continue
            rc = EXIT_OK if stats.ok else EXIT_RETRY
            _publish_user_views(cfg, journal)
            server.beat()
    finally:
        log.info("action=serve_stop pid=%d reason=%s", os.getpid(),
                 json.dumps(server.why or "ended"))
        server.close()
    return rc


def _publish_user_views(cfg, journal) -> None:
    """Each user's summaries of their changed jobs (what a user's ``show``
    reads); bounded, and never a reason for the agent run to fail."""
    from .commands import userviews
    try:
        n = userviews.publish(journal, userviews.views_dir(journal_path(cfg)), budget=2.0)
        if n:
            logging.getLogger("pbs_globus_staging.agent").debug("user views written: %d", n)
    except Exception as exc:  # noqa: BLE001 -- the agent's work is done; say so and go on
        logging.getLogger("pbs_globus_staging.agent").warning(
            "user views not written: %s", exc)


def cmd_emulator(args) -> int:
    from .emulator import cli as emu_cli
    return int(emu_cli.run(args) or 0)


def _installer_inputs(args):
    from . import installer
    from .pbsctl import read_pbs_conf
    cfg = load_site(args.config)
    conf = read_pbs_conf()
    pbs_exec = cfg.pbs.exec or conf.get("PBS_EXEC") or "/opt/pbs"
    home = pbs_home(cfg)
    cf_path = Path(home) / "globus_staging" / "globus_staging.json"
    plan = installer.make_plan(hook_config=cf_path, periodic_freq=args.freq,
                               periodic_alarm=args.alarm)
    periodic_attrs = dict(plan.hooks[-1][2])
    alarm = float(periodic_attrs.get("alarm", 60))
    freq = float(periodic_attrs.get("freq", 30))
    # The run must end before the next one is due, or PBS skips that one and
    # the release lag doubles: leave the interpreter start-up some room.
    budget = installer.run_budget(cfg.agent.cycle_budget, freq=freq, alarm=alarm)
    data = installer.hook_config(site_config_path=Path(os.path.abspath(cfg.source)), site=cfg,
                                 journal=journal_path(cfg),
                                 python=args.python or cfg.agent.python or sys.executable,
                                 cycle_budget=budget, alarm=alarm, env=_forward_env())
    return installer, cfg, pbs_exec, cf_path, plan, data


def _forward_env() -> dict:
    keys = ("GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_SERVICE_URL_AUTH", "PBS_CONF_FILE",
            "GLOBUS_STAGING_CONFIG")
    return {k: os.environ[k] for k in keys if os.environ.get(k)}


def cmd_install(args) -> int:
    installer, cfg, pbs_exec, cf_path, plan, data = _installer_inputs(args)
    if args.dry_run:
        print("# pbs-globus-staging: qmgr script (run as root: qmgr < FILE)")
        print(f"# hook config to be written to {cf_path}")
        for line in plan.script(assume_empty=True):
            print(line)
        return EXIT_OK
    installer.write_hook_config(cf_path, data)
    journal = open_journal(cfg)
    journal.close()
    installer.install(plan, installer.Qmgr(pbs_exec=pbs_exec))
    print(f"installed: hook config {cf_path}; journal {journal_path(cfg)}")
    return EXIT_OK


def cmd_uninstall(args) -> int:
    installer, cfg, pbs_exec, cf_path, plan, _data = _installer_inputs(args)
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


def cmd_files(args) -> int:
    """Where the package keeps what it ships, or one of those files filled in
    with this install's paths (the program, the site config, the agent log)."""
    from . import installer
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


def cmd_demo(args) -> int:
    from . import demo
    return demo.main(workdir=args.workdir, keep=args.keep)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="globus-staging",
                                description="Globus data staging for PBS jobs.")
    p.add_argument("--config", help=f"site config YAML (default {DEFAULT_SITE_CONFIG} "
                                     "or $GLOBUS_STAGING_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    a = sub.add_parser("agent", help="run the staging agent (what the periodic hook runs)")
    a.add_argument("--once", action="store_true", help="one bounded run, then exit")
    a.add_argument("--serve", action="store_true",
                   help="stay running (one per site, reacts to qsub and job ends within a "
                        "second); what the periodic hook keeps alive when agent.serve is on")
    a.add_argument("--budget", type=float, help="seconds this run may take")
    a.set_defaults(func=cmd_agent)

    from .emulator import cli as emu_cli
    e = sub.add_parser("emulator", help="run the bundled Globus emulator on loopback",
                       description=emu_cli.DESCRIPTION)
    emu_cli.add_arguments(e)
    e.set_defaults(func=cmd_emulator)

    for name, func, text in (("install", cmd_install, "create resources and hooks with qmgr"),
                             ("upgrade", cmd_install, "re-import hooks and config (= install)"),
                             ("uninstall", cmd_uninstall, "remove what install created and the "
                              "agent's log, views and token caches; keep the journal")):
        i = sub.add_parser(name, help=text)
        i.add_argument("--dry-run", action="store_true", help="print the qmgr commands only")
        i.add_argument("--python", help="interpreter the periodic hook runs the agent with")
        i.add_argument("--freq", type=int, help="periodic hook freq (seconds)")
        i.add_argument("--alarm", type=int, help="periodic hook alarm (seconds)")
        if name == "uninstall":
            i.add_argument("--purge", action="store_true",
                           help="also remove the journal (the job history)")
        i.set_defaults(func=func)

    f = sub.add_parser("files", help="where the package keeps its hooks, example config, "
                                     "systemd unit and logrotate rule; or print one")
    f.add_argument("name", nargs="?", help="print this one (site.yaml.example, "
                                           "globus-staging-agent.service, "
                                           "globus-staging.logrotate) with this install's paths")
    f.set_defaults(func=cmd_files)

    _add_user_and_admin_commands(sub)

    d = sub.add_parser("demo", help="run the demo: hooks + PBS double + Globus emulator")
    d.add_argument("--workdir", help="where to put the demo's files (default: a temp dir)")
    d.add_argument("--keep", action="store_true", help="keep the work directory")
    d.set_defaults(func=cmd_demo)
    return p


def _add_user_and_admin_commands(sub) -> None:
    from .commands import admin, check, login, show

    def with_json(p):
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    s = with_json(sub.add_parser(
        "show", help="one job's staging timeline",
        description="One job's staging history: submission, hold, each Globus transfer "
                    "(task id, progress, faults), release, run, exit, stage-out, alerts "
                    "sent. Works after the job has left PBS. Root reads the journal; users "
                    "read the summaries the agent keeps for them (their own jobs only; "
                    "another user's job reads like a missing one). Exit 4: no such job."))
    s.add_argument("jobid", help="PBS job id (123.server, or 123)")
    s.add_argument("--no-pbs", action="store_true",
                   help="root: do not ask PBS for the run/exit times, journal only")
    s.set_defaults(func=show.cmd_show)

    st = with_json(sub.add_parser(
        "status", help="staged jobs by state, transfers in flight, last agent cycles",
        description="Root: all staged jobs by state, the oldest waiting, transfers in "
                    "flight, the last agent cycles and their errors. Users: their own jobs."))
    st.set_defaults(func=show.cmd_status)

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
    lg.set_defaults(func=login.cmd_login)

    ck = with_json(sub.add_parser(
        "check", help="is the install sound? (resources, hooks, config, journal, Globus)",
        description="One line per check, ok/WARN/FAIL with what to do; exit 1 if any FAIL."))
    ck.set_defaults(func=check.cmd_check)

    r = with_json(sub.add_parser(
        "retry", help="admin: a failed stage-in/out gets a fresh transfer",
        description="Set a failed (or canceled) request back to pending; the agent submits "
                    "a new transfer on its next cycle. For a stage-in the job is held (s) "
                    "and its state set back to waiting. Logged with your name."))
    r.add_argument("jobid")
    r.add_argument("--direction", choices=("in", "out"),
                   help="which request (default: the failed one, stage-in first)")
    r.set_defaults(func=admin.cmd_retry)

    c = with_json(sub.add_parser(
        "cancel", help="admin: cancel a job's live transfer(s); the request fails",
        description="Cancel the job's Globus task(s) and mark its staging failed; the agent "
                    "then applies the failure policy (hold or delete). A task that also "
                    "serves other jobs, or the user's own grafted task, is left running and "
                    "only detached from this job."))
    c.add_argument("jobid")
    c.add_argument("--direction", choices=("in", "out"))
    c.add_argument("--reason", help="recorded with the cancel")
    c.set_defaults(func=admin.cmd_cancel)

    a = with_json(sub.add_parser(
        "adopt", help="admin: make a job's stage-in wait on an existing Globus task",
        description="The job's stage-in waits on TASKID (like task= in the request); the "
                    "task must be visible to the job owner's Globus identity."))
    a.add_argument("jobid")
    a.add_argument("task_id", metavar="TASKID")
    a.add_argument("--reason", help="recorded with the adoption")
    a.set_defaults(func=admin.cmd_adopt)

    rl = with_json(sub.add_parser(
        "release", help="admin: force-release a held job without its stage-in (logged)",
        description="Mark the stage-in done, set globus_stage_state=staged-in and release "
                    "the 's' hold: the job runs without waiting for its data. Logged with "
                    "your name and the reason."))
    rl.add_argument("jobid")
    rl.add_argument("--reason", required=True, help="why (required; logged)")
    rl.set_defaults(func=admin.cmd_release)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from .commands import CliExit
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
