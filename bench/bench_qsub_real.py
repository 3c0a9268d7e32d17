"""Bench (opt-in, real OpenPBS): what the hook suite costs every qsub.

In one run, N ``qsub -h`` (default 300) each, submitted back to back by an
ordinary user, for:

1. no hooks (the suite not installed);
2. one empty queuejob hook (``pbs.event().accept()``): PBS's own cost of
   running any hook;
3. the suite installed, a job without staging;
4. the suite installed, a job with a one-item stage-in.

Targets (issue 12): 3 at >= 0.97 of 2, 4 at >= 0.90 of 2.

Runs only with ``GLOBUS_STAGING_REAL_PBS=1``, a compiled OpenPBS ``qsub`` on
PATH and root (it installs and uninstalls the suite with ``globus-staging``, and
creates and deletes the empty hook, with qmgr); otherwise it says why and exits
0.  The server must not have the suite installed; it is left that way (the
suite uninstalled with ``--purge``, every job it submitted deleted with its
history).  The server is shared: hold the lock for the whole run::

    flock /tmp/realpbs.lock env GLOBUS_STAGING_REAL_PBS=1 PATH=/opt/pbs/bin:$PATH \\
        .venv/bin/python bench/bench_qsub_real.py [--jobs 300] [--user alice]

The periodic hook is installed with freq 3600 and disabled straight away, so
no agent runs during the bench.  The four set-ups are switched by enabling one
queuejob hook at a time, and their jobs are submitted in interleaved rounds so
that other load on a shared machine falls on all of them alike.
"""
import argparse
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOOKS = tuple("globus_staging_" + e for e in ("queuejob", "modifyjob", "runjob", "jobobit",
                                              "periodic"))
EMPTY_HOOK = "bench_empty_queuejob"

# Runs as the submitting user: N qsubs back to back, timed from inside.
SUBMITTER = r'''
import json, subprocess, sys, time
n, argv = int(sys.argv[1]), sys.argv[2:]
ids, t0 = [], time.perf_counter()
for _ in range(n):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       universal_newlines=True)
    if p.returncode != 0:
        print(json.dumps({"error": p.stderr.strip(), "ids": ids}))
        sys.exit(1)
    ids.append(p.stdout.strip())
print(json.dumps({"seconds": time.perf_counter() - t0, "ids": ids}))
'''


def real_qsub():
    path = shutil.which("qsub")
    if not path:
        return None
    with open(path, "rb") as fh:
        return path if fh.read(4) == b"\x7fELF" else None


def why_not(user):
    if os.environ.get("GLOBUS_STAGING_REAL_PBS") != "1":
        return "set GLOBUS_STAGING_REAL_PBS=1 to run against a real OpenPBS on this host"
    if real_qsub() is None:
        return "no real OpenPBS qsub on PATH (e.g. PATH=/opt/pbs/bin:$PATH)"
    if os.geteuid() != 0:
        return "needs root (qmgr)"
    try:
        pwd.getpwnam(user)
    except KeyError:
        return "no user %r to submit as (--user)" % user
    return None


def run(argv, *, input=None, check=True):
    p = subprocess.run([str(a) for a in argv], input=input, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, universal_newlines=True, timeout=600, cwd="/tmp")
    if check and p.returncode != 0:
        raise SystemExit("bench_qsub_real: %s failed (%d): %s"
                         % (" ".join(map(str, argv)), p.returncode, (p.stderr or p.stdout)[-500:]))
    return p


def qmgr(*commands, check=True):
    return run(["qmgr"], input="".join(c + "\n" for c in commands), check=check)


def cli(config, *args, check=True):
    return run([sys.executable, "-m", "pbs_globus_staging", "--config", config] + list(args),
               check=check)


