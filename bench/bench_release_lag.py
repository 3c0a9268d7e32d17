#!/usr/bin/env python3
"""Bench: release lag -- a stage-in transfer SUCCEEDED at Globus -> the qrls that frees its job.

A whole site (``StagingSite``: PBS double, Globus emulator on loopback, the
suite installed by the real installer) run with the INSTALLED DEFAULTS: the
periodic hook's ``freq``/``alarm`` from ``data/hooks/globus_staging_periodic.HK``
(re-installed with ``upgrade --freq F --alarm A``, so the installer derives the
agent's budget exactly as on a site), the site-config defaults of
``siteconfig.AgentSettings`` (``poll_interval``, ``cycle_budget``, ...), and the
double's periodic thread firing the hook every ``freq`` seconds; the agent runs
as the hook's subprocess, as on a real server.

``--jobs`` staged jobs are submitted at random moments over ``--span`` seconds,
each with one file whose size makes its transfer take 1..``--max-transfer`` s at
the emulator's fixed rate.  Per job: the emulator task's ``completion_time``
(latest of the job's ``globus_stage_tasks``) -> the timestamp of the server log
line "Holds s released" for that job.  Printed: median, p90, worst; Globus API
calls and PBS commands per minute; and where the lag comes from (was the
transfer finished while an agent run was polling, or in the gap between runs;
the gap between runs; the hook-start -> agent-start delay).

    .venv/bin/python bench/bench_release_lag.py [--jobs 40] [--span 120] [--max-transfer 20]
        [--cycle-budget S] [--poll-interval S] [--freq 30] [--alarm 60]
"""
from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "lib"), str(REPO / "sim" / "lib")]   # the product, its doubles

_LOG = re.compile(r"^(\d\d/\d\d/\d{4} \d\d:\d\d:\d\d\.\d{6});[0-9a-f]{4};[^;]*;(\w+);([^;]*);(.*)$")


def log_events(lines):
    """(epoch, objtype, objname, message) for each server log line."""
    out = []
    for line in lines:
        m = _LOG.match(line)
        if m:
            stamp = dt.datetime.strptime(m.group(1), "%m/%d/%Y %H:%M:%S.%f").timestamp()
            out.append((stamp, m.group(2), m.group(3), m.group(4)))
    return out


