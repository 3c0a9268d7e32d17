"""Cross-user access, end to end (issue 6, item 4), in per-user credentials mode.

Two real accounts (created for the session, see security_helpers): VICTIM
owns data, ATTACKER tries to reach it through the staging agent, which runs
as root and acts for both.  Every attempt must be refused, the refusal must
reach the attacker (qsub's stderr or the job comment, which the job owner
reads with qstat) and the admins (PBS server log, the agent's log, the
journal's history shown by ``globus-staging show``), and the attacker's job
must never run.  The emulator enforces identity like Globus: tasks are owned
by the identity whose token submitted them, task lookups by another identity
answer 404, and an identity without a grant on a path gets PERMISSION_DENIED.
"""
from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from e2e_helpers import REMOTE_COLLECTION, make_site, request_state, tasks_for
from pbs_globus_staging_sim.invariants import assert_invariants
from security_helpers import add_real_user, agent_log, job_comment, two_users  # noqa: F401


@pytest.fixture
def xsite(tmp_path, two_users):  # noqa: F811
    victim, attacker = two_users
    site = make_site(tmp_path)
    try:
        ids = {victim: add_real_user(site, victim), attacker: add_real_user(site, attacker)}
        yield site, victim, attacker, ids
        assert_invariants(site)
    finally:
        site.stop()


def _secret(site, victim, rel="secret.dat", text="victim's data\n"):
    path = site.remote_dir / victim / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _never_ran(site, job):
    site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and "s" in q["Hold_Types"] and "stime" not in q
    return q


def test_local_path_in_another_users_area_refused_at_qsub(xsite):
    site, victim, attacker, _ = xsite
    theirs = f"{site.site_dir}/{victim}"
    for res, value in (
            ("stagein_globus", f"{theirs}/in/x.dat@theta-dtn:~/{attacker}/x.dat"),
            ("stageout_globus", f"{theirs}/results/@theta-dtn:~/{attacker}/loot/"),
            # dressed up: '..' through an escape, and the victim's directory via ~user
            ("stagein_globus", f"{site.site_dir}/{attacker}/%2E%2E/{victim}/x@theta-dtn:/x"),
            ("stagein_globus", f"~{victim}/x@theta-dtn:/x")):
        proc = site.qsub("-l", f"{res}={value}", user=attacker, check=False)
        assert proc.returncode != 0, value
        line = proc.stderr.strip()
        assert line.startswith(f"qsub: {res}: ") and "\n" not in line, line
    proc = site.qsub("-l", f"stagein_globus={theirs}/in/x.dat@theta-dtn:~/{attacker}/x.dat",
                     user=attacker, check=False)
    assert (f"is outside the areas you may use; allowed for {attacker}: "
            f"{site.site_dir}/{attacker}/") in proc.stderr
    # no job was created, and the admins see each refusal in the server log
    assert site.pbs.run(["qstat"]).stdout.strip() == ""
    log = site.pbs.log_text()
    assert log.count("queuejob request rejected by 'globus_staging_queuejob'") >= 4
    assert f"allowed for {attacker}" in log


