"""Run by tests/integration/test_package.py with the Python of a venv the built wheel was
installed into, with ``-I`` and from outside the source tree: the README's admin
commands (``globus-staging --config site.yaml install --python VENV/bin/python``)
against the PBS double, one staged job through its whole life, then
``uninstall`` and ``uninstall --purge``.  Prints one JSON object for the test to check."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pbs_globus_staging
from pbs_globus_staging_sim.site import StagingSite

ROOT = Path(sys.argv[1])
PROGRAM = str(Path(sys.executable).with_name("globus-staging"))
out = {"package": pbs_globus_staging.__file__, "sys_path": sys.path}


class WheelSite(StagingSite):
    """The site, with every admin command run as the console script the wheel installed."""

    def cli(self, *args, user=None, check=True):
        proc = subprocess.run([PROGRAM, "--config", str(self.config_path)] + list(args),
                              env=self.env(user=user), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
        out.setdefault("commands", []).append([list(args), proc.returncode])
        if check and proc.returncode != 0:
            raise AssertionError("globus-staging %s exited %d:\n%s\n%s"
                                 % (" ".join(args), proc.returncode, proc.stdout, proc.stderr))
        return proc


site = WheelSite(ROOT)
try:
    site.start()            # runs: globus-staging --config site.yaml install --python ...
    out["dry_run"] = site.cli("install", "--dry-run", "--python", sys.executable).stdout
    cf = site.pbs.home / "globus_staging" / "globus_staging.json"
    out["hook_config"] = json.loads(cf.read_text())
    out["imported_hooks"] = {p.name: p.read_text() for p in
                             (site.pbs.home / "server_priv" / "hooks").glob("*.PY")}
    # One staged job: stage-in, run with its data, stage-out.
    remote = site.remote_dir / site.user / "in" / "a.dat"
    remote.parent.mkdir(parents=True)
    remote.write_text("alpha\n" * 100)
    local_in = "%s/%s/in/" % (site.site_dir, site.user)
    local_out = "%s/%s/out/" % (site.site_dir, site.user)
    job = site.submit(
        "-l", "stagein_globus=%s@theta-dtn:~/%s/in/" % (local_in, site.user),
        "-l", "stageout_globus=%s@theta-dtn:~/%s/results/" % (local_out, site.user),
        script="#!/bin/sh\ntest -s %sa.dat || exit 99\nmkdir -p %s\nwc -l < %sa.dat > %scount\n"
               % (local_in, local_out, local_in, local_out))
    out["held"] = [site.qstat(job).get("job_state"), site.qstat(job).get("Hold_Types")]
    result = site.remote_dir / site.user / "results" / "count"

    def stageout_state():
        j = site.journal()
        try:
            return {r.direction: r.state for r in j.requests_for_job(job)}.get("out")
        finally:
            j.close()
    site.run_until(lambda: stageout_state() == "succeeded", timeout=90)
    out["result"] = result.read_text().strip()
    out["final"] = {k: site.qstat(job).get(k) for k in ("job_state", "Exit_status")}
    out["timeline"] = site.timeline(job)
    unit = site.cli("files", "globus-staging-agent.service").stdout
    (ROOT / "globus-staging-agent.service").write_text(unit)
    out["logrotate"] = site.cli("files", "globus-staging.logrotate").stdout
    out["agent_log"] = str(Path(site.root / "journal.sqlite").parent / "agent.log")
    # uninstall: what install and the agent made goes, the journal stays unless --purge
    out["before_uninstall"] = sorted(os.listdir(site.root))
    for key, args in (("uninstall", ["uninstall"]), ("purge", ["uninstall", "--purge"])):
        proc = site.cli(*args, check=False)
        out[key] = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                    "left": sorted(os.listdir(site.root)), "hook_config": cf.exists(),
                    "hook_config_dir": cf.parent.exists(),
                    "hooks": [site.pbs.run(["qmgr", "-c", "list hook " + h]).returncode
                              for h in ("globus_staging_queuejob", "globus_staging_periodic")]}
finally:
    site.stop()
print(json.dumps(out))
