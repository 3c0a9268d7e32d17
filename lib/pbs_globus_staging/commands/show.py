"""``show JOBID`` and ``status``: read-only views.

Root reads the journal (and, for ``show``, what PBS still knows of the job);
any other user reads the per-user summaries the agent writes for them
(``userviews``), so a user sees their own jobs only -- also after they have
left PBS -- and another user's job reads exactly like one that never existed.
"""
from __future__ import annotations

from typing import Any, Optional

from .. import report
from . import EXIT_NOTFOUND, EXIT_OK, CliExit, caller_name, emit, is_root
from . import userviews


def _not_found(job_id: str) -> CliExit:
    return CliExit(EXIT_NOTFOUND, f"no staging record for job {job_id} (or it is not yours); "
                                  "the agent records a job on its first cycle after qsub")


def resolve_job_id(journal: Any, job_id: str) -> Optional[str]:
    """The journal's id for ``job_id``; a bare sequence number (``123``)
    matches ``123.<server>`` as qstat does, when exactly one job has it."""
    if journal.get_job(job_id) is not None or journal.requests_for_job(job_id):
        return job_id
    if "." in job_id:
        return None
    matches = [j.job_id for j in journal.jobs() if j.job_id.startswith(job_id + ".")]
    return matches[0] if len(matches) == 1 else None


def _pbs_attrs(cfg: Any, job_id: str) -> Optional[dict]:
    """What PBS still has on the job (best effort: PBS down or the job purged
    from history just means the journal alone tells the story)."""
    from ..errors import StagingError
    from ..pbsctl import PbsCommands
    try:
        return PbsCommands(pbs_exec=cfg.pbs.exec, timeout=10).job(job_id)
    except StagingError:
        return None


def cmd_show(args: Any) -> int:
    from ..cli import journal_path, load_site, open_journal
    cfg = load_site(args.config)
    if is_root():
        journal = open_journal(cfg, readonly=True)
        try:
            job_id = resolve_job_id(journal, args.jobid)
            if job_id is None:
                raise _not_found(args.jobid)
            attrs = None if args.no_pbs else _pbs_attrs(cfg, job_id)
            view = report.job_timeline(journal, job_id, pbs_job=attrs)
        finally:
            journal.close()
    else:
        view = userviews.read_view(userviews.views_dir(journal_path(cfg)), caller_name(),
                                   args.jobid)
    if view is None:
        raise _not_found(args.jobid)
    emit(view, as_json=args.json, text=report.format_timeline(view))
    return EXIT_OK


def cmd_status(args: Any) -> int:
    from ..cli import journal_path, load_site, open_journal, state_dir
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