@pytest.fixture
def mdir():
    # Not under tmp_path (pytest keeps that 0700): the hook checks that the job
    # owner can search every directory on the way to a manifest.
    d = Path(tempfile.mkdtemp(prefix="manifests-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def test_manifest_listing_or_owned_by_another_user_refused(xsite, mdir):
    site, victim, attacker, _ = xsite
    a_uid = pwd.getpwnam(attacker).pw_uid
    v_uid = pwd.getpwnam(victim).pw_uid
    # the attacker's own manifest naming the victim's area
    mine = mdir / "mine.txt"
    mine.write_text(f"{site.site_dir}/{victim}/in/x@theta-dtn:~/{attacker}/x\n")
    os.chown(mine, a_uid, -1)
    proc = site.qsub("-l", f"stagein_globus=manifest={mine}", user=attacker, check=False)
    assert proc.returncode != 0
    assert f"manifest '{mine}' line 1: local path" in proc.stderr
    assert "outside the areas you may use" in proc.stderr
    # the victim's manifest, valid for the victim: the attacker may not use it
    theirs = mdir / "theirs.txt"
    theirs.write_text(f"{site.site_dir}/{victim}/in/x@theta-dtn:~/{victim}/x\n")
    os.chown(theirs, v_uid, -1)
    proc = site.qsub("-l", f"stagein_globus=manifest={theirs}", user=attacker, check=False)
    assert proc.returncode != 0
    assert "is not owned by the job owner" in proc.stderr
    # the attacker's symlink to the victim's manifest
    link = mdir / "link.txt"
    link.symlink_to(theirs)
    proc = site.qsub("-l", f"stagein_globus=manifest={link}", user=attacker, check=False)
    assert proc.returncode != 0 and "symbolic link" in proc.stderr
    assert site.pbs.run(["qstat"]).stdout.strip() == ""


def test_manifest_in_another_users_private_directory_is_no_oracle(xsite, mdir):
    """The queuejob hook reads manifests as root: a file that exists in the
    victim's private directory must be refused exactly like one that does not."""
    site, victim, attacker, _ = xsite
    private = mdir / "victim-private"
    private.mkdir(mode=0o700)
    os.chown(private, pwd.getpwnam(victim).pw_uid, -1)
    there = private / "inputs.txt"
    there.write_text(f"{site.site_dir}/{victim}/in/x@theta-dtn:~/{victim}/x\n")
    os.chown(there, pwd.getpwnam(victim).pw_uid, -1)
    answers = []
    for path in (there, private / "missing.txt"):
        proc = site.qsub("-l", f"stagein_globus=manifest={path}", user=attacker, check=False)
        assert proc.returncode != 0
        answers.append(proc.stderr.replace(str(path), "PATH"))
    assert answers[0] == answers[1] == (
        f"qsub: stagein_globus: manifest 'PATH' cannot be read: '{private}': "
        "Permission denied\n")
    assert site.pbs.run(["qstat"]).stdout.strip() == ""


def test_remote_path_of_another_user_fails_under_the_attackers_own_identity(xsite):
    """Globus (the emulator) is what refuses here: the agent submits with the
    job owner's token, and that identity has no grant on the victim's path."""
    site, victim, attacker, ids = xsite
    secret = _secret(site, victim)
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{attacker}/loot.dat"
                            f"@theta-dtn:~/{victim}/secret.dat", user=attacker)
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60)
    tasks = tasks_for(site, job)
    assert tasks and all(t.owner_id == ids[attacker] for t in tasks)
    assert not any(t.owner_id == ids[victim] for t in site.emulator.tasks.values())
    assert not (site.site_dir / attacker / "loot.dat").exists()
    assert secret.read_text() == "victim's data\n"
    q = _never_ran(site, job)
    assert site.resource(job, "globus_stage_state") == "stagein-failed"
    assert "PERMISSION_DENIED" in q["comment"]            # what the attacker sees
    assert job in site.timeline(job) and "PERMISSION_DENIED" in site.timeline(job)
    assert "PERMISSION_DENIED" in agent_log(site) or "stagein_failed" in agent_log(site)


def test_grafting_another_users_task_is_refused(xsite):
    site, victim, attacker, ids = xsite
    _secret(site, victim, "big.dat", "x" * 100)
    site.emulator.pause_collection(REMOTE_COLLECTION)     # keep the victim's task running
    vjob = site.submit("-l", f"stagein_globus={site.site_dir}/{victim}/in.dat"
                             f"@theta-dtn:~/{victim}/big.dat", user=victim)
    site.run_until(lambda: bool(tasks_for(site, vjob)), timeout=60)
    (vtask,) = tasks_for(site, vjob)
    assert vtask.owner_id == ids[victim]
    ajob = site.submit("-l", f"stagein_globus=task={vtask.task_id}", user=attacker)
    site.run_until(lambda: request_state(site, ajob) == "failed", timeout=60)
    q = _never_ran(site, ajob)
    assert f"Globus task {vtask.task_id} is not visible to your Globus identity" in q["comment"]
    # the victim's transfer goes on untouched and releases only the victim's job
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(vjob) == "F", timeout=60)
    assert site.job_state(ajob) == "H"
    assert site.resource(ajob, "globus_stage_state") == "stagein-failed"
    assert "not visible" in site.timeline(ajob)


