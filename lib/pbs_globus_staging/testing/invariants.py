"""The design's invariants, checked from the outside after a scenario.

Used by every end-to-end scenario test:

1. no job ever starts before its stage-in succeeded;
2. a job starts only after every item of its request was delivered by a
   transfer that ended after the job was submitted, or by a task the user
   named (graft) -- never on the strength of an older transfer whose job may
   have used or removed the data.  The one older transfer allowed is that of
   a job which left PBS without ever starting (scenario D's lost queue);
3. no Globus task is created for the same data while an earlier one for them
   is still live (a later one after the first ended -- a resubmission -- is
   allowed);
and, for the record, that every staged job's journal and PBS state agree.
"""
from __future__ import annotations

import re
from typing import Dict, List

from .. import decide, states
from ..decide import parse_pbs_time

_TAG = re.compile(r"\[c:[0-9a-f]{12}\]")


def violations(site) -> List[str]:
    problems: List[str] = []
    journal = site.journal()
    try:
        for req in journal.requests(direction="in"):
            attrs = site.qstat(req.job_id)
            started = parse_pbs_time(attrs.get("stime")) if attrs else 0.0
            if not started:
                continue
            if req.state != decide.SUCCEEDED:
                problems.append(f"{req.job_id} started although its stage-in is {req.state}")
                continue
            # An admin's forced, logged `globus-staging release` is the one
            # sanctioned way past a stage-in.
            done = [e.time for e in journal.events(req.job_id)
                    if e.kind in ("stagein_succeeded", "admin_release")]
            # stime has one-second resolution
            if not done or int(min(done)) > started:
                problems.append(f"{req.job_id} started at {started} before its stage-in "
                                f"succeeded ({min(done) if done else 'never'})")
            res = attrs.get("Resource_List") or {}
            if res.get(states.RES_STATE) not in states.RUNNABLE:
                problems.append(f"{req.job_id} ran with {states.RES_STATE}="
                                f"{res.get(states.RES_STATE)}")
            if not any(e.kind == "admin_release" for e in journal.events(req.job_id)):
                problems.extend(_delivered_for(site, journal, req, attrs))
    finally:
        journal.close()
    by_tag: Dict[str, List[object]] = {}
    for task in list(site.emulator.tasks.values()):
        tag = _TAG.search(str(task.label or ""))
        if tag is None or task.status == "FAILED":
            continue
        by_tag.setdefault(tag.group(0), []).append(task)
    for tag, tasks in by_tag.items():
        tasks.sort(key=lambda t: t.request_time)
        for earlier, later in zip(tasks, tasks[1:]):
            ended = earlier.completion_time
            if ended is None or later.request_time < ended:
                problems.append(f"the same data {tag} has {len(tasks)} Globus tasks live at "
                                f"once: {[t.task_id for t in tasks]}")
                break
    return problems


def _delivered_for(site, journal, req, attrs) -> List[str]:
    """Invariant 2 for one started job."""
    submitted = parse_pbs_time(attrs.get("ctime") or attrs.get("qtime"))
    items = journal.items_for_request(req.request_id)
    if not items:
        return [f"{req.job_id} started with no transfer item behind its stage-in"]
    problems = []
    for item in items:
        t = journal.get_transfer(item.transfer_id)
        if item.outcome != "succeeded" or t is None or t.status != "succeeded":
            problems.append(f"{req.job_id} started although item {item.destination_path} is "
                            f"{item.outcome} (transfer {t.status if t else 'missing'})")
            continue
        if t.grafted:
            continue
        # ctime has one-second resolution: completed >= ctime is lenient by < 1 s.
        if (t.completed or 0) >= submitted:
            continue
        if _lost_queue_transfer(site, journal, t, req):
            continue
        problems.append(f"{req.job_id} (submitted {submitted:.0f}) started on transfer "
                        f"{t.task_id} that ended at {t.completed:.0f}, before it was "
                        f"submitted: nothing shows {item.destination_path} is still there")
    return problems


def _lost_queue_transfer(site, journal, t, req) -> bool:
    """The older transfer was made for a job that never started (scenario D)."""
    others = {i.request_id for i in journal.items_for_transfer(t.transfer_id)
              if i.request_id not in (None, req.request_id)}
    for rid in others:
        other = journal.get_request(rid)
        if other is None:
            continue
        if journal.obit(other.job_id) is not None:
            return False
        if parse_pbs_time((site.qstat(other.job_id) or {}).get("stime")):
            return False
    return bool(others)


def assert_invariants(site) -> None:
    problems = violations(site)
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
