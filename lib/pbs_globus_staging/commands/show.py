"""``show JOBID``: one job's staging timeline (read-only).

Root reads the journal (and, for ``show``, what PBS still knows of the job);
any other user reads the per-user summaries the agent writes for them
(``userviews``), so a user sees their own jobs only -- also after they have
left PBS -- and another user's job reads exactly like one that never existed.
"""
from __future__ import annotations

from typing import Any, Optional

from .. import report
from ..services import (EXIT_NOTFOUND, EXIT_OK, CliExit, caller_name, emit, is_root,
                        journal_path, load_site, open_journal, with_json)
from . import userviews


def register(sub) -> None:
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
    s.set_defaults(func=cmd_show)


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