@pytest.mark.parametrize("how", ["file-symlink", "dir-symlink", "hardlink"])
def test_attackers_token_file_pointing_at_victims_is_refused(xsite, how):
    site, victim, attacker, ids = xsite
    _secret(site, victim)
    vdir, adir = site.token_dir(victim), site.token_dir(attacker)
    if how == "file-symlink":
        (adir / "tokens.json").unlink()
        (adir / "tokens.json").symlink_to(vdir / "tokens.json")
        expect = "is a symlink"
    elif how == "dir-symlink":
        (adir / "tokens.json").unlink()
        adir.rmdir()
        adir.symlink_to(vdir)
        expect = "is a symlink or not a directory"
    else:
        # fs.protected_hardlinks stops this on most hosts; root can always do
        # it, and the agent must not rely on the sysctl.
        (adir / "tokens.json").unlink()
        os.link(vdir / "tokens.json", adir / "tokens.json")
        expect = f"is owned by uid {pwd.getpwnam(victim).pw_uid}, not by {attacker}"
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{attacker}/loot.dat"
                            f"@theta-dtn:~/{victim}/secret.dat", user=attacker)
    site.run_until(lambda: request_state(site, job) == "user-action", timeout=60)
    for _ in range(2):
        site.cycle()
    q = _never_ran(site, job)
    assert site.resource(job, "globus_stage_state") == "user-action"
    # what the attacker sees (qstat; PBS comments are cut at 200 characters),
    # and the whole message with what to run (globus-staging show)
    assert q["comment"].startswith("staging: waiting for you")
    assert f"cannot use the Globus login of {attacker}" in q["comment"]
    timeline = site.timeline(job)
    assert expect in timeline and "globus-staging login" in timeline
    # nothing was submitted with anyone's token for this job
    assert tasks_for(site, job) == []
    assert not any(t.owner_id == ids[victim] for t in site.emulator.tasks.values())
    assert "user_action" in agent_log(site) and expect in agent_log(site)
    # the victim's own login still works: their job runs
    vjob = site.submit("-l", f"stagein_globus={site.site_dir}/{victim}/in.dat"
                             f"@theta-dtn:~/{victim}/secret.dat", user=victim)
    site.run_until(lambda: site.job_state(vjob) == "F", timeout=60)
    assert (site.site_dir / victim / "in.dat").read_text() == "victim's data\n"


def test_attacker_cannot_alter_or_release_the_victims_job(xsite):
    site, victim, attacker, _ = xsite
    site.emulator.pause_collection(REMOTE_COLLECTION)
    _secret(site, victim)
    vjob = site.submit("-l", f"stagein_globus={site.site_dir}/{victim}/in.dat"
                             f"@theta-dtn:~/{victim}/secret.dat", user=victim)
    loot = f"stagein_globus={site.site_dir}/{attacker}/x@theta-dtn:~/{victim}/secret.dat"
    for argv in (["qalter", "-l", loot, vjob],
                 ["qalter", "-l", f"stageout_globus={site.site_dir}/{victim}/"
                                  f"@theta-dtn:~/{attacker}/loot/", vjob],
                 ["qalter", "-l", "globus_stage_state=staged-in", vjob],
                 ["qrls", "-h", "s", vjob], ["qdel", vjob]):
        proc = site.pbs.run(argv, user=attacker)
        assert proc.returncode != 0 and "Unauthorized Request" in proc.stderr, argv
    # the owner cannot forge the state word either (flag=r), nor lift the hold
    proc = site.pbs.run(["qalter", "-l", "globus_stage_state=staged-in", vjob], user=victim)
    assert proc.returncode != 0 and "read only" in proc.stderr
    assert site.resource(vjob, "globus_stage_state") == "waiting"
    assert site.qstat(vjob)["Hold_Types"] == "s"


def test_qalter_and_environment_cannot_redirect_to_the_victim(xsite):
    """The attacker's own job: a qalter naming the victim's area is refused by
    the modifyjob hook, and environment variables the attacker sets (-v) do
    not change whose login or paths the agent uses."""
    site, victim, attacker, ids = xsite
    site.emulator.pause_collection(REMOTE_COLLECTION)
    (site.remote_dir / attacker / "a.dat").write_text("a\n")
    vhome = pwd.getpwnam(victim).pw_dir
    job = site.submit("-v", f"HOME={vhome},USER={victim},LOGNAME={victim},"
                            f"PBS_O_HOME={vhome},GLOBUS_STAGEIN_STATE=staged-in",
                      "-l", f"stagein_globus={site.site_dir}/{attacker}/a.dat"
                            f"@theta-dtn:~/{attacker}/a.dat", user=attacker)
    bad = site.pbs.run(["qalter", "-l", f"stagein_globus={site.site_dir}/{victim}/a.dat"
                                        f"@theta-dtn:~/{attacker}/a.dat", job], user=attacker)
    assert bad.returncode != 0
    assert bad.stderr.startswith("qalter: stagein_globus: item 1: local path")
    assert "outside the areas you may use" in bad.stderr
    assert "modifyjob request rejected by 'globus_staging_modifyjob'" in site.pbs.log_text()
    site.run_until(lambda: bool(tasks_for(site, job)), timeout=60)
    (task,) = tasks_for(site, job)
    assert task.owner_id == ids[attacker]
    assert site.resource(job, "stagein_globus").startswith(f"{site.site_dir}/{attacker}/")
    site.emulator.resume_collection(REMOTE_COLLECTION)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert (site.site_dir / attacker / "a.dat").read_text() == "a\n"
    assert not (site.site_dir / victim / "a.dat").exists()


