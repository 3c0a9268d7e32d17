"""Opt-in checks against a REAL OpenPBS server on this host (not the double).

Skipped unless ``qstat`` on PATH is a real (compiled) OpenPBS command AND
``GLOBUS_STAGING_REAL_PBS=1``; they also need root (qmgr, ``qrls -h s``) and an
ordinary submitting user (``GLOBUS_STAGING_REAL_PBS_USER``, default ``alice``).

    GLOBUS_STAGING_REAL_PBS=1 PATH=/opt/pbs/bin:$PATH .venv/bin/python -m pytest tests/real/test_real_pbs.py -v

qmgr has no dry run, so everything here is applied to the server for real, and
only in ways that leave it in the installed state it found:

* the ``install --dry-run`` script is fed to ``qmgr`` twice: as printed (on an
  installed server only the ``create`` lines may fail, as duplicates), and with
  every hook and resource renamed to a throw-away name, so that each line also
  runs against a server that has none of them; those copies are deleted in the
  same qmgr session;
* ``install`` runs twice with the site config and Python the installed hooks
  already use (read from their hook config): the second run creates nothing and
  writes the same hook config as the first;
* the periodic hook's ``enabled`` is put back as found (a site may run the
  agent as a service instead).

What was seen on OpenPBS 23.06.06 is recorded in ``docs/real-pbs.md``.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbs_globus_staging_sim.realpbs import skip_reason

REPO = Path(__file__).resolve().parents[2]
PERIODIC = "globus_staging_periodic"
HOOKS = tuple("globus_staging_" + e for e in ("queuejob", "modifyjob", "runjob", "jobobit",
                                              "periodic"))
RESOURCES = ("stagein_globus", "stageout_globus", "globus_stage_state", "globus_stage_tasks")


def _skip_reason():
    return skip_reason(os.environ.get("GLOBUS_STAGING_REAL_PBS_USER", "alice"))


pytestmark = pytest.mark.skipif(_skip_reason() is not None, reason=str(_skip_reason()))


# ------------------------------------------------------------------ plumbing
def pbs_conf() -> dict:
    from pbs_globus_staging.pbsctl import read_pbs_conf
    return read_pbs_conf()


def bindir() -> Path:
    return Path(pbs_conf().get("PBS_EXEC") or "/opt/pbs") / "bin"


def hook_config_path() -> Path:
    return Path(pbs_conf().get("PBS_HOME") or "/var/spool/pbs") / "globus_staging" / \
        "globus_staging.json"


def run(argv, *, input=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], input=input, capture_output=True, text=True,
                          timeout=timeout, cwd="/tmp")


def as_user(argv) -> subprocess.CompletedProcess:
    user = os.environ.get("GLOBUS_STAGING_REAL_PBS_USER", "alice")
    # su keeps the caller's cwd; /tmp is one the user can enter
    return subprocess.run(["su", user, "-c", shlex.join(str(a) for a in argv)],
                          capture_output=True, text=True, timeout=60, cwd="/tmp")


def qmgr(*commands: str) -> subprocess.CompletedProcess:
    return run([bindir() / "qmgr"], input="".join(c + "\n" for c in commands))


_BENIGN = (re.compile(r"^Max open servers: \d+$"),
           re.compile(r"^hook '[\w.]+' contents overwritten$"))
_FOLLOW_UP = re.compile(r"^qmgr: (Error \(\d+\)|hook error) returned from server$")


def qmgr_errors(output: str) -> list:
    """Each error qmgr printed, one string each (its exit status is the last command's
    only).  Strict: any line that is neither benign nor an error's follow-up counts."""
    errors = []
    for ln in (x.rstrip("\n") for x in output.splitlines()):
        if not ln.strip() or any(b.match(ln) for b in _BENIGN):
            continue
        if _FOLLOW_UP.match(ln) and errors and errors[-1].startswith("qmgr obj="):
            continue
        errors.append(ln)
    return errors


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLOBUS_STAGING_CONFIG", "PBS_CONF_FILE", "GLOBUS_SDK_SERVICE_URL_TRANSFER",
                        "GLOBUS_SDK_SERVICE_URL_AUTH")}
    env["PYTHONPATH"] = str(REPO / "lib")
    return subprocess.run([sys.executable, "-m", "pbs_globus_staging", *args],
                          capture_output=True, text=True, timeout=300, env=env, cwd="/tmp")


def hook_enabled(name: str):
    out = qmgr(f"list hook {name}").stdout
    m = re.search(r"^\s*enabled = (\w+)", out, re.M)
    return m.group(1) if m else None


