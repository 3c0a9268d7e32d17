"""Per-user tokens (issue 6, item 1): refresh and revocation through the
emulator's Globus Auth with the agent in the loop, tokens never written
anywhere but the user's file and root's cache, and race-free reading of the
token file when a user swaps things under the agent mid-read.

Unit-level owner/mode/symlink refusals are in test_credentials.py; this file
covers what those cannot: the whole path (agent subprocess, journal, job
comment, logs) and swaps made *between* the agent's checks.
"""
from __future__ import annotations

import os
import pwd
import stat
import time

import pytest

from e2e_helpers import (REMOTE_COLLECTION, remote_file, request_state, site,  # noqa: F401
                         stagein_arg, tasks_for)
from pbs_globus_staging import credentials
from pbs_globus_staging.credentials import UserTokenProvider, UserTokens, write_user_tokens
from pbs_globus_staging.errors import WaitingForUser
from pbs_globus_staging_sim.site import NATIVE_CLIENT
from security_helpers import agent_log, two_users  # noqa: F401

TOKEN_PATH = "/v2/oauth2/token"


def _login_again(site):
    """What ``globus-staging login`` leaves after a fresh login."""
    toks = site.emulator.issue_tokens(site.identity_id, client_id=NATIVE_CLIENT)
    write_user_tokens(UserTokens(client_id=NATIVE_CLIENT, refresh_token=toks["refresh_token"],
                                 created_at=int(time.time())),
                      token_dir=site.token_dir(site.user))
    return toks["refresh_token"]


def _user_rt(site):
    path = site.token_dir(site.user) / "tokens.json"
    return UserTokens.from_json(path.read_text()).refresh_token


def _files_holding(root, secrets_, *, skip):
    """Files under ``root`` (minus ``skip`` paths) whose bytes hold any secret."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path in skip or not os.path.isfile(path) or os.path.islink(path):
                continue
            data = open(path, "rb").read()
            found += [f"{path}" for s in secrets_ if s.encode() in data]
    return found


def test_revoked_login_holds_job_until_the_user_logs_in_again(site):
    remote_file(site, "in/big.dat", "x" * 300_000)
    site.emulator.set_rate(1e5)
    job = site.submit("-l", stagein_arg(site, "in/", "in/"))
    site.run_until(lambda: request_state(site, job) == "active", schedule=False)
    old_rt = _user_rt(site)
    # The user's Globus session is revoked (password reset, admin action): the
    # agent's cached access token stops working and refreshing fails.
    site.emulator.revoke_refresh_token(old_rt)
    site.emulator.expire_access_tokens()
    site.run_until(lambda: request_state(site, job) == "user-action", schedule=False,
                   timeout=20)
    # it stays so, cycle after cycle, until the user acts
    for _ in range(2):
        site.cycle()
        assert request_state(site, job) == "user-action"
    site.schedule()
    q = site.qstat(job)
    assert q["job_state"] == "H" and "stime" not in q
    assert site.resource(job, "globus_stage_state") == "user-action"
    assert "globus-staging login" in q["comment"]
    assert "invalid_grant" in site.timeline(job)
    # The user logs in again: the same task resumes, nothing is resubmitted.
    new_rt = _login_again(site)
    site.emulator.set_rate(5e6)
    site.run_until(lambda: site.job_state(job) == "F", timeout=60)
    assert len(tasks_for(site, job)) == 1
    assert site.qstat(job)["Exit_status"] == 0
    # Neither token reached a log, the journal, a comment or any other file;
    # only the user's own token file and root's 0600 cache may hold one.
    cache = site.root / "user-tokens.db"
    assert stat.S_IMODE(os.stat(cache).st_mode) & 0o077 == 0
    skip = {str(site.token_dir(site.user)), str(cache), str(site.root / "globus")}
    assert _files_holding(site.root, [old_rt, new_rt], skip=skip) == []
    assert old_rt not in agent_log(site) and "invalid_grant" in agent_log(site)


def test_expired_access_token_is_refreshed_through_the_sdk(site):
    remote_file(site, "in/a.dat", "a\n")
    first = site.submit("-l", stagein_arg(site, "in/a.dat", "in/a.dat"))
    site.run_until(lambda: site.job_state(first) == "F", timeout=60)
    token_file = site.token_dir(site.user) / "tokens.json"
    before = (token_file.read_bytes(), os.stat(token_file).st_mtime_ns)
    site.emulator.expire_access_tokens()
    site.emulator.reset_calls()
    remote_file(site, "in/b.dat", "b\n")
    second = site.submit("-l", stagein_arg(site, "in/b.dat", "in/b.dat"))
    site.run_until(lambda: site.job_state(second) == "F", timeout=60)
    # one refresh with the user's refresh token (the SDK retries after the 401),
    # then the new access token is reused from root's cache
    assert site.emulator.count_calls(TOKEN_PATH) == 1
    assert "user-action" not in site.timeline(second)
    # root wrote nothing into the user's token directory
    assert (token_file.read_bytes(), os.stat(token_file).st_mtime_ns) == before
    assert sorted(os.listdir(site.token_dir(site.user))) == ["tokens.json"]


# ---------------------------------------------------------------- swaps mid-read

def _provider(tmp_path, template):
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    return UserTokenProvider(client_id=NATIVE_CLIENT, token_dir_template=template,
                             cache_path=state / "cache.db", auth_url="http://127.0.0.1:9/")


def _login_as(base, user, refresh_token):
    tdir = base / user / ".globus-staging"
    tdir.parent.mkdir(parents=True, exist_ok=True)
    write_user_tokens(UserTokens(client_id=NATIVE_CLIENT, refresh_token=refresh_token),
                      token_dir=tdir)
    pw = pwd.getpwnam(user)
    for p in (tdir, tdir / "tokens.json"):
        os.chown(p, pw.pw_uid, pw.pw_gid)
    return tdir


def _swaps(adir, vdir):
    """Ways the attacker can replace their own token file/dir with the victim's."""
    def file_symlink():
        os.rename(adir / "tokens.json", adir / "old.json")
        os.symlink(vdir / "tokens.json", adir / "tokens.json")

    def dir_symlink():
        os.rename(adir, adir.with_name("old-dir"))
        os.symlink(vdir, adir)

    def hardlink():
        os.rename(adir / "tokens.json", adir / "old.json")
        os.link(vdir / "tokens.json", adir / "tokens.json")

    def parent_symlink():
        # the attacker owns their home: swap it for a link to the victim's
        home = adir.parent
        os.rename(home, home.with_name(home.name + "-old"))
        os.symlink(vdir.parent, home)

    return {"file-symlink": file_symlink, "dir-symlink": dir_symlink,
            "hardlink": hardlink, "home-symlink": parent_symlink}