# -- the endpoint touches files as the job owner's account (issue 11, point 4) -----
# The emulator maps each identity to the local account of the same name, as a
# Globus Connect Server mapped collection does, and does the identity's file
# work as that account.  The site runs in a directory every account may enter
# (pytest's tmp_path is root's alone), and each user owns their areas.

@pytest.fixture
def msite(two_users):  # noqa: F811
    import shutil
    import tempfile
    from pathlib import Path
    victim, attacker = two_users
    base = Path(tempfile.mkdtemp(prefix="gs-mapped-", dir="/tmp"))
    base.chmod(0o755)
    site = make_site(base)
    try:
        site.emulator.map_accounts("username")
        for user, mode in ((victim, 0o700), (attacker, 0o755)):
            add_real_user(site, user)
            pw = pwd.getpwnam(user)
            for top in (site.site_dir, site.remote_dir):
                os.chown(top / user, pw.pw_uid, pw.pw_gid)
                (top / user).chmod(mode)
        for top in (site.root, site.site_dir, site.remote_dir):
            top.chmod(0o755)
        secret = site.site_dir / victim / "secret.dat"
        secret.write_text("victim's data\n")
        os.chown(secret, pwd.getpwnam(victim).pw_uid, -1)
        secret.chmod(0o600)
        yield site, victim, attacker
        assert_invariants(site)
    finally:
        site.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_stage_out_through_a_symlink_to_another_home_copies_nothing(msite):
    site, victim, attacker = msite
    (site.site_dir / attacker / "x").symlink_to(site.site_dir / victim)
    job = site.submit("-l", f"stageout_globus={site.site_dir}/{attacker}/x/"
                            f"@theta-dtn:~/{attacker}/loot/",
                      user=attacker, script="#!/bin/sh\nexit 0\n")
    # Globus (the emulator, as the attacker's account) cannot read the victim's
    # directory (PERMISSION_DENIED) and the stage-out is retried later
    # (agent.stageout_retries), never completed with the victim's data.
    site.run_until(lambda: "stageout_retry" in site.timeline(job)
                   or request_state(site, job, "out") == "failed", timeout=90)
    assert not (site.remote_dir / attacker / "loot" / "secret.dat").exists()
    (task,) = tasks_for(site, job)
    # Every task is sent with skip_source_errors: the unreadable directory is a
    # skipped error of the task (which may then end SUCCEEDED having moved
    # nothing), and that skipped error fails the stage-out item.
    assert any(e["error_code"] == "PERMISSION_DENIED" for e in task.skipped_errors)
    assert task.files_transferred == 0
    assert "PERMISSION_DENIED" in site.timeline(job)
    assert request_state(site, job, "out") != "succeeded"


def test_stage_in_through_a_symlink_plants_nothing_in_another_home(msite):
    site, victim, attacker = msite
    payload = site.remote_dir / attacker / "payload.dat"
    payload.write_text("boo\n")
    (site.site_dir / attacker / "x").symlink_to(site.site_dir / victim)
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{attacker}/x/planted.dat"
                            f"@theta-dtn:~/{attacker}/payload.dat", user=attacker)
    site.run_until(lambda: request_state(site, job) == "failed", timeout=90)
    assert sorted(p.name for p in (site.site_dir / victim).iterdir()) == ["secret.dat"]
    q = _never_ran(site, job)
    assert "PERMISSION_DENIED" in q["comment"]


def test_staged_in_files_belong_to_the_job_owner(msite):
    site, victim, attacker = msite
    data = site.remote_dir / attacker / "in"
    data.mkdir()
    (data / "a.dat").write_text("a\n")
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{attacker}/in/"
                            f"@theta-dtn:~/{attacker}/in/", user=attacker)
    site.run_until(lambda: site.job_state(job) == "F", timeout=90)
    pw = pwd.getpwnam(attacker)
    for p in (site.site_dir / attacker / "in", site.site_dir / attacker / "in" / "a.dat"):
        assert (p.stat().st_uid, p.stat().st_gid) == (pw.pw_uid, pw.pw_gid), p
