#!/usr/bin/env python3
"""Bench: the staging agent at scale (issue 7; issue 3's agent-cycle figures).

The real agent, journal (SQLite), Globus backend (globus-sdk, real HTTP) and
Globus emulator with the per-user limits switched on (3 moving tasks per
identity, 20 API requests/s per identity); PBS is the in-memory fake
(``pbs_globus_staging_sim.fakepbs``) so 10,000 jobs cost seconds to
create.  Every agent cycle is a fresh Agent + GlobusBackend + journal
connection, as each periodic-hook run is a fresh process.

Scenarios:
  one-user     1,000 jobs from one user, each staging one small file
  many-users   100 users x 100 jobs, each staging one small file
  array        one 500-subjob array staging a directory of 500 files
  steady       N staged jobs held at Globus (rate 0: nothing finishes):
               the agent's steady-state full pass and poll pass, CPU and calls
  all          one-user, many-users, array, steady 1,000 and 10,000 jobs

Figures: Globus tasks created, API calls per cycle (and per identity), agent
CPU per cycle (thread time of the agent, the fake PBS's own CPU removed:
a real PBS answers in another process; the emulator runs in other threads and
is not counted), time from submission to the last job's release (wall, with
the emulator copying at --rate bytes/s per task), journal size, the most
Globus tasks ever live per identity (sampled every 20 ms), and PBS commands.

    .venv/bin/python bench/bench_scale.py all
    .venv/bin/python bench/bench_scale.py steady --jobs 10000 --users 1 --profile
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shlex
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from pbs_globus_staging_sim.scale import ScaleSite
from pbs_globus_staging.units import human_bytes

TARGET_TASKS_1000 = 20          # issue 7: 1,000 one-file jobs of one user in <= 20 tasks
TARGET_CPU = 2.0                # issue 3/7: <= 2 s agent CPU per cycle at 10,000 jobs
TARGET_CALLS_PER_1000 = 1.0     # <= 1 Globus call per identity per 1,000 active tasks per cycle


class LiveSampler(threading.Thread):
    """Most Globus tasks ever unfinished at once per identity (emulator's view)."""

    def __init__(self, site: ScaleSite, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.site, self.interval = site, interval
        self.max_live: Dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        for ident, n in self.site.live_tasks().items():
            if n > self.max_live.get(ident, 0):
                self.max_live[ident] = n

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


_fmt_bytes = human_bytes  # the product's one byte format


def _site(tmp: Path, args: argparse.Namespace, *, rate: Optional[float] = None) -> ScaleSite:
    return ScaleSite(tmp, bytes_per_second=args.rate if rate is None else rate,
                     active_tasks_per_identity=3, requests_per_second=args.rps,
                     agent={"poll_interval": args.poll_interval,
                            "max_tasks_per_identity": args.max_tasks,
                            "batch_max_items": args.batch_max_items}).start()


# --------------------------------------------------------------------- drive
def drive(site: ScaleSite, jobs: List[str], submitted: float, args: argparse.Namespace,
          title: str) -> dict:
    """Run periodic-hook cycles until every job is released (or failed)."""
    sampler = LiveSampler(site)
    sampler.start()
    cycles = []
    deadline = time.monotonic() + args.timeout
    failed: List[str] = []
    try:
        while time.monotonic() < deadline:
            start = time.monotonic()
            cycles.append(site.cycle(budget=args.budget))
            if args.verbose:
                c = cycles[-1]
                print(f"  cycle {len(cycles)} at {start - submitted:6.1f} s: "
                      f"cpu {c.agent_cpu:.3f} s "
                      f"wall {c.wall:.2f} s polls {c.stats.polls} submitted {c.stats.submitted} "
                      f"released {c.stats.released} globus calls {sum(c.globus_calls.values())} "
                      f"live {site.live_tasks()} released so far {len(site.pbs.released_at)}")
            failed = [j for j in jobs if site.pbs.state_word(j) == "stagein-failed"]
            if len(site.pbs.released_at) + len(failed) >= len(jobs):
                break
            time.sleep(max(0.0, start + args.period - time.monotonic()))
    finally:
        sampler.stop()
    released = [site.pbs.released_at[j] for j in jobs if j in site.pbs.released_at]
    calls = [sum(c.globus_calls.values()) for c in cycles]
    per_ident = [max(c.globus_calls.values(), default=0) for c in cycles]
    cpu = [c.agent_cpu for c in cycles]
    too_many = sum(1 for c in site.emulator.calls if c.status == 429)
    return {
        "title": title, "jobs": len(jobs), "released": len(released), "failed": len(failed),
        "tasks": len(site.emulator.tasks), "cycles": len(cycles),
        "calls_total": sum(calls), "calls_max": max(calls, default=0),
        "calls_mean": statistics.mean(calls) if calls else 0,
        "calls_ident_max": max(per_ident, default=0),
        "cpu_max": max(cpu, default=0), "cpu_mean": statistics.mean(cpu) if cpu else 0,
        "cpu_first": cpu[0] if cpu else 0,
        "to_last_release": (max(released) - submitted) if released else float("nan"),
        "journal": site.journal_bytes(), "max_live": max(sampler.max_live.values(), default=0),
        "identities": len(site.identities), "pbs_calls": sum(site.pbs.calls.values()),
        "pbs_by_cmd": dict(sorted(site.pbs.calls.items())),
        "http_429": too_many, "errors": sorted({e for c in cycles for e in c.stats.errors})[:3],
    }


def report(r: dict) -> None:
    print(f"\n== {r['title']}")
    print(f"jobs released / failed:          {r['released']} / {r['failed']} of {r['jobs']}")
    print(f"Globus tasks created:            {r['tasks']}")
    print(f"agent cycles run:                {r['cycles']}")
    print(f"Globus API calls per cycle:      max {r['calls_max']}, mean {r['calls_mean']:.1f}, "
          f"total {r['calls_total']}; max per identity per cycle {r['calls_ident_max']}")
    print(f"agent CPU per cycle:             max {r['cpu_max']:.3f} s, mean {r['cpu_mean']:.3f} s "
          f"(first cycle {r['cpu_first']:.3f} s)")
    print(f"submission -> last release:      {r['to_last_release']:.1f} s")
    print(f"journal size:                    {_fmt_bytes(r['journal'])}")
    print(f"most live tasks per identity:    {r['max_live']} (limit 3; {r['identities']} "
          f"identities)")
    print(f"PBS commands:                    {r['pbs_calls']} "
          f"({r['pbs_calls'] / max(1, r['jobs']):.2f} per job: "
          + ", ".join(f"{k} {v}" for k, v in r["pbs_by_cmd"].items()) + ")")
    print(f"HTTP 429 from the emulator:      {r['http_429']}")
    if r["errors"]:
        print(f"cycle errors (first 3):          {r['errors']}")


# ----------------------------------------------------------------- scenarios
def one_file_jobs(args: argparse.Namespace, users: int, per_user: int, title: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        site = _site(Path(tmp_name), args)
        try:
            names = [f"u{n:03d}" for n in range(users)]
            payload = "x" * args.file_bytes
            for user in names:
                site.add_user(user)
                for i in range(per_user):
                    site.remote_file(user, f"in/f{i:05d}.dat", payload)
            submitted = time.monotonic()
            jobs = []
            for i in range(per_user):          # interleaved, as users really submit
                for user in names:
                    jobs.append(site.submit(user, site.stagein(
                        user, f"in/f{i:05d}.dat", f"in/f{i:05d}.dat")))
            return drive(site, jobs, submitted, args, title)
        finally:
            site.stop()


def array(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        site = _site(Path(tmp_name), args)
        try:
            site.add_user("u000")
            payload = "x" * args.file_bytes
            for i in range(args.subjobs):
                site.remote_file("u000", f"arr/f{i:05d}.dat", payload)
            submitted = time.monotonic()
            job = site.submit("u000", site.stagein("u000", "arr/", "arr/"), array=args.subjobs)
            r = drive(site, [job], submitted, args, f"array: one job of {args.subjobs} subjobs "
                                                    f"staging {args.subjobs} files")
            files = len(list(site.local("u000", "arr").glob("*.dat")))
            print(f"(array: {files} of {args.subjobs} files arrived)")
            return r
        finally:
            site.stop()


def steady(args: argparse.Namespace, jobs_n: int, users: int) -> dict:
    """N staged jobs, transfers stalled at Globus: the cost of a cycle that
    changes nothing, which is what most cycles are at scale."""
    title = f"steady: {jobs_n} staged jobs, {users} user(s), transfers not finishing"
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp_name:
        site = _site(Path(tmp_name), args, rate=0.0)
        try:
            names = [f"u{n:03d}" for n in range(users)]
            for user in names:
                site.add_user(user)
                site.remote_file(user, "in/f.dat", "x")
            per_user = jobs_n // users
            jobs = [site.submit(user, site.stagein(user, f"in/f{i:05d}.dat", "in/f.dat"))
                    for i in range(per_user) for user in names]
            warm = []
            for _ in range(2):         # register everything, submit the first tasks
                warm.append(site.cycle())
            # steady state: measure full passes (no budget: exactly one full pass)
            runs = [site.cycle() for _ in range(args.repeat)]
            # the cheap in-cycle poll pass, on a warm agent as inside one run
            journal = site.journal()
            try:
                agent = site.new_agent(journal)
                agent.full_pass()
                c0, f0, t0 = sum(agent.backend.calls.values()), site.pbs.cpu_seconds, \
                    time.thread_time()
                agent.poll_pass()
                poll_cpu = time.thread_time() - t0 - (site.pbs.cpu_seconds - f0)
                poll_calls = sum(agent.backend.calls.values()) - c0
                agent.backend.close()
                live = len(journal.transfers(status=("active", "inactive")))
                queued = len(journal.requests(state=("pending", "queued")))
            finally:
                journal.close()
            # a whole periodic-hook run: full pass, then polls until the budget
            full_run = site.cycle(budget=args.budget)
            prof = None
            if args.profile:
                prof = profile_cycle(site)
            cpu = [r.agent_cpu for r in runs]
            calls = [sum(r.globus_calls.values()) for r in runs]
            per_ident = [max(r.globus_calls.values(), default=0) for r in runs]
            return {"title": title, "jobs": len(jobs), "users": users,
                    "warm_cpu": [w.agent_cpu for w in warm],
                    "warm_calls": [sum(w.globus_calls.values()) for w in warm],
                    "cpu_median": statistics.median(cpu), "cpu_max": max(cpu),
                    "wall_median": statistics.median(r.wall for r in runs),
                    "calls_median": statistics.median(calls), "calls_ident_max": max(per_ident),
                    "pbs_calls": statistics.median(r.pbs_calls for r in runs),
                    "poll_cpu": poll_cpu, "poll_calls": poll_calls, "live": live,
                    "run_cpu": full_run.agent_cpu, "run_wall": full_run.wall,
                    "run_polls": full_run.stats.polls, "run_budget": args.budget,
                    "run_calls": sum(full_run.globus_calls.values()),
                    "waiting": queued, "tasks": len(site.emulator.tasks),
                    "journal": site.journal_bytes(), "profile": prof,
                    "errors": sorted({e for r in runs for e in r.stats.errors})[:3]}
        finally:
            site.stop()


def profile_cycle(site: ScaleSite, top: int = 25) -> str:
    prof = cProfile.Profile()
    prof.enable()
    site.cycle()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def report_steady(r: dict) -> None:
    print(f"\n== {r['title']}")
    print(f"first cycles (register, submit): CPU {', '.join(f'{c:.3f}' for c in r['warm_cpu'])} s; "
          f"Globus calls {r['warm_calls']}")
    print(f"steady full pass, agent CPU:     median {r['cpu_median']:.3f} s, "
          f"max {r['cpu_max']:.3f} s "
          f"(wall median {r['wall_median']:.3f} s)")
    print(f"steady full pass, Globus calls:  median {r['calls_median']:g}; max per identity "
          f"{r['calls_ident_max']}")
    print(f"steady full pass, PBS commands:  median {r['pbs_calls']:g}")
    print(f"poll pass (warm agent):          CPU {r['poll_cpu']:.3f} s, Globus calls "
          f"{r['poll_calls']}")
    print(f"whole run (budget {r['run_budget']:g} s):       CPU {r['run_cpu']:.3f} s, wall "
          f"{r['run_wall']:.2f} s, {r['run_polls']} polls, Globus calls {r['run_calls']}")
    print(f"active Globus tasks:             {r['live']} (of {r['tasks']} created); "
          f"requests waiting in the journal {r['waiting']}")
    print(f"journal size:                    {_fmt_bytes(r['journal'])}")
    if r["errors"]:
        print(f"cycle errors (first 3):          {r['errors']}")
    if r["profile"]:
        print(r["profile"])


def verdicts(results: List[dict]) -> List[str]:
    lines = []
    for r in results:
        if r["title"].startswith("one-user"):
            ok = r["tasks"] <= TARGET_TASKS_1000 and r["released"] == r["jobs"]
            lines.append(f"{'PASS' if ok else 'MISS'}  1,000 one-file jobs of one user in "
                         f"<= {TARGET_TASKS_1000} Globus tasks: {r['tasks']}")
        if "max_live" in r:
            ok = r["max_live"] <= 3
            lines.append(f"{'PASS' if ok else 'MISS'}  never more than 3 live tasks per identity "
                         f"({r['title'].split(':')[0]}): most seen {r['max_live']}")
        if r["title"].startswith("steady"):
            ok = r["cpu_max"] <= TARGET_CPU
            lines.append(f"{'PASS' if ok else 'MISS'}  agent full pass <= {TARGET_CPU:g} s CPU at "
                         f"{r['jobs']} jobs / {r['users']} user(s): max {r['cpu_max']:.3f} s")
            ok = r["run_cpu"] <= TARGET_CPU
            lines.append(f"{'PASS' if ok else 'MISS'}  agent run of {r['run_budget']:g} s <= "
                         f"{TARGET_CPU:g} s CPU at {r['jobs']} jobs / {r['users']} user(s): "
                         f"{r['run_cpu']:.3f} s")
            # at most ceil(active/1000) calls per identity per pass (>= 1: one poll)
            per_ident_live = max(1, -(-r["live"] // max(1, r["users"])))
            allowed = max(1, -(-per_ident_live // 1000)) * TARGET_CALLS_PER_1000
            ok = r["calls_ident_max"] <= allowed
            lines.append(f"{'PASS' if ok else 'MISS'}  <= 1 Globus call per identity per 1,000 "
                         f"active tasks per pass ({r['jobs']} jobs / {r['users']} user(s)): "
                         f"max {r['calls_ident_max']} per identity")
    return lines


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", default="all",
                        choices=("one-user", "many-users", "array", "steady", "all"),
                        help="which scenario (default: all, as `make bench` runs it)")
    parser.add_argument("--jobs", type=int, default=1000, help="steady: staged jobs (1000)")
    parser.add_argument("--users", type=int, default=1, help="steady: users (1)")
    parser.add_argument("--subjobs", type=int, default=500, help="array: subjobs (500)")
    parser.add_argument("--file-bytes", type=int, default=10000,
                        help="size of each staged file (10000)")
    parser.add_argument("--rate", type=float, default=500000.0,
                        help="emulator copy rate, bytes/s per moving task (500000)")
    parser.add_argument("--rps", type=float, default=20.0,
                        help="emulator API requests/s per identity (20)")
    parser.add_argument("--max-tasks", type=int, default=3,
                        help="agent.max_tasks_per_identity (3)")
    parser.add_argument("--batch-max-items", type=int, default=100,
                        help="agent.batch_max_items (100)")
    parser.add_argument("--period", type=float, default=5.0,
                        help="seconds between periodic-hook runs (5)")
    parser.add_argument("--budget", type=float, default=3.0, help="agent run budget, s (3)")
    parser.add_argument("--poll-interval", type=float, default=0.5,
                        help="agent.poll_interval, s (0.5)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="give up a scenario after this many seconds (600)")
    parser.add_argument("--repeat", type=int, default=3, help="steady: timed passes (3)")
    parser.add_argument("--verbose", action="store_true", help="one line per agent run")
    parser.add_argument("--profile", action="store_true",
                        help="steady: cProfile one full pass and print the hotspots")
    args = parser.parse_args(argv)
    if min(args.jobs, args.users, args.subjobs, args.repeat) < 1 or args.jobs < args.users:
        parser.error("--jobs, --users, --subjobs and --repeat must be >= 1, --jobs >= --users")
    if args.file_bytes < 1 or args.rate <= 0 or args.rps <= 0 or args.period <= 0 \
            or args.budget < 0:
        parser.error("--file-bytes, --rate, --rps, --period must be > 0, --budget >= 0")

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    print(f"emulator: 3 moving tasks/identity, {args.rps:g} requests/s/identity, "
          f"{args.rate:g} B/s per task; files {args.file_bytes} B; agent: "
          f"max_tasks_per_identity={args.max_tasks}, batch_max_items={args.batch_max_items}, "
          f"hook every {args.period:g} s, budget {args.budget:g} s, poll every "
          f"{args.poll_interval:g} s")
    results: List[dict] = []
    todo = [args.scenario] if args.scenario != "all" else \
        ["one-user", "many-users", "array", "steady:1000:1", "steady:10000:1", "steady:10000:100"]
    for name in todo:
        if name == "one-user":
            r = one_file_jobs(args, 1, 1000, "one-user: 1,000 jobs of one user, one file each")
            report(r)
        elif name == "many-users":
            r = one_file_jobs(args, 100, 100, "many-users: 100 users x 100 jobs, one file each")
            report(r)
        elif name == "array":
            r = array(args)
            report(r)
        else:
            jobs, users = (args.jobs, args.users) if name == "steady" else \
                map(int, name.split(":")[1:])
            r = steady(args, jobs, users)
            report_steady(r)
        results.append(r)
        sys.stdout.flush()
    lines = verdicts(results)
    if lines:
        print("\n== targets")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
