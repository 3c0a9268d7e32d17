"""Collated views read from the journal: one job's timeline, the site status.

They read only the journal (plus, for ``show`` run by root, what PBS still
knows of the job), so they work after the job has left PBS.  The same dicts
are what ``--json`` prints and what the per-user summaries hold
(``commands/userviews.py``), so a user's ``show`` and root's agree.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Iterable, List, Mapping, Optional

from . import decide
from .events import History
from .states import LIVE_REQUEST, LIVE_TRANSFER, Direction, Request, Transfer

# Request states in which a job is still waiting for staging to finish.
WAITING_STATES = LIVE_REQUEST
LIVE_TRANSFERS = LIVE_TRANSFER

# How the text view heads each request.
_SECTION = {Direction.IN: "stage-in", Direction.OUT: "stage-out"}


def _ts(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _transfer_dict(t: Any, *, current: bool) -> Dict[str, Any]:
    return {
        "task_id": t.task_id, "status": t.status, "label": t.label,
        "files": t.files, "files_transferred": t.files_transferred,
        "files_skipped": t.files_skipped, "bytes_transferred": t.bytes_transferred,
        "bytes_per_second": t.bytes_per_second, "faults": t.faults,
        "fatal_code": t.fatal_code, "nice_status": t.nice_status, "message": t.message,
        "grafted": bool(t.grafted), "submitted": t.submitted, "completed": t.completed,
        "last_polled": t.last_polled,
        # False for a transfer an admin retry or adopt replaced: kept in the
        # view because the history should say what happened to it.
        "current": current,
    }


def alerts_for_job(journal: Any, job_id: str) -> List[Dict[str, Any]]:
    """The alerts sent about a job (the alert ledger keys them ``JOB:kind:task``)."""
    fn = getattr(journal, "alerts_for_job", None)
    if fn is not None:                       # the journal's own query, once it has one
        rows = fn(job_id)
    else:
        like = job_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
        rows = journal._query("SELECT * FROM alerts WHERE key LIKE ? ESCAPE '\\'"
                              " ORDER BY first_sent", (like,))
    out = []
    for r in rows:
        get = r.__getitem__ if not hasattr(r, "rule") else (lambda k, r=r: getattr(r, k))
        key = str(get("key"))
        parts = key.split(":")
        out.append({"rule": get("rule"), "kind": parts[1] if len(parts) > 1 else "",
                    "task_id": parts[2] if len(parts) > 2 and parts[2] != "-" else None,
                    "first_sent": get("first_sent"), "last_sent": get("last_sent"),
                    "count": get("count")})
    return out


def job_timeline(journal: Any, job_id: str, *, pbs_job: Optional[Mapping[str, Any]] = None
                 ) -> Optional[dict]:
    """Everything the journal knows of one job, as one dict (None: unknown job).

    ``pbs_job``: the job's ``qstat -x -f -F json`` attributes when PBS still
    has it; adds when it started and ended, which the journal does not keep.
    """
    job = journal.get_job(job_id)
    reqs = journal.requests_for_job(job_id)
    if job is None and not reqs:
        return None
    events = journal.events(job_id)
    requests = []
    linked_ids = set()
    for req in reqs:
        current = sorted({i.transfer_id for i in journal.items_for_request(req.request_id)})
        linked_ids.update(current)
        # Transfers this request used before an admin retry/adopt replaced them
        # are no longer linked through items, but their events name them.
        earlier = sorted({e.transfer_id for e in events
                          if e.request_id == req.request_id and e.transfer_id
                          and e.transfer_id not in current})
        transfers = []
        for tid, is_current in [(t, False) for t in earlier] + [(t, True) for t in current]:
            t = journal.get_transfer(tid)
            if t is not None:
                transfers.append(_transfer_dict(t, current=is_current))
        requests.append({"direction": req.direction, "state": req.state,
                         "request": req.normalized, "message": req.message,
                         "action": req.action, "attempts": req.attempts,
                         "created": req.created, "updated": req.updated,
                         "transfers": transfers})

    timeline: List[Dict[str, Any]] = []
    qtime = job.qtime if job is not None else None
    stagein = next((r for r in reqs if r.direction == Direction.IN), None)
    if qtime:
        timeline.append({"time": qtime, "kind": "submitted",
                         "message": "job submitted" + (
                             "; held (hold 's') until its stage-in succeeds"
                             if stagein is not None else "")})
    for e in events:
        entry = {"time": e.time, "kind": e.kind, "message": e.message or ""}
        task = (e.data or {}).get("task_id") if isinstance(e.data, dict) else None
        if task:
            entry["task_id"] = task
        if isinstance(e.data, dict) and e.data.get("by"):
            entry["by"] = e.data["by"]
        timeline.append(entry)
    if pbs_job:
        # PBS prints whole seconds: a job released at 12:00:05.4 shows stime
        # 12:00:05.  Sort PBS's entries no earlier than what must precede them
        # (release, then start) so the story reads in the order it happened.
        released = max((e.time for e in events if e.kind in (History.RELEASED, History.ADMIN_RELEASE)),
                       default=0.0)
        stime = decide.parse_pbs_time(pbs_job.get("stime"))
        started_key = 0.0
        if stime:
            # PBS's own start time replaces the agent's "job is running" note.
            timeline[:] = [t for t in timeline if t.get("kind") != History.JOB_STARTED]
            started_key = max(stime, released)
            timeline.append({"time": stime, "kind": "started",
                             "message": "job started running (PBS stime)",
                             "_key": started_key})
        obit = decide.parse_pbs_time(pbs_job.get("obittime"))
        exit_status = pbs_job.get("Exit_status")
        if obit and exit_status not in (None, ""):
            timeline.append({"time": obit, "kind": "exited",
                             "message": f"job ended with exit status {exit_status} (PBS)",
                             "_key": max(obit, started_key)})
    alerts = alerts_for_job(journal, job_id)
    for a in alerts:
        timeline.append({"time": a["first_sent"], "kind": "alert_sent",
                         "message": f"{a['kind']} alert sent ({a['rule']})"
                                    + (f", {a['count']} times in all" if (a["count"] or 0) > 1
                                       else "")})
    # Stable sort: events written in one transaction keep their order.
    timeline.sort(key=lambda e: e.get("_key") or e["time"] or 0)
    for e in timeline:
        e.pop("_key", None)

    exit_status = job.exit_status if job is not None else None
    obit = journal.obit(job_id)
    if exit_status is None and obit is not None:
        exit_status = obit.exit_status
    if exit_status is None and pbs_job and pbs_job.get("Exit_status") not in (None, ""):
        exit_status = int(pbs_job["Exit_status"])
    owner = job.owner if job is not None else reqs[0].owner
    return {"job_id": job_id, "owner": owner,
            "queue": job.queue if job is not None else None,
            "pbs_state": (pbs_job or {}).get("job_state"),
            "gone_since": job.gone_since if job is not None else None,
            "exit_status": exit_status, "requests": requests, "alerts": alerts,
            "timeline": timeline, "generated": time.time()}


def _bytes(n: Optional[float]) -> str:
    return decide.human_bytes(float(n or 0))


def format_timeline(view: dict) -> str:
    head = f"job {view['job_id']}  owner {view['owner']}  queue {view.get('queue') or '-'}"
    if view.get("pbs_state"):
        head += f"  PBS state {view['pbs_state']}"
    elif view.get("gone_since"):
        head += f"  (left PBS {_ts(view['gone_since'])})"
    if view.get("exit_status") is not None:
        head += f"  exit status {view['exit_status']}"
    lines = [head]
    for req in view["requests"]:
        lines.append(f"  {_SECTION.get(req['direction'], req['direction'])}: {req['state']}"
                     f"  {req['request']}")
        if req.get("message"):
            lines.append(f"    why: {req['message']}")
        if req.get("action") and req["state"] == Request.USER_ACTION:
            lines.append(f"    to fix: {req['action']}")
        for t in req["transfers"]:
            text = (f"    Globus task {t['task_id'] or '(not yet submitted)'}: {t['status']}"
                    f"  {t['files_transferred'] or 0}/{t['files'] or 0} files"
                    f"  {_bytes(t['bytes_transferred'])}")
            if t.get("bytes_per_second") and t["status"] in LIVE_TRANSFERS:
                text += f" at {_bytes(t['bytes_per_second'])}/s"
            if t.get("faults"):
                text += f"  faults {t['faults']}"
            if t.get("nice_status") and t["nice_status"] != "OK":
                text += f"  ({t['nice_status']})"
            if t.get("grafted"):
                text += "  [grafted]"
            if not t.get("current", True):
                text += "  [replaced]"
            lines.append(text)
            if t.get("message") and t["status"] != Transfer.SUCCEEDED:
                lines.append(f"      {t['message']}")
    if view.get("alerts"):
        lines.append("  alerts sent: " + ", ".join(
            f"{a['kind']} ({a['rule']}{', x' + str(a['count']) if (a['count'] or 0) > 1 else ''})"
            for a in view["alerts"]))
    lines.append("  timeline:")
    for e in view["timeline"]:
        extra = f" [by {e['by']}]" if e.get("by") else ""
        lines.append(f"    {_ts(e['time'])}  {e['kind']:<22} {e['message']}{extra}")
    return "\n".join(lines)


def status(journal: Any, *, now: Optional[float] = None) -> dict:
    """All staged jobs by request state, the oldest waiting, transfers in
    flight and the last agent cycles (root's view: reads the whole journal)."""
    now = time.time() if now is None else now
    by_state: Dict[str, List[str]] = {}
    oldest: Dict[str, Dict[str, Any]] = {}
    for req in journal.requests():
        key = f"stage-{req.direction} {req.state}"
        by_state.setdefault(key, []).append(req.job_id)
        if req.state in WAITING_STATES:
            created = req.created or 0
            if key not in oldest or created < oldest[key]["since"]:
                oldest[key] = {"job_id": req.job_id, "since": created,
                               "age_seconds": round(now - created, 1)}
    in_flight = [{"task_id": t.task_id, "identity": t.identity, "status": t.status,
                  "direction": t.direction, "files": t.files or 0,
                  "files_transferred": t.files_transferred or 0,
                  "bytes_transferred": t.bytes_transferred or 0, "faults": t.faults or 0,
                  "label": t.label, "submitted": t.submitted}
                 for t in journal.transfers(status=LIVE_TRANSFERS)]
    cycles = [{"started": c.started, "finished": c.finished, "ok": bool(c.ok), "error": c.error,
               "globus_calls": c.globus_calls, "pbs_calls": c.pbs_calls,
               "cpu_seconds": c.cpu_seconds, "jobs": c.jobs} for c in journal.last_cycles(5)]
    down = journal.get_meta("globus_down_since") or ""
    return {"jobs_by_state": {k: sorted(v) for k, v in sorted(by_state.items())},
            "oldest_waiting": oldest, "transfers_in_flight": in_flight,
            "last_cycles": cycles,
            "globus_down_since": float(down) if down else None}


def user_status(views: Iterable[dict], *, now: Optional[float] = None) -> dict:
    """``status`` for one user, from their own job summaries."""
    now = time.time() if now is None else now
    by_state: Dict[str, List[str]] = {}
    oldest: Dict[str, Dict[str, Any]] = {}
    in_flight = []
    for v in views:
        for req in v.get("requests", []):
            key = f"stage-{req['direction']} {req['state']}"
            by_state.setdefault(key, []).append(v["job_id"])
            if req["state"] in WAITING_STATES:
                created = req.get("created") or 0
                if key not in oldest or created < oldest[key]["since"]:
                    oldest[key] = {"job_id": v["job_id"], "since": created,
                                   "age_seconds": round(now - created, 1)}
            for t in req.get("transfers", []):
                if t["status"] in LIVE_TRANSFERS and t.get("current", True):
                    in_flight.append({"task_id": t["task_id"], "status": t["status"],
                                      "direction": req["direction"], "job_id": v["job_id"],
                                      "files": t["files"] or 0,
                                      "files_transferred": t["files_transferred"] or 0,
                                      "bytes_transferred": t["bytes_transferred"] or 0,
                                      "faults": t.get("faults") or 0, "label": t["label"]})
    return {"jobs_by_state": {k: sorted(v) for k, v in sorted(by_state.items())},
            "oldest_waiting": oldest, "transfers_in_flight": in_flight}


def format_status(data: dict) -> str:
    lines = ["staged jobs by state:"]
    if not data["jobs_by_state"]:
        lines.append("  (none)")
    for key, jobs in data["jobs_by_state"].items():
        extra = ""
        old = data["oldest_waiting"].get(key)
        if old:
            extra = f"  oldest {old['job_id']} waiting {_age(old['age_seconds'])}"
        shown = " ".join(jobs[:5]) + (" ..." if len(jobs) > 5 else "")
        lines.append(f"  {key:<28} {len(jobs):>5}{extra}   {shown}")
    flying = data["transfers_in_flight"]
    lines.append(f"transfers in flight: {len(flying)}")
    for t in flying[:20]:
        who = t.get("identity") or t.get("job_id") or ""
        lines.append(f"  {t['task_id'] or '(unsubmitted)'}  stage-{t.get('direction') or '?'}"
                     f"  {t['status']:<9} {t['files_transferred']}/{t['files']} files"
                     f"  {_bytes(t['bytes_transferred'])}"
                     + (f"  faults {t['faults']}" if t.get("faults") else "") + f"  {who}")
    if len(flying) > 20:
        lines.append(f"  ... and {len(flying) - 20} more (--json lists all)")
    if data.get("globus_down_since"):
        lines.append(f"Globus unreachable since {_ts(data['globus_down_since'])}")
    if "last_cycles" in data:
        if data["last_cycles"]:
            c = data["last_cycles"][0]
            took = (c["finished"] - c["started"]) if c["finished"] else None
            lines.append(f"last agent cycle: {_ts(c['started'])}"
                         + (f" took {took:.1f} s" if took is not None else " (unfinished)")
                         + f" ok={c['ok']} globus_calls={c['globus_calls']} "
                         f"pbs_calls={c['pbs_calls']} cpu={c['cpu_seconds'] or 0:.2f}s")
            errors = [x for x in data["last_cycles"] if x["error"]]
            for x in errors[:3]:
                lines.append(f"  error in cycle of {_ts(x['started'])}: {x['error']}")
        else:
            lines.append("last agent cycle: none recorded yet")
    return "\n".join(lines)