@pytest.mark.parametrize("swap", ["file-symlink", "dir-symlink", "hardlink", "home-symlink"])
def test_swap_at_any_point_of_the_read_never_yields_the_victims_token(
        tmp_path, two_users, monkeypatch, swap):  # noqa: F811
    """The swap is made right before the k-th ``os.open`` of the read, and
    again right after it, for every k: the agent gets the attacker's own
    token or a refusal, never the victim's."""
    victim, attacker = two_users
    real_open = os.open
    steps = None
    outcomes = set()
    k = 0
    while steps is None or k < 2 * steps:
        case = tmp_path / f"case{k}"
        base = case / "homes"
        vdir = _login_as(base, victim, "RT-VICTIM")
        adir = _login_as(base, attacker, "RT-ATTACKER")
        provider = _provider(case, str(base / "{user}" / ".globus-staging"))
        do_swap = _swaps(adir, vdir)[swap]
        calls = [0]
        target, after = divmod(k, 2)

        def spy(path, flags, mode=0o777, *, dir_fd=None, _t=target, _a=after, _s=do_swap):
            n = calls[0]
            calls[0] += 1
            if n == _t and not _a:
                _s()
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            if n == _t and _a:
                _s()
            return fd

        monkeypatch.setattr(credentials.os, "open", spy)
        try:
            got = provider.read_tokens(attacker).refresh_token
        except WaitingForUser as err:
            got = "refused"
            assert "RT-" not in str(err) and f"login of {attacker}" in str(err)
        finally:
            monkeypatch.setattr(credentials.os, "open", real_open)
        assert got in ("RT-ATTACKER", "refused"), (swap, k)
        outcomes.add(got)
        if steps is None:
            steps = calls[0]    # how many opens a read makes (every path component)
        k += 1
    assert steps >= 5
    # both outcomes happen: a swap before the last open is caught, one after it
    # is harmless because every check is made on the descriptor already open
    assert outcomes == {"RT-ATTACKER", "refused"}


def test_token_file_made_group_readable_or_foreign_after_login_is_refused(
        tmp_path, two_users):  # noqa: F811
    victim, attacker = two_users
    base = tmp_path / "homes"
    adir = _login_as(base, attacker, "RT-ATTACKER")
    provider = _provider(tmp_path, str(base / "{user}" / ".globus-staging"))
    assert provider.read_tokens(attacker).refresh_token == "RT-ATTACKER"
    # a token the victim could read or replace is not the attacker's alone
    os.chmod(adir / "tokens.json", 0o604)
    with pytest.raises(WaitingForUser, match="may be read by group or others"):
        provider.read_tokens(attacker)
    os.chmod(adir / "tokens.json", 0o600)
    os.chown(adir / "tokens.json", pwd.getpwnam(victim).pw_uid, -1)
    with pytest.raises(WaitingForUser, match="owned by uid"):
        provider.read_tokens(attacker)
    # the attacker's home made writable by everyone: anyone could swap the dir
    os.chown(adir / "tokens.json", pwd.getpwnam(attacker).pw_uid, -1)
    os.chmod(adir.parent, 0o777)
    with pytest.raises(WaitingForUser, match="writable by group or others"):
        provider.read_tokens(attacker)