def pct(vals, q):
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def main(argv=None) -> int:
    from pbs_globus_staging import installer, siteconfig

    hk = installer.read_hk(installer.default_hooks_dir() / "globus_staging_periodic.HK")
    defaults = siteconfig.AgentSettings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=40)
    p.add_argument("--span", type=float, default=120.0, help="submissions spread over S s")
    p.add_argument("--max-transfer", type=float, default=20.0,
                   help="longest transfer, s (shortest 1 s)")
    p.add_argument("--rate", type=float, default=100e3, help="emulator bytes/s per task")
    p.add_argument("--freq", type=int, default=int(hk["freq"]))
    p.add_argument("--alarm", type=int, default=int(hk["alarm"]))
    p.add_argument("--cycle-budget", type=float, default=defaults.cycle_budget,
                   help="site.yaml agent.cycle_budget (default: derived by the installer, freq-2)")
    p.add_argument("--poll-interval", type=float, default=defaults.poll_interval)
    p.add_argument("--batch-max-items", type=int, default=defaults.batch_max_items,
                   help="site.yaml agent.batch_max_items (1 = one transfer per job, so "
                        "every job's completion is an independent sample)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after S s")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.jobs < 1 or args.span < 0 or args.max_transfer < 1 or args.rate <= 0:
        p.error("--jobs >= 1, --span >= 0, --max-transfer >= 1, --rate > 0")

    from pbs_globus_staging_sim.site import StagingSite

    rng = random.Random(args.seed)
    plan = sorted((rng.uniform(0, args.span), rng.uniform(1.0, args.max_transfer))
                  for _ in range(args.jobs))
    with tempfile.TemporaryDirectory(prefix="lag", dir="/tmp") as tmp:
        site = StagingSite(
            Path(tmp), bytes_per_second=args.rate, poll_interval=args.poll_interval,
            cycle_budget=args.cycle_budget, fatal_fault_window=defaults.fatal_fault_window,
            orphan_grace=defaults.orphan_grace,
            active_tasks_per_identity=defaults.max_tasks_per_identity,
            agent_overrides={"batch_max_items": args.batch_max_items})
        site.start()
        try:
            site.cli("upgrade", "--python", sys.executable, "--freq", str(args.freq),
                     "--alarm", str(args.alarm))
            import json
            cf = json.loads((site.pbs.conf.hooks_dir / "globus_staging_periodic.CF").read_text())
            hooks = site.pbs._periodic_hooks()["globus_staging_periodic"]
            budget = float(cf["cycle_budget"])
            user = site.user
            for n, (_at, secs) in enumerate(plan):
                f = site.remote_dir / user / "in" / f"f{n:03d}.dat"
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(b"x" * int(secs * args.rate))
            site.emulator.reset_calls()
            site.pbs.start_periodic_thread()
            t0 = time.time()
            jobs = {}
            for n, (at, _secs) in enumerate(plan):
                delay = t0 + at - time.time()
                if delay > 0:
                    time.sleep(delay)
                req = (f"stagein_globus={site.site_dir}/{user}/in/f{n:03d}.dat"
                       f"@theta-dtn:~/{user}/in/f{n:03d}.dat")
                jobs[site.submit("-l", req)] = n
            deadline = t0 + args.timeout
            released = {}
            while time.time() < deadline:
                for when, kind, name, msg in log_events(site.pbs.log_lines()):
                    if kind == "Job" and name in jobs and msg.startswith("Holds s released"):
                        released.setdefault(name, when)
                if len(released) == len(jobs):
                    break
                time.sleep(1.0)
            t_end = time.time()
            site.pbs.stop(kill_jobs=True)
            minutes = (t_end - t0) / 60.0
            globus_calls = site.emulator.count_calls()
            by_path = {}
            for c in site.emulator.calls:
                key = c.method + " " + re.sub(r"/[0-9a-f-]{36}", "/<id>", c.path.split("?")[0])
                by_path[key] = by_path.get(key, 0) + 1
            events = log_events(site.pbs.log_lines())
            j = site.journal()
            try:
                cycles = [c for c in j.last_cycles(100000) if c.started >= t0 - 1]
            finally:
                j.close()
            tasks = site.emulator.tasks
            lags, where, transfers_seen = {}, {}, set()
            runs = sorted((c.started, c.finished or t_end) for c in cycles)
            for job, when in released.items():
                ids = [t for t in str(site.resource(job, "globus_stage_tasks") or "").split("+") if t]
                done = [tasks[t].completion_time for t in ids if t in tasks
                        and tasks[t].status == "SUCCEEDED"]
                if not done:
                    continue
                finish = max(done)
                lags[job] = when - finish
                transfers_seen.add(tuple(sorted(ids)))
                inside = any(s <= finish <= e for s, e in runs)
                where[job] = "in a run" if inside else "between runs"
        finally:
            site.stop()

    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {cmd}")
    print(f"settings: periodic hook freq={hooks.get('freq')} alarm={hooks.get('alarm')}; "
          f"agent budget per run {budget:g} s (hook config; site cycle_budget "
          f"{args.cycle_budget if args.cycle_budget is not None else 'auto'}); poll_interval {args.poll_interval:g} s; rescan_interval "
          f"{defaults.rescan_interval:g} s; max_tasks_per_identity "
          f"{defaults.max_tasks_per_identity}; batch_max_items {args.batch_max_items}")
    print(f"workload: {args.jobs} staged jobs submitted over {args.span:g} s, one file each, "
          f"transfers 1-{args.max_transfer:g} s at {args.rate / 1e3:g} kB/s; run "
          f"{t_end - t0:.0f} s")
    missing = sorted(set(jobs) - set(lags))
    if missing:
        print(f"NOT RELEASED within {args.timeout:g} s: {len(missing)} jobs ({', '.join(missing[:5])}...)")
    if lags:
        vals = sorted(lags.values())
        print(f"release lag (SUCCEEDED -> qrls), {len(vals)} jobs in {len(transfers_seen)} "
              f"transfers: median {statistics.median(vals):.2f} s, "
              f"p90 {pct(vals, 0.9):.2f} s, worst {vals[-1]:.2f} s, best {vals[0]:.2f} s")
        for label in ("in a run", "between runs"):
            sub = sorted(lags[k] for k in lags if where[k] == label)
            if sub:
                print(f"  finished {label:13s}: {len(sub):3d} jobs, median "
                      f"{statistics.median(sub):.2f} s, worst {sub[-1]:.2f} s")
    hook_starts = [w for w, kind, name, msg in events
                   if kind == "Hook" and name == "globus_staging_periodic" and msg == "started"
                   and w >= t0]
    skipped = sum(1 for w, kind, name, msg in events if kind == "Hook"
                  and "still running, skipping" in msg and w >= t0)
    if runs:
        durs = [e - s for s, e in runs]
        gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
        starts = []
        for s, _e in runs:
            before = [h for h in hook_starts if h <= s]
            if before:
                starts.append(s - before[-1])
        print(f"agent runs: {len(runs)}; duration median {statistics.median(durs):.1f} s "
              f"(max {max(durs):.1f}); idle gap between runs median "
              f"{statistics.median(gaps) if gaps else 0:.1f} s (max {max(gaps) if gaps else 0:.1f}); "
              f"hook start -> agent cycle start median "
              f"{statistics.median(starts) if starts else 0:.2f} s; runs skipped (previous still "
              f"running): {skipped}")
        pbs_calls = sum(c.pbs_calls or 0 for c in cycles)
        agent_globus = sum(c.globus_calls or 0 for c in cycles)
        print(f"agent CPU per run median {statistics.median([c.cpu_seconds or 0 for c in cycles]):.2f} s")
    else:
        pbs_calls = agent_globus = 0
    qrls = sum(1 for _w, k, _n, m in events if k == "Job" and m.startswith("Holds s released"))
    qalter = sum(1 for _w, k, _n, m in events if k == "Job" and m.startswith("Job Modified"))
    # what the qalters changed (the double logs each changed attribute before "Job Modified")
    set_state = sum(1 for _w, k, _n, m in events if k == "Job"
                    and m.startswith("Resource_List.globus_stage_state="))
    progress = sum(1 for _w, k, _n, m in events if k == "Job"
                   and m.startswith('comment="staging: in '))
    print(f"Globus API requests at the emulator: {globus_calls} = {globus_calls / minutes:.1f}/min "
          f"(agent's own count {agent_globus})")
    for key, n in sorted(by_path.items(), key=lambda kv: -kv[1]):
        print(f"    {n:5d}  {key}")
    print(f"PBS commands by the agent: {pbs_calls} = {pbs_calls / minutes:.1f}/min "
          f"(server log: qalter {qalter}, qrls {qrls}; the rest are qstat)")
    print(f"    qalters setting globus_stage_state: {set_state}; progress comments "
          f"('staging: in ...'): {progress}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