def submit(user, n, extra):
    qsub = real_qsub()
    p = subprocess.run(["su", user, "-c", " ".join(
        ["/usr/bin/env", "python3", "-I", "-c", _shq(SUBMITTER), str(n), qsub, "-h"]
        + [_shq(a) for a in extra] + ["--", "/bin/true"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
        timeout=1800, cwd="/tmp")
    out = json.loads(p.stdout.strip().splitlines()[-1]) if p.stdout.strip() else {}
    if p.returncode != 0 or "seconds" not in out:
        purge(out.get("ids", []))
        raise SystemExit("bench_qsub_real: qsub %s failed: %s" % (
            " ".join(extra), out.get("error") or p.stderr.strip()[-500:]))
    return out


def _shq(s):
    return "'" + s.replace("'", "'\"'\"'") + "'"


def purge(ids):
    # qdel -x: the job and its history, so no job is left and the resources can go.
    for i in range(0, len(ids), 100):
        run(["qdel", "-x", "-W", "force"] + ids[i:i + 100], check=False)


def suite_installed():
    out = qmgr("list hook", check=False).stdout
    return [h for h in HOOKS if ("Hook " + h) in out]


def make_hook(name, script, config=None):
    cmds = ["create hook " + name, "set hook %s event = queuejob" % name,
            "import hook %s application/x-python default %s" % (name, script)]
    if config:
        cmds.append("import hook %s application/x-config default %s" % (name, config))
    qmgr(*cmds)


def interleaved(setups, user, jobs, rounds):
    """Submit ``jobs`` per set-up (key, label, the one queuejob hook enabled or
    None, qsub arguments) in ``rounds``, rotating the order each round."""
    hooks = sorted({h for _k, _l, h, _e in setups if h})
    seconds = {key: 0.0 for key, *_ in setups}
    per_round = max(1, jobs // rounds)
    for r in range(rounds):
        for key, _label, hook, extra in setups[r % len(setups):] + setups[:r % len(setups)]:
            qmgr(*["set hook %s enabled = %s" % (h, "true" if h == hook else "false")
                   for h in hooks])
            purge(submit(user, 3, extra)["ids"])       # warm: the first run after a switch
            out = submit(user, per_round, extra)
            purge(out["ids"])
            seconds[key] += out["seconds"]
    return seconds, per_round * rounds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=300, help="qsubs per set-up")
    ap.add_argument("--rounds", type=int, default=6, help="submitted in this many rounds")
    ap.add_argument("--user", default=os.environ.get("GLOBUS_STAGING_REAL_PBS_USER", "alice"))
    args = ap.parse_args(argv)
    reason = why_not(args.user)
    if reason:
        print("bench_qsub_real: skipped: " + reason)
        return 0
    if suite_installed():
        raise SystemExit("bench_qsub_real: the suite is installed (%s); this bench measures "
                         "the server without it first: uninstall it and run again"
                         % ", ".join(suite_installed()))
    tmp = Path(tempfile.mkdtemp(prefix="bench-qsub-"))
    tmp.chmod(0o755)
    config = str(tmp / "site.yaml")
    Path(config).write_text(
        "site:\n  collection: 6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e\n"
        "  roots: ['/home/{user}/']\n"
        "collections:\n  theta-dtn: 08925f04-569f-11e7-bef8-22000b9a448b\n"
        "credentials:\n  mode: user\n  client_id: 5e1c0d2a-7b3f-4e8a-9c6d-2f1e0a9b8c7d\n"
        "journal:\n  path: %s\n" % (tmp / "state" / "journal.sqlite"))
    staged = "stagein_globus=/home/%s/in/@theta-dtn:~/in/" % args.user
    empty = tmp / "empty.py"
    empty.write_text("import pbs\npbs.event().accept()\n")
    other = [l.split()[1] for l in qmgr("list hook", check=False).stdout.splitlines()
             if l.startswith("Hook ")]
    version = run(["qstat", "--version"], check=False).stdout.strip()
    print("bench_qsub_real: %d x qsub -h -- /bin/true as %s, %s; other hooks on the server: %s"
          % (args.jobs, args.user, version, ", ".join(other) or "none"), flush=True)
    # All four set-ups live on the server at once and are switched with one
    # qmgr call (which queuejob hook is enabled), and the N jobs of each are
    # submitted in rounds, in rotating order: on a shared machine, load that
    # comes and goes then falls on all four alike.
    setups = [("none", "no hooks", None, []),
              ("empty", "one empty queuejob hook", EMPTY_HOOK, []),
              ("plain", "suite, job without staging", HOOKS[0], []),
              ("staged", "suite, one-item stage-in", HOOKS[0], ["-l", staged])]
    installed = False
    try:
        installed = True
        cli(config, "install", "--python", sys.executable, "--freq", "3600", "--alarm", "60")
        qmgr("set hook globus_staging_periodic enabled = false")
        make_hook(EMPTY_HOOK, empty)
        seconds, n = interleaved(setups, args.user, args.jobs, args.rounds)
        rates = {key: n / seconds[key] for key in seconds}
        for key, label, _on, _extra in setups:
            print("  %-30s %6.1f qsub/s  (%d in %.2f s)" % (label, rates[key], n, seconds[key]))
    finally:
        qmgr("delete hook " + EMPTY_HOOK, check=False)
        if installed:
            un = cli(config, "uninstall", "--purge", check=False)
            print("uninstall --purge (exit %d):\n  %s" % (un.returncode, "\n  ".join(
                (un.stdout + un.stderr).strip().splitlines())))
            left = suite_installed()
            if left:
                print("bench_qsub_real: WARNING: still installed: " + ", ".join(left))
        shutil.rmtree(tmp, ignore_errors=True)
    plain, staged_r = rates["plain"] / rates["empty"], rates["staged"] / rates["empty"]
    print("ratios to the empty hook: suite+plain %.3f (target >= 0.97), suite+staged %.3f "
          "(target >= 0.90); empty hook to no hooks %.3f"
          % (plain, staged_r, rates["empty"] / rates["none"]))
    print("command: flock /tmp/realpbs.lock env GLOBUS_STAGING_REAL_PBS=1 PATH=/opt/pbs/bin:$PATH "
          ".venv/bin/python bench/bench_qsub_real.py --jobs %d --rounds %d --user %s"
          % (args.jobs, args.rounds, args.user))
    return 0


if __name__ == "__main__":
    sys.exit(main())
