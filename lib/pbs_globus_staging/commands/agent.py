"""``agent``: run the staging agent (what the periodic hook runs), once, in
bounded runs, or served (``--serve``)."""
from __future__ import annotations

import json
import logging
import os

from ..services import (EXIT_OK, EXIT_RETRY, journal_path, load_site, make_alerts,
                        make_backend, open_journal, setup_logging, state_dir)


def register(sub) -> None:
    a = sub.add_parser("agent", help="run the staging agent (what the periodic hook runs)")
    a.add_argument("--once", action="store_true", help="one bounded run, then exit")
    a.add_argument("--serve", action="store_true",
                   help="stay running (one per site, reacts to qsub and job ends within a "
                        "second); what the periodic hook keeps alive when agent.serve is on")
    a.add_argument("--budget", type=float, help="seconds this run may take")
    a.set_defaults(func=cmd_agent)


def cmd_agent(args) -> int:
    from ..agent import Agent
    from ..pbsctl import PbsCommands
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
    from .. import serve
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
    from . import userviews
    try:
        n = userviews.publish(journal, userviews.views_dir(journal_path(cfg)), budget=2.0)
        if n:
            logging.getLogger("pbs_globus_staging.agent").debug("user views written: %d", n)
    except Exception as exc:  # noqa: BLE001 -- the agent's work is done; say so and go on
        logging.getLogger("pbs_globus_staging.agent").warning(
            "user views not written: %s", exc)
