"""The design's invariants, checked from the outside after a scenario.

Used by every end-to-end scenario test:

1. no job ever starts before its stage-in succeeded;
2. no request ever has two transfers (no Globus task is created twice for the
   same data while an earlier one has not failed);
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


def assert_invariants(site) -> None:
    problems = violations(site)
    assert not problems, "invariants broken:\n  " + "\n  ".join(problems)
