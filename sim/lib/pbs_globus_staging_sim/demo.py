"""``globus-staging demo``: the seed's scenarios, end to end, on one machine.

The hook suite is installed with the real installer into the PBS test double;
the periodic hook runs the real agent as a subprocess; the agent talks to the
bundled Globus emulator through the real globus-sdk over loopback HTTP; files
are really copied; alerts really go through a sendmail program.  Only the
endpoints differ from production.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Optional

from .site import StagingSite

FAKE_SENDMAIL = """#!/bin/sh
# Demo sendmail: keep each message in the outbox instead of sending it.
out="{outbox}/$(date +%s%N).eml"
cat > "$out"
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _banner(text: str) -> None:
    _say()
    _say("=" * 78)
    _say(text)
    _say("=" * 78)


def main(*, workdir: Optional[str] = None, keep: bool = False) -> int:
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="globus-staging-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    outbox = root / "outbox"
    outbox.mkdir(exist_ok=True)
    sendmail = root / "sendmail"
    sendmail.write_text(FAKE_SENDMAIL.format(outbox=outbox))
    sendmail.chmod(0o755)
    alerts = {"admins": ["hpc-admin@demo.example"], "mail_domain": "demo.example",
              "mail": {"method": "sendmail", "sendmail": str(sendmail),
                       "from": "pbs-staging@demo.example"}}
    site = StagingSite(root, bytes_per_second=2e5, poll_interval=0.5, cycle_budget=3.0,
                       fatal_fault_window=2.0, extra_config={"alerts": alerts})
    started = time.time()
    try:
        site.start()
        _say(f"demo site in {root}")
        _say(f"  PBS double: PBS_HOME={site.pbs.home}  hooks installed with qmgr:")
        for line in site.pbs.run(["qmgr", "-c", "list hook"]).stdout.splitlines():
            if line.startswith("Hook "):
                _say(f"    {line}")
        _say(f"  Globus emulator: {site.emulator.url} (real globus-sdk over HTTP)")
        _say(f"  job owner: {site.user}")
        ok = _scenario_a(site) & _scenario_b(site) & _scenario_c(site)
        ok &= _scenario_d(site) & _scenario_e(site) & _scenario_f(site)
        _banner("Alerts sent (through sendmail)")
        for msg in sorted(outbox.glob("*.eml")):
            head = {}
            for line in msg.read_text().splitlines():
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                head[key.lower()] = value.strip()
            _say(f"  to {head.get('to', '?'):<28} {head.get('subject', '?')}")
        _banner(f"Demo finished in {time.time() - started:.1f} s: "
                + ("all scenarios behaved as expected" if ok else "SOMETHING WENT WRONG"))
        return 0 if ok else 1
    finally:
        site.stop()
        if not keep and not workdir:
            shutil.rmtree(root, ignore_errors=True)


def _data(site: StagingSite, rel: str, files: dict) -> Path:
    base = site.remote_dir / site.user / rel
    base.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (base / name).write_text(text)
    return base


def _show(site: StagingSite, job_id: str) -> None:
    _say(textwrap.indent(site.timeline(job_id).rstrip(), "  "))


def _scenario_a(site: StagingSite) -> bool:
    _banner("Scenario A: stage in, run, stage out (one qsub replaces the V1/V2 job chains)")
    u = site.user
    _data(site, "inputs", {f"part{i}.dat": f"{i}\n" * 20000 for i in range(3)})
    local_in = f"{site.site_dir}/{u}/run-a/in/"
    local_out = f"{site.site_dir}/{u}/run-a/out/"
    script = ("#!/bin/sh\n# the compute job: sums its inputs into a result\n"
              f"mkdir -p {local_out}\ncat {local_in}*.dat | wc -l > {local_out}lines.txt\n"
              f"echo \"inputs from Globus task(s) $GLOBUS_STAGEIN_TASKS\" >> {local_out}lines.txt\n")
    args = ["-l", f"stagein_globus={local_in}@theta-dtn:~/{u}/inputs/",
            "-l", f"stageout_globus={local_out}@theta-dtn:~/{u}/results-a/"]
    _say(f"$ qsub {' '.join(args)} compute.sh")
    job = site.submit(*args, script=script)
    q = site.qstat(job)
    _say(f"  {job}: state {q.get('job_state')} holds {q.get('Hold_Types')} "
         f"globus_stage_state={site.resource(job, 'globus_stage_state')}")
    owner = site.pbs.run(["qrls", "-h", "s", job], user="nobody-else")
    _say(f"  a user's 'qrls -h s {job}': {owner.stderr.strip() or owner.stdout.strip()} "
         f"(exit {owner.returncode})")
    result = site.remote_dir / u / "results-a" / "lines.txt"
    site.run_until(lambda: result.exists(), timeout=90)
    _say(f"  remote results: {result.read_text().strip()!r}")
    site.run_until(lambda: _request_state(site, job, "out") in ("succeeded", "failed"), timeout=60)
    _show(site, job)
    return result.read_text().startswith("60000") and _request_state(site, job, "out") == "succeeded"


