"""The design's invariants, checked from the outside after a scenario.

Used by every end-to-end scenario test:

1. no job ever starts before its stage-in succeeded;
2. no request ever has two transfers (no Globus task is created twice for the
   same data while an earlier one has not failed);
3. a job is released only when every item of its request has positive
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
    finally:
        journal.close()
    live: Dict[str, List[str]] = {}
    for task in list(site.emulator.tasks.values()):
        tag = _TAG.search(str(task.label or ""))
        if tag is None or task.status == "FAILED":
            continue
        live.setdefault(tag.group(0), []).append(task.task_id)
    for tag, ids in live.items():
        if len(ids) > 1:
            problems.append(f"the same data {tag} has {len(ids)} Globus tasks: {ids}")
    return problems


def arrival_violations(site) -> List[str]:
    """Invariant 3, from the emulator's own record of what each task moved."""
    from ..emulator.engine import PathRefused, local_path, normalize

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
