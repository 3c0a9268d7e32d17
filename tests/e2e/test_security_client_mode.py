"""Site client-credentials mode, end to end (issue 6, item 2).

The agent acts as one service identity for every user, so Globus cannot tell
users apart: the site ``policy:`` is the only thing between one user and
another's data.  It is checked at qsub (the queuejob hook) and again by the
agent before it submits, so a policy tightened in between still wins.
"""
from __future__ import annotations

import os
import secrets
import uuid

import pytest

from e2e_helpers import REMOTE_COLLECTION, request_state, tasks_for
from pbs_globus_staging_sim.invariants import assert_invariants
from pbs_globus_staging_sim.site import SITE_COLLECTION, StagingSite
from security_helpers import add_real_user, agent_log, two_users  # noqa: F401


def _rules():
    return [{"users": ["*"], "allow": ["theta-dtn:/{user}/"]}]


@pytest.fixture
def csite(tmp_path, two_users):  # noqa: F811
    victim, attacker = two_users
    client_id, secret = str(uuid.uuid4()), secrets.token_urlsafe(24)
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    site = StagingSite(tmp_path, extra_config={
        "credentials": {"mode": "client", "client_id": client_id,
                        "client_secret_file": str(secret_file)},
        "policy": _rules(),
    }, install="in-process").start()
    try:
        emu = site.emulator
        service = emu.add_identity("staging-service")
        # The service identity reaches everything: that is why the policy exists.
        emu.grant(service, SITE_COLLECTION, "/")
        emu.grant(service, REMOTE_COLLECTION, "/")
        emu.add_client(service, client_id=client_id, client_secret=secret)
        for user in (victim, attacker):
            add_real_user(site, user)
        yield site, victim, attacker, service, secret
        assert_invariants(site)
    finally:
        site.stop()


def _qsub(site, user, value, res="stagein_globus"):
    return site.qsub("-l", f"{res}={value}", user=user, check=False)


def test_policy_refuses_other_users_remote_paths_at_qsub(csite):
    site, victim, attacker, _, _ = csite
    mine = f"{site.site_dir}/{attacker}"
    cases = {
        f"{mine}/x@theta-dtn:/{victim}/secret.dat":
            f"remote path '/{victim}/secret.dat' on 'theta-dtn' is not allowed for {attacker} "
            f"by site policy; allowed: theta-dtn:/{attacker}/",
        # a home-relative path would be the *service's* home: refused outright
        f"{mine}/x@theta-dtn:~/{victim}/secret.dat": "relative to a home directory",
        # grafting a task is meaningless when every task belongs to the service
        f"task={uuid.uuid4()}": "grafting a task is not allowed",
        # the prefix check is per component: /<attacker>-evil/ is not /<attacker>/
        f"{mine}/x@theta-dtn:/{attacker}-evil/x": "not allowed for",
    }
    for value, expect in cases.items():
        proc = _qsub(site, attacker, value)
        assert proc.returncode != 0, value
        assert proc.stderr.startswith("qsub: stagein_globus: ") and expect in proc.stderr, (
            value, proc.stderr)
    proc = _qsub(site, attacker, f"{mine}/out/@theta-dtn:/{victim}/drop/", "stageout_globus")
    assert proc.returncode != 0 and "not allowed for" in proc.stderr
    assert site.pbs.run(["qstat"]).stdout.strip() == ""


def test_allowed_request_runs_as_the_service_identity(csite):
    site, victim, attacker, service, secret = csite
    src = site.remote_dir / attacker / "in.dat"
    src.write_text("mine\n")
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{attacker}/in.dat"
                            f"@theta-dtn:/{attacker}/in.dat", user=attacker)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    (task,) = tasks_for(site, job)
    assert task.owner_id == service
    assert (site.site_dir / attacker / "in.dat").read_text() == "mine\n"
    # the client secret never reaches a log, the journal's history or a comment
    assert secret not in agent_log(site) and secret not in site.timeline(job)
    assert secret not in site.pbs.log_text()


def test_group_rule_uses_real_group_membership(csite):
    site, victim, attacker, _, _ = csite
    # useradd --user-group gave each account a group of its own name
    site.reconfigure(policy=_rules() + [{"groups": [attacker], "allow": ["theta-dtn:/shared/"]}])
    (site.remote_dir / "shared").mkdir()
    (site.remote_dir / "shared" / "s.dat").write_text("team\n")
    ok = _qsub(site, attacker, f"{site.site_dir}/{attacker}/s.dat@theta-dtn:/shared/s.dat")
    assert ok.returncode == 0, ok.stderr
    refused = _qsub(site, victim, f"{site.site_dir}/{victim}/s.dat@theta-dtn:/shared/s.dat")
    assert refused.returncode != 0 and f"not allowed for {victim}" in refused.stderr
    # claiming the group with qsub -W group_list does not help
    claimed = site.qsub("-W", f"group_list={attacker}", "-l",
                        f"stagein_globus={site.site_dir}/{victim}/s.dat@theta-dtn:/shared/s.dat",
                        user=victim, check=False)
    assert claimed.returncode != 0
    job = ok.stdout.strip()
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert (site.site_dir / attacker / "s.dat").read_text() == "team\n"