def qstat_job(job: str) -> dict:
    proc = run([bindir() / "qstat", "-x", "-f", "-F", "json", job])
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["Jobs"][job]


def purge(job: str) -> None:
    run([bindir() / "qdel", job])
    for _ in range(50):                      # qdel -x only takes a finished job
        if run([bindir() / "qdel", "-x", job]).returncode == 0:
            return
        time.sleep(0.2)


@pytest.fixture
def periodic_state():
    """Put the periodic hook's ``enabled`` back however a test leaves it."""
    before = hook_enabled(PERIODIC)
    yield before
    if before is not None and hook_enabled(PERIODIC) != before:
        qmgr(f"set hook {PERIODIC} enabled = {before}")
    assert hook_enabled(PERIODIC) == before


def suite_installed() -> bool:
    return f"Hook {PERIODIC}\n" in qmgr("list hook").stdout


@pytest.fixture(scope="module")
def _suite():
    """The suite as installed on the server; installed here (periodic hook disabled:
    no agent runs) when it is not, and then uninstalled at the end, with what this
    module wrote under PBS_HOME, so the shared server is left as found."""
    cf = hook_config_path()
    if suite_installed() and cf.is_file():
        data = json.loads(cf.read_text())
        yield Path(data["site_config"]), data
        return
    made = not cf.parent.exists()
    site = cf.parent / "site.yaml"
    site.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    site.write_text("site:\n  collection: 6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e\n"
                    "  roots: [\"/home/{user}/\", \"/tmp/\"]\ncollections:\n"
                    "  theta-dtn: 08925f04-569f-11e7-bef8-22000b9a448b\n"
                    "credentials:\n  mode: user\n  client_id: 2f8e9d7c-1b3a-4c5d-8e7f-6a5b4c3d2e1f\n"
                    "agent:\n  serve: false\n")
    proc = cli("--config", str(site), "install", "--python", sys.executable)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    qmgr(f"set hook {PERIODIC} enabled = false")   # the agent is not configured for Globus here
    try:
        yield site, json.loads(cf.read_text())
    finally:
        cli("--config", str(site), "uninstall")
        if made:
            shutil.rmtree(cf.parent, ignore_errors=True)


@pytest.fixture
def installed(_suite, periodic_state):
    """The site config the installed hooks use."""
    return _suite


def request_for(data: dict, name: str) -> str:
    """A one-item stage-in request the installed site policy accepts for the test user."""
    site = data["site"]
    user = os.environ.get("GLOBUS_STAGING_REAL_PBS_USER", "alice")
    root = next(r for r in site["site"]["roots"] if "{user}" in r or r == "/tmp/")
    alias = next(k for k, v in site["collections"].items() if isinstance(v, str))
    return f"stagein_globus={root.replace('{user}', user)}gst-test/{name}@{alias}:/~/in/{name}"