def _scenario_b(site: StagingSite) -> bool:
    _banner("Scenario B: the stage-in fails -- the job never runs, the user is told why")
    u = site.user
    cleanup = site.root / "scripts" / "cleanup.sh"
    cleanup.parent.mkdir(parents=True, exist_ok=True)
    marker = site.site_dir / u / "cleanup-ran"
    cleanup.write_text(f"#!/bin/sh\necho cleaned > {marker}\n")
    args = ["-l", f"stagein_globus={site.site_dir}/{u}/run-b/in.dat@theta-dtn:~/{u}/missing.dat",
            "-l", f"stageout_globus={site.site_dir}/{u}/run-b/out/@theta-dtn:~/{u}/results-b/"]
    _say(f"$ qsub {' '.join(args)} compute.sh   (the source file does not exist)")
    held = site.submit(*args, script="#!/bin/sh\necho SHOULD NOT RUN\n")
    args2 = ["-l", f"stagein_globus={site.site_dir}/{u}/run-b2/in.dat@theta-dtn:~/{u}/missing.dat"
             f"+cleanup={cleanup}"]
    _say(f"$ qsub {' '.join(args2)} compute.sh   (with a cleanup job, as the seed's V1)")
    cleaned = site.submit(*args2, script="#!/bin/sh\necho SHOULD NOT RUN\n")
    site.run_until(lambda: _request_state(site, held, "in") == "failed"
                   and marker.exists(), timeout=90)
    q = site.qstat(held)
    _say(f"  {held}: state {q.get('job_state')} holds {q.get('Hold_Types')}; "
         f"comment: {q.get('comment')}")
    _say(f"  {cleaned}: state {site.qstat(cleaned).get('job_state')}; "
         f"cleanup job ran: {marker.exists()}")
    _show(site, held)
    return q.get("job_state") == "H" and marker.exists() and \
        _request_state(site, held, "out") != "succeeded"


def _scenario_c(site: StagingSite) -> bool:
    _banner("Scenario C: the user's Globus credential expires mid-transfer")
    u = site.user
    _data(site, "big", {"big.dat": "x" * 600000})
    args = ["-l", f"stagein_globus={site.site_dir}/{u}/run-c/@theta-dtn:~/{u}/big/"]
    _say(f"$ qsub {' '.join(args)} compute.sh")
    job = site.submit(*args, script="#!/bin/sh\ntrue\n")
    emu = site.emulator
    site.run_until(lambda: _request_state(site, job, "in") == "active", timeout=30,
                   schedule=False)
    emu.expire_credential(site.identity_id, "08925f04-569f-11e7-bef8-22000b9a448b")
    site.run_until(lambda: _request_state(site, job, "in") == "user-action", timeout=30,
                   schedule=False)
    q = site.qstat(job)
    _say(f"  {job}: state {q.get('job_state')}; comment: {q.get('comment')}")
    _say("  ... the user logs in again; the same Globus task resumes (no second transfer)")
    emu.renew_credential(site.identity_id, "08925f04-569f-11e7-bef8-22000b9a448b")
    site.run_until(lambda: site.job_state(job) in ("R", "F"), timeout=60)
    tasks = [t for t in emu.tasks.values() if job in str(t.label)]
    _say(f"  Globus tasks created for {job}: {len(tasks)}")
    _show(site, job)
    return site.job_state(job) in ("R", "F") and len(tasks) == 1