def test_policy_tightened_between_qsub_and_submission_fails_the_request(csite):
    site, victim, attacker, _, _ = csite
    (site.remote_dir / victim / "a.dat").write_text("a\n")
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{victim}/a.dat"
                            f"@theta-dtn:/{victim}/a.dat", user=victim)
    assert site.resource(job, "globus_stage_state") == "waiting"
    # the admin narrows the policy before the agent's next cycle
    site.reconfigure(policy=[{"users": ["*"], "allow": ["theta-dtn:/{user}/public/"]}])
    site.run_until(lambda: request_state(site, job) == "failed", timeout=60)
    for _ in range(2):
        site.cycle()
    site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and "stime" not in q
    assert site.resource(job, "globus_stage_state") == "stagein-failed"
    assert "not allowed for" in q["comment"] and "by site policy" in q["comment"]
    assert tasks_for(site, job) == []          # nothing was submitted
    assert "by site policy" in site.timeline(job)


def test_client_secret_file_must_stay_root_only(csite):
    site, victim, _, _, secret = csite
    secret_file = site.root / "client-secret"
    secret_file.chmod(0o644)
    (site.remote_dir / victim / "a.dat").write_text("a\n")
    job = site.submit("-l", f"stagein_globus={site.site_dir}/{victim}/a.dat"
                            f"@theta-dtn:/{victim}/a.dat", user=victim)
    proc = site.cli("agent", "--once", "--budget", "2", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "chmod 600" in out and secret not in out
    assert "Traceback" not in out
    assert tasks_for(site, job) == []
    secret_file.chmod(0o600)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert os.stat(secret_file).st_mode & 0o077 == 0


# -- local paths are checked where they really lead (issue 11, point 4) -----------
# Globus acts as the site's one account and follows whatever symlink a user
# plants, so the string check at qsub is not enough: right before submission
# the agent resolves each local path (pathcheck) and it must still be under the
# owner's roots.

def _victims_secret(site, victim):
    secret = site.site_dir / victim / "secret.dat"
    secret.write_text("victim's data\n")
    return secret


def _refused(site, job, direction):
    site.run_until(lambda: request_state(site, job, direction) == "failed", timeout=60)
    return site.timeline(job)


def test_stage_out_through_a_symlink_planted_by_the_job_is_refused(csite):
    site, victim, attacker, _, _ = csite
    _victims_secret(site, victim)
    mine = site.site_dir / attacker
    # the job itself plants the link, long after qsub checked the string
    script = f"#!/bin/sh\nln -s {site.site_dir}/{victim} {mine}/out\n"
    job = site.submit("-l", f"stageout_globus={mine}/out/@theta-dtn:/{attacker}/loot/",
                      user=attacker, script=script)
    timeline = _refused(site, job, "out")
    why = next(line for line in timeline.splitlines() if "why:" in line)
    assert "local path '" in why and f"/{attacker}/out/' leads through a symbolic link to '" \
        in why and f"/{victim}', which is outside the areas you may use; allowed for " \
        f"{attacker}: {site.site_dir}/{attacker}/" in why
    # refused right before submission: after the job ran and planted the link
    events = timeline.split("timeline:", 1)[1]
    assert events.index("job_ended") < events.index("stageout_failed")
    assert tasks_for(site, job) == []                      # nothing was submitted
    assert not (site.remote_dir / attacker / "loot").exists()
    assert "leads through a symbolic link" in agent_log(site) or \
        "stageout_failed" in agent_log(site)


def test_stage_in_through_a_symlink_cannot_plant_a_file_in_another_area(csite):
    site, victim, attacker, _, _ = csite
    (site.remote_dir / attacker / "payload.dat").write_text("boo\n")
    mine = site.site_dir / attacker
    job = site.submit("-l", f"stagein_globus={mine}/drop/planted.dat"
                            f"@theta-dtn:/{attacker}/payload.dat", user=attacker)
    (mine / "drop").symlink_to(site.site_dir / victim)     # after qsub's check
    _refused(site, job, "in")
    for _ in range(2):
        site.cycle()
    site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and "stime" not in q
    assert site.resource(job, "globus_stage_state") == "stagein-failed", site.timeline(job)
    assert "leads through a symbolic link to" in q["comment"]
    assert tasks_for(site, job) == []
    assert not (site.site_dir / victim / "planted.dat").exists()


def test_recursive_stage_in_refuses_a_destination_holding_a_link_outside(csite):
    site, victim, attacker, _, _ = csite
    data = site.remote_dir / attacker / "data" / "sub"
    data.mkdir(parents=True)
    (data / "planted.dat").write_text("boo\n")
    dest = site.site_dir / attacker / "in"
    dest.mkdir()
    (dest / "sub").symlink_to(site.site_dir / victim)
    job = site.submit("-l", f"stagein_globus={dest}/@theta-dtn:/{attacker}/data/",
                      user=attacker)
    timeline = _refused(site, job, "in")
    assert (f"local directory '{dest}/' holds a symbolic link '{dest}/sub' leading "
            "outside the areas you may use") in timeline
    assert tasks_for(site, job) == []
    assert not (site.site_dir / victim / "planted.dat").exists()


def test_symlinks_inside_the_owners_area_are_fine(csite):
    site, victim, attacker, service, _ = csite
    (site.remote_dir / attacker / "in.dat").write_text("mine\n")
    mine = site.site_dir / attacker
    (mine / "real").mkdir()
    (mine / "alias").symlink_to(mine / "real")
    job = site.submit("-l", f"stagein_globus={mine}/alias/in.dat@theta-dtn:/{attacker}/in.dat",
                      user=attacker)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert (mine / "real" / "in.dat").read_text() == "mine\n"
    (task,) = tasks_for(site, job)
    assert task.owner_id == service
