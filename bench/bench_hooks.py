#!/usr/bin/env python3
"""Bench: cost per call of the real event hooks, run the way pbs_server runs them.

Setup (the venv's Python): a ``StagingSite`` installs the suite with the real
installer into the PBS double, so ``server_priv/hooks`` holds the imported
``data/hooks/globus_staging_*.py`` and the hook config that ``installer.hook_config``
wrote from the site YAML.  A do-nothing queuejob hook is imported next to them
as the baseline of the runner itself.

Measurement (a fresh child process per interpreter, ``-S`` like pbs_server's
embedded Python, which has no site-packages): the double's hook runner
(``testing/pbsdouble/hookrun.py``) executes the hook in-process -- compiled once,
fresh globals per run, one shared interpreter, the double's ``pbs`` module,
``alarm`` armed -- for

  queuejob (a) a job without a request, (b) a one-item stage-in request,
           (c) a 50-item stage-in request;
  runjob   (d) a staged job whose stage-in is not done (the guard: reject + re-hold),
           (e) a staged job whose stage-in succeeded (accept);

and prints median, p99 and max per call, the runner's own baseline (the
do-nothing hook) and the first call in the fresh interpreter (it imports the
package).  The job object each call gets is built outside the timed region.
Each outcome is checked (hold set, state word, reject), so a broken hook cannot
bench fast.  It repeats under Python 3.9 when that interpreter exists.

    .venv/bin/python bench/bench_hooks.py [--calls 5000] [--py39 PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "lib"
SIM_LIB = REPO / "sim" / "lib"   # the PBS double the measuring child loads
PY39 = "/root/.pyenv/versions/3.9.18/bin/python3.9"
NULL_HOOK = "bench_null_queuejob"
CASES = ("queuejob_none", "queuejob_1", "queuejob_50", "runjob_waiting", "runjob_staged",
         "null")
LABELS = {
    "null": "runner baseline (do-nothing hook)",
    "queuejob_none": "queuejob, no request",
    "queuejob_1": "queuejob, 1-item request",
    "queuejob_50": "queuejob, 50-item request",
    "runjob_waiting": "runjob, stage-in not done (reject)",
    "runjob_staged": "runjob, stage-in done (accept)",
}


# ------------------------------------------------------------------ measuring (stdlib)
def _pct(sorted_vals: list, q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def measure(spec: dict) -> dict:
    """Run every case ``spec["calls"]`` times in this interpreter; return figures (s)."""
    sys.path.insert(0, spec["lib"])
    from pbs_globus_staging_sim.pbsdouble import core, hookrun, ops
    from pbs_globus_staging_sim.pbsdouble import pbs as pbsmod

    conf = core.Conf(home=Path(spec["home"]), exec_dir=Path(spec["exec"]),
                     server_name=spec["server"])
    with core.locked_state(conf, write=False) as state:
        snapshot = json.loads(json.dumps(state))
    defs = hookrun.resource_defs(snapshot)
    user = spec["user"]

    def qjob(request):
        res = {"ncpus": 1, "walltime": "01:00:00"}
        if request is not None:
            res["stagein_globus"] = request
        view = {"Job_Name": "bench", "Job_Owner": "%s@bench" % user, "Hold_Types": "n",
                "queue": "", "Resource_List": ops._canon_resources(snapshot, res),
                "Variable_List": {"PBS_O_HOME": "/tmp", "PBS_O_WORKDIR": "/tmp"}}
        return pbsmod._job("", view, mode="queuejob", defs=defs)

    def rjob(state_word):
        res = {"ncpus": 1, "walltime": "01:00:00", "stagein_globus": spec["req1"],
               "globus_stage_state": state_word}
        if state_word == "staged-in":
            res["globus_stage_tasks"] = "9b1f8f1e-3c1a-4f0e-9d7e-1a2b3c4d5e6f"
        view = {"Job_Name": "bench", "Job_Owner": "%s@bench" % user, "Hold_Types": "n",
                "queue": "workq", "job_state": "Q", "exec_vnode": "(bench:ncpus=1)",
                "Resource_List": ops._canon_resources(snapshot, res),
                "Variable_List": {"PBS_O_HOME": "/tmp", "PBS_O_WORKDIR": "/tmp"}}
        return pbsmod._job("1.%s" % spec["server"], view, mode="runjob", defs=defs)

    def check(case, out, job):
        rl = job.Resource_List
        if case in ("null", "queuejob_none"):
            ok = out.accepted and str(job.Hold_Types or "n") == "n"
        elif case.startswith("queuejob"):
            ok = (out.accepted and "s" in str(job.Hold_Types)
                  and rl["globus_stage_state"] == "waiting")
        elif case == "runjob_waiting":
            ok = out.status == "reject" and "s" in str(job.Hold_Types)
        else:
            ok = out.accepted
        if not ok:
            raise SystemExit("bench_hooks: %s: unexpected outcome %s %r (hold %s)"
                             % (case, out.status, out.message, job.Hold_Types))

    plans = {
        "null": (NULL_HOOK, "queuejob", lambda: qjob(None)),
        "queuejob_none": ("globus_staging_queuejob", "queuejob", lambda: qjob(None)),
        "queuejob_1": ("globus_staging_queuejob", "queuejob", lambda: qjob(spec["req1"])),
        "queuejob_50": ("globus_staging_queuejob", "queuejob", lambda: qjob(spec["req50"])),
        "runjob_waiting": ("globus_staging_runjob", "runjob", lambda: rjob("staging-in")),
        "runjob_staged": ("globus_staging_runjob", "runjob", lambda: rjob("staged-in")),
    }
    perf = time.perf_counter

    def one(case):
        hook, event, make = plans[case]
        job = make()
        t0 = perf()
        out = hookrun.run_hook(conf, snapshot, hook, event=event, params={"job": job},
                               requestor=user, requestor_host="bench")
        dt = perf() - t0
        check(case, out, job)
        return dt

    # The first staged call of a fresh interpreter imports the package.
    first = {"queuejob_none": one("queuejob_none"), "queuejob_1": one("queuejob_1")}
    figures = {}
    for case in CASES:
        for _ in range(min(200, spec["calls"])):
            one(case)  # warm-up: compile cache, config cache, page cache
        times = sorted(one(case) for _ in range(spec["calls"]))
        figures[case] = {"median": statistics.median(times), "p99": _pct(times, 0.99),
                         "max": times[-1], "n": len(times)}
    return {"python": sys.version.split()[0], "first": first, "figures": figures}


# ------------------------------------------------------------------ setup (venv)
def setup(root: Path):
    from pbs_globus_staging_sim.site import StagingSite
    site = StagingSite(root).start()
    # The emulator is not needed for event hooks; the on-disk PBS state is.
    site.pbs.create_hook(NULL_HOOK, events="queuejob", enabled=False, order=99,
                         script="import pbs\npbs.event().accept()\n")
    site.stop()
    user_dir = f"{site.site_dir}/{site.user}"
    req1 = f"{user_dir}/in/a.dat@theta-dtn:~/{site.user}/in/a.dat"
    req50 = "+".join(f"{user_dir}/i/{n:02d}@theta-dtn:~/{site.user}/i/{n:02d}"
                     for n in range(50))
    if len(req50) > 4096:
        raise SystemExit(f"bench_hooks: 50-item request is {len(req50)} chars (> 4096); "
                         "use a shorter temporary directory (TMPDIR)")
    cf = json.loads((site.pbs.conf.hooks_dir / "globus_staging_queuejob.CF").read_text())
    return {"home": str(site.pbs.home), "exec": str(site.pbs.exec_dir),
            "server": site.pbs.server_name, "user": site.user, "lib": str(LIB),
            "req1": req1, "req50": req50, "hook_config_budget": cf.get("cycle_budget")}


def run_child(python: str, spec: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(LIB), str(SIM_LIB)]))
    proc = subprocess.run([python, "-S", str(Path(__file__).resolve()), "--measure",
                           json.dumps(spec)], env=env, capture_output=True, text=True,
                          timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"bench_hooks: {python} failed ({proc.returncode}): "
                         f"{proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def report(result: dict) -> None:
    us = 1e6
    figs = result["figures"]
    base = figs["null"]["median"]
    print(f"\nPython {result['python']} (hook runner in-process, -S)")
    print(f"  {'case':40s} {'median':>9s} {'p99':>9s} {'max':>9s}  median-baseline")
    for case in CASES:
        f = figs[case]
        extra = "" if case == "null" else f"{(f['median'] - base) * us:9.1f} us"
        print(f"  {LABELS[case]:40s} {f['median'] * us:7.1f}us {f['p99'] * us:7.1f}us "
              f"{f['max'] * us:7.0f}us  {extra}")
    first = result["first"]
    print(f"  first calls in a fresh interpreter: no request {first['queuejob_none'] * 1e3:.2f} ms, "
          f"1-item request {first['queuejob_1'] * 1e3:.2f} ms (imports the package)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000, help="timed calls per case")
    parser.add_argument("--py39", default=PY39, help="a Python 3.9 to measure too "
                        "(skipped when absent; '' to skip)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(json.loads(args.measure))))
        return 0
    if args.calls < 1:
        parser.error("--calls must be >= 1")
    sys.path.insert(0, str(LIB))
    # short paths: the 50-item request must fit the 4096-character limit
    with tempfile.TemporaryDirectory(prefix="bh", dir="/tmp") as tmp:
        spec = setup(Path(tmp))
        spec["calls"] = args.calls
        results = [run_child(sys.executable, spec)]
        if args.py39 and os.access(args.py39, os.X_OK):
            results.append(run_child(args.py39, spec))
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {cmd}")
    print(f"calls per case: {args.calls} (after 200 warm-up calls); request lengths: "
          f"1 item {len(spec['req1'])} chars, 50 items {len(spec['req50'])} chars")
    for r in results:
        report(r)
    if not (args.py39 and os.access(args.py39, os.X_OK)):
        print(f"\n(Python 3.9 not measured: {args.py39 or 'skipped'} not found)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
