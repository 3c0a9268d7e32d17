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
4. a job is released only when every item of its request has positive
   evidence of arrival at Globus: transferred, or skipped by a sync level as
   already present -- nothing skipped as a source error, no file of a
   recursive item missing (``arrival_violations``);
and, for the record, that every staged job's journal and PBS state agree.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List

from pbs_globus_staging import decide, states
from pbs_globus_staging.decide import parse_pbs_time

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


def arrival_violations(site) -> List[str]:
    """Invariant 4, from the emulator's own record of what each task moved."""
    from .emulator.engine import PathRefused, local_path, normalize

    emu = site.emulator
    tasks = emu.tasks
    problems: List[str] = []
    journal = site.journal()
    try:
        for req in journal.requests(direction="in"):
            kinds = {e.kind for e in journal.events(req.job_id)}
            attrs = site.qstat(req.job_id)
            started = parse_pbs_time(attrs.get("stime")) if attrs else 0.0
            if "admin_release" in kinds or not (started or "released" in kinds):
                continue
            for item in journal.items_for_request(req.request_id):
                t = journal.get_transfer(item.transfer_id)
                task = tasks.get(t.task_id or "")
                where = f"{req.job_id} released with {item.source_path}"
                if task is None or task.status != "SUCCEEDED":
                    problems.append(f"{where}: its Globus task {t.task_id} did not succeed")
                    continue
                if item.source_path.startswith("task="):
                    continue   # grafted: the owner vouched for the task
                problems.extend(_item_evidence(emu, task, item, where, normalize, local_path,
                                               PathRefused))
    finally:
        journal.close()
    return problems


def _item_evidence(emu, task, item, where, normalize, local_path, PathRefused) -> List[str]:
    def norm(p: str) -> str:
        try:
            return normalize(p)
        except PathRefused:
            return p

    top = norm(item.source_path)

    def under(p: str) -> bool:
        return p == top or (item.recursive and p.startswith(top.rstrip("/") + "/"))

    for err in task.skipped_errors:
        if under(norm(err["source_path"])):
            return [f"{where}: {err['source_path']} was skipped ({err['error_code']})"]
    arrived = {norm(s) for s, _d in list(task.successful) + list(task.sync_skipped)}
    if not item.recursive:
        return [] if top in arrived else [f"{where}: no evidence it was transferred"]
    coll = emu._collections[task.source_endpoint_id]
    root = local_path(coll, top)
    problems: List[str] = []

    def unreadable(exc: OSError) -> None:
        problems.append(f"{where}: {exc.filename} could not be listed to confirm arrival")

    done = task.completion_time or float("inf")
    for dirpath, _dirs, files in os.walk(root, onerror=unreadable):
        for name in files:
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file() or full.stat().st_mtime > done:
                continue
            rel = full.relative_to(root).as_posix()
            if norm(f"{top}/{rel}") not in arrived:
                problems.append(f"{where}: {top}/{rel} has no evidence of arrival")
    return problems


def assert_invariants(site) -> None:
    problems = violations(site) + arrival_violations(site)
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