# ------------------------------------------------------------------ install
def test_dry_run_script_is_accepted_by_real_qmgr(installed, tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text("site:\n  collection: 6a1c5f3e-2b7d-4c1a-9e0f-3d2c1b0a9f8e\n"
                    "  roots: [\"/home/{user}/\"]\ncollections:\n"
                    "  theta-dtn: 08925f04-569f-11e7-bef8-22000b9a448b\n"
                    "credentials:\n  mode: user\n  client_id: 2f8e9d7c-1b3a-4c5d-8e7f-6a5b4c3d2e1f\n")
    proc = cli("--config", str(site), "install", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    # The config it imports is the installed one: the dry run writes nothing.
    assert f"# hook config to be written to {hook_config_path()}\n" in script
    lines = [ln for ln in script.splitlines() if ln and not ln.startswith("#")]
    assert sum(ln.startswith("create ") for ln in lines) == len(HOOKS) + len(RESOURCES)

    # 1. As printed, on the installed server: only the creates fail (duplicates).
    before = hook_enabled(PERIODIC)
    restore = [f"set hook {PERIODIC} enabled = {before}"] if before else []
    out = qmgr(script, *restore)
    errors = qmgr_errors(out.stdout + out.stderr)
    assert sorted(errors) == sorted(
        [f"qmgr obj={r} svr=default: Duplicate entry in list " for r in RESOURCES]
        + [f"qmgr obj={h} svr=default: hook name '{h}' already registered, try another name"
           for h in HOOKS]), out.stdout + out.stderr

    # 2. Renamed, so that every line runs against a server without these objects.
    tag = f"zz{os.getpid()}_"
    renamed = script
    for name in HOOKS + RESOURCES:
        renamed = re.sub(rf"(?<![\w.]){name}(?![\w.])", tag + name, renamed)
    assert renamed.count(tag) == script.count("\ncreate ") + sum(
        ln.startswith(("set ", "import ")) for ln in lines)
    cleanup = [f"delete hook {tag}{h}" for h in HOOKS] + \
              [f"delete resource {tag}{r}" for r in RESOURCES]
    try:
        out = qmgr(renamed, *cleanup)    # one session: the copies live for milliseconds
        assert qmgr_errors(out.stdout + out.stderr) == [], out.stdout + out.stderr
    finally:
        left = qmgr("list hook").stdout + qmgr("list resource").stdout
        if tag in left:
            qmgr(*cleanup)
    assert tag not in qmgr("list hook").stdout + qmgr("list resource").stdout


def test_install_twice_creates_nothing_and_keeps_the_installed_state(installed):
    site, data = installed
    python = data.get("python") or sys.executable
    outs, configs = [], []
    for _ in range(2):
        proc = cli("--config", str(site), "install", "--python", python)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append(proc.stdout)
        configs.append(hook_config_path().read_text())
    creates = [ln for ln in outs[1].splitlines() if ln.startswith("qmgr: create")]
    assert creates == [], outs[1]
    assert outs[0] == outs[1]
    assert any(ln.startswith(f"qmgr: import hook {PERIODIC} application/x-python")
               for ln in outs[1].splitlines())
    # Same inputs, same hook config (the first run may differ from what was installed
    # before only if the package changed since: that is what an upgrade is for).
    assert configs[0] == configs[1]
    assert json.loads(configs[1])["site_config"] == str(site)
    for name in HOOKS:
        text = qmgr(f"list hook {name}").stdout
        assert f"Hook {name}" in text and "type = site" in text
    listing = qmgr("list resource").stdout
    for res in RESOURCES:
        assert f"Resource {res}" in listing
    assert re.search(r"Resource globus_stage_state\n\s+type = string\n\s+flag = r", listing)


# ------------------------------------------------------------------ a user's view
def test_good_request_is_held_and_bad_one_refused(installed):
    _site, data = installed
    proc = as_user([bindir() / "qsub", "-N", "gst_good", "-l", request_for(data, "a.dat"),
                    "--", "/bin/true"])
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    try:
        q = qstat_job(job)
        assert q["job_state"] == "H" and q["Hold_Types"] == "s"
        assert q["Resource_List"]["globus_stage_state"] == "waiting"
        assert q["comment"].startswith("staging: waiting")
    finally:
        purge(job)
    bad = as_user([bindir() / "qsub", "-N", "gst_bad", "-l", "stagein_globus=/nowhere",
                   "--", "/bin/true"])
    assert bad.returncode == 32
    assert bad.stdout == ""
    assert bad.stderr == ("qsub: stagein_globus: item 1 '/nowhere' has no '@'; expected "
                          "LOCAL@COLLECTION:REMOTE, e.g. /lus/alice/in/@theta-dtn:/~/in/\n")


def test_owner_cannot_release_or_mark_staged_and_runjob_guard_reholds(installed):
    _site, data = installed
    proc = as_user([bindir() / "qsub", "-N", "gst_guard", "-l", request_for(data, "g.dat"),
                    "--", "/bin/true"])
    assert proc.returncode == 0, proc.stderr
    job = proc.stdout.strip()
    try:
        rls = as_user([bindir() / "qrls", "-h", "s", job])
        assert rls.returncode == 159 and rls.stderr.strip() == f"qrls: Unauthorized Request  {job}"
        alt = as_user([bindir() / "qalter", "-l", "globus_stage_state=staged-in", job])
        assert alt.returncode == 155
        assert alt.stderr.strip() == ("qalter: Cannot set attribute, read only or insufficient "
                                      f"permission  Resource_List.globus_stage_state {job}")
        assert qstat_job(job)["Resource_List"]["globus_stage_state"] == "waiting"

        # root (a manager) releases the system hold by hand: the scheduler tries to run
        # the job, the runjob hook refuses and puts the hold back.
        assert run([bindir() / "qrls", "-h", "s", job]).returncode == 0
        deadline = time.monotonic() + 60
        q = qstat_job(job)
        while not str(q.get("comment", "")).startswith("Not Running") and \
                time.monotonic() < deadline:
            time.sleep(0.5)
            q = qstat_job(job)
        assert q["comment"] == ("Not Running: PBS Error: stagein_globus: stage-in not complete "
                                "(state waiting); the job stays held until its data are in place")
        assert q["job_state"] == "H" and q["Hold_Types"] == "s"
        assert "Exit_status" not in q and "stime" not in q
    finally:
        purge(job)
    assert run([bindir() / "qstat", "-x", job]).returncode != 0     # purged from history