def _scenario_d(site: StagingSite) -> bool:
    _banner("Scenario D: the queue is lost mid-transfer; the resubmitted job adopts the transfer")
    u = site.user
    _data(site, "d-inputs", {"d.dat": "d" * 400000})
    args = ["-l", f"stagein_globus={site.site_dir}/{u}/run-d/@theta-dtn:~/{u}/d-inputs/"]
    _say(f"$ qsub {' '.join(args)} compute.sh")
    first = site.submit(*args, script="#!/bin/sh\ntrue\n")
    site.run_until(lambda: _request_state(site, first, "in") == "active", timeout=30,
                   schedule=False)
    _say(f"$ qdel {first}      (all jobs lost; the Globus task keeps running)")
    site.pbs.run(["qdel", first])
    site.cycle()
    _say(f"$ qsub {' '.join(args)} compute.sh   (the user resubmits the same request)")
    second = site.submit(*args, script="#!/bin/sh\ntrue\n")
    site.run_until(lambda: site.job_state(second) in ("R", "F"), timeout=60)
    tasks = [t for t in site.emulator.tasks.values() if "d-inputs" in str(t.label)
             or first in str(t.label) or second in str(t.label)]
    _say(f"  Globus tasks for both jobs together: {len(tasks)}")
    _show(site, second)
    return len(tasks) == 1 and site.job_state(second) in ("R", "F")


def _scenario_e(site: StagingSite) -> bool:
    _banner("Scenario E: a transfer started by hand (web app, CLI) is grafted onto a job")
    import globus_sdk
    from .site import NATIVE_CLIENT, REMOTE_COLLECTION, SITE_COLLECTION
    u = site.user
    _data(site, "e-inputs", {"e.dat": "started elsewhere\n"})
    tokens = site.emulator.issue_tokens(site.identity_id, client_id=NATIVE_CLIENT)
    tc = globus_sdk.TransferClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(tokens["access_token"]),
        base_url=site.emulator.url + "/")
    td = globus_sdk.TransferData(REMOTE_COLLECTION, SITE_COLLECTION, label="started by hand")
    td.add_item(f"/{u}/e-inputs/", f"/{u}/run-e/", recursive=True)
    task_id = tc.submit_transfer(td)["task_id"]
    _say(f"  the user started Globus task {task_id} in the web app")
    args = ["-l", f"stagein_globus=task={task_id}"]
    _say(f"$ qsub {' '.join(args)} compute.sh")
    job = site.submit(*args, script="#!/bin/sh\ntrue\n")
    site.run_until(lambda: site.job_state(job) in ("R", "F"), timeout=60)
    _show(site, job)
    return site.resource(job, "globus_stage_tasks") == task_id and \
        len(site.emulator.tasks) and site.job_state(job) in ("R", "F")


def _scenario_f(site: StagingSite) -> bool:
    _banner("Scenario F: Globus wants consent for a collection; the user logs in by the URL")
    import re

    from .browser import cli_login
    from .site import EAGLE_COLLECTION
    u = site.user
    src = site.eagle_dir / u / "f-inputs" / "f.dat"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_text("from eagle\n")
    local = f"{site.site_dir}/{u}/run-f/f.dat"
    args = ["-l", f"stagein_globus={local}@eagle:~/{u}/f-inputs/f.dat"]
    _say(f"$ qsub {' '.join(args)} compute.sh   (eagle: a GCSv5 mapped collection the "
         "user's login has no data_access consent for)")
    job = site.submit(*args, script="#!/bin/sh\ntrue\n")
    site.run_until(lambda: _request_state(site, job, "in") == "user-action", timeout=30,
                   schedule=False)
    comment = site.qstat(job).get("comment", "")
    _say(f"  {job}: state {site.job_state(job)}; comment: {comment}")
    m = re.search(r"run (globus-staging login[^:]*)", comment)
    command = m.group(1).split() if m else ["globus-staging", "login"]
    _say(f"$ {' '.join(command)}")
    proc = cli_login(str(site.config_path), u, command[2:], env=site.env())
    for line in proc.stdout.splitlines():
        if line.strip() and set(line.strip()) != {"-"}:
            _say(f"  | {line.strip()[:150]}")
    _say(f"  (the user opened that URL, chose the identity {u!r} on the login page and "
         "pasted the code it showed)")
    site.run_until(lambda: site.job_state(job) in ("R", "F"), timeout=60)
    _show(site, job)
    arrived = Path(local).is_file() and Path(local).read_text() == "from eagle\n"
    return (proc.returncode == 0 and EAGLE_COLLECTION in " ".join(command) and arrived
            and site.job_state(job) in ("R", "F"))


def _request_state(site: StagingSite, job_id: str, direction: str) -> str:
    j = site.journal()
    try:
        for r in j.requests_for_job(job_id):
            if r.direction == direction:
                return r.state
        return ""
    finally:
        j.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
