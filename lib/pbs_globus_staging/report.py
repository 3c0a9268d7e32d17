"""Collated views read from the journal: one job's timeline, the site status.

They read only the journal, so they work after the job has left PBS.
"""
from __future__ import annotations

import time
from typing import Dict, List, Optional


def _ts(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def job_timeline(journal, job_id: str) -> Optional[dict]:
    job = journal.get_job(job_id)
    if job is None:
        return None
    requests = []
    for req in journal.requests_for_job(job_id):
        transfers = []
        for tid in sorted({i.transfer_id for i in journal.items_for_request(req.request_id)}):
            t = journal.get_transfer(tid)
            transfers.append({
                "task_id": t.task_id, "status": t.status, "label": t.label,
                "files": t.files, "files_transferred": t.files_transferred,
                "bytes_transferred": t.bytes_transferred, "nice_status": t.nice_status,
                "message": t.message, "grafted": bool(t.grafted),
                "submitted": t.submitted, "completed": t.completed,
            })
        requests.append({"direction": req.direction, "state": req.state, "request": req.normalized,
                         "message": req.message, "action": req.action, "transfers": transfers})
    events = [{"time": e.time, "kind": e.kind, "message": e.message}
              for e in journal.events(job_id)]
    return {"job_id": job.job_id, "owner": job.owner, "queue": job.queue,
            "gone_since": job.gone_since, "exit_status": job.exit_status,
            "requests": requests, "events": events}


def format_timeline(view: dict) -> str:
    lines = [f"job {view['job_id']}  owner {view['owner']}  queue {view['queue'] or '-'}"]
    for req in view["requests"]:
        lines.append(f"  stage-{req['direction']}: {req['state']}  {req['request']}")
        if req.get("message"):
            lines.append(f"    why: {req['message']}")
        if req.get("action") and req["state"] == "user-action":
            lines.append(f"    to fix: {req['action']}")
        for t in req["transfers"]:
            lines.append(f"    Globus task {t['task_id'] or '(not yet submitted)'}: {t['status']}"
                         f"  {t['files_transferred'] or 0}/{t['files'] or 0} files"
                         f"  {t['bytes_transferred'] or 0} bytes"
                         + (f"  ({t['nice_status']})" if t.get("nice_status") else ""))
    lines.append("  timeline:")
    for e in view["events"]:
        lines.append(f"    {_ts(e['time'])}  {e['kind']:<22} {e['message']}")
    return "\n".join(lines)


def status(journal, *, user: Optional[str] = None) -> dict:
    by_state: Dict[str, List[str]] = {}
    oldest: Dict[str, float] = {}
    for req in journal.requests():
        if user is not None and req.owner != user:
            continue
        key = f"stage-{req.direction} {req.state}"
        by_state.setdefault(key, []).append(req.job_id)
        if req.state in ("pending", "queued", "active", "user-action"):
            created = req.created or 0
            oldest[key] = min(oldest.get(key, created), created)
    in_flight = [{"task_id": t.task_id, "identity": t.identity, "status": t.status,
                  "files": f"{t.files_transferred or 0}/{t.files or 0}", "label": t.label}
                 for t in journal.transfers(status=("new", "active", "inactive"))
                 if user is None or t.identity == user]
    cycles = [{"started": c.started, "finished": c.finished, "ok": bool(c.ok), "error": c.error,
               "globus_calls": c.globus_calls, "pbs_calls": c.pbs_calls,
               "cpu_seconds": c.cpu_seconds} for c in journal.last_cycles(5)]
    return {"jobs_by_state": {k: sorted(v) for k, v in sorted(by_state.items())},
            "oldest_waiting": {k: v for k, v in oldest.items()},
            "transfers_in_flight": in_flight, "last_cycles": cycles}


def format_status(data: dict) -> str:
    lines = ["staged jobs by state:"]
    for key, jobs in data["jobs_by_state"].items():
        extra = ""
        if key in data["oldest_waiting"]:
            extra = f"  (oldest since {_ts(data['oldest_waiting'][key])})"
        lines.append(f"  {key:<28} {len(jobs):>5}{extra}")
    lines.append(f"transfers in flight: {len(data['transfers_in_flight'])}")
    for t in data["transfers_in_flight"][:20]:
        lines.append(f"  {t['task_id'] or '(unsubmitted)'}  {t['status']:<9} {t['files']:>9} files"
                     f"  {t['identity']}  {t['label']}")
    if data["last_cycles"]:
        c = data["last_cycles"][0]
        lines.append(f"last agent cycle: {_ts(c['started'])} ok={c['ok']} "
                     f"globus_calls={c['globus_calls']} pbs_calls={c['pbs_calls']} "
                     f"cpu={c['cpu_seconds'] or 0:.2f}s" + (f" error: {c['error']}" if c['error'] else ""))
    return "\n".join(lines)
