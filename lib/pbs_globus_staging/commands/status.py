"""``status``: staged jobs by state, transfers in flight, the agent's last
cycles (root); a user's own jobs (anyone else).  Read-only."""
from __future__ import annotations

from typing import Any

from .. import report
from ..services import (EXIT_OK, caller_name, emit, is_root, journal_path, load_site,
                        open_journal, state_dir, with_json)
from . import userviews


def register(sub) -> None:
    st = with_json(sub.add_parser(
        "status", help="staged jobs by state, transfers in flight, last agent cycles",
        description="Root: all staged jobs by state, the oldest waiting, transfers in "
                    "flight, the last agent cycles and their errors. Users: their own jobs."))
    st.set_defaults(func=cmd_status)


def cmd_status(args: Any) -> int:
    cfg = load_site(args.config)
    if is_root():
        journal = open_journal(cfg, readonly=True)
        try:
            data = report.status(journal)
        finally:
            journal.close()
        # Is the serving agent alive (its lock and heartbeat)?
        from .. import serve
        data["agent"] = serve.agent_status(state_dir(cfg))
        text = report.format_status(data) + "\n" + serve.format_agent_status(data["agent"])
    else:
        views = userviews.list_views(userviews.views_dir(journal_path(cfg)), caller_name())
        data = report.user_status(views)
        data["user"] = caller_name()
        text = report.format_status(data)
    emit(data, as_json=args.json, text=text)
    return EXIT_OK
