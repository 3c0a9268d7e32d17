"""The emulator touches files as the local account an identity maps to (issue 11, point 4).

A Globus Connect Server v5 mapped collection does each file operation of a
user as the local account the user's identity maps to, so the kernel checks
permissions and symlinks for that account.  These tests run the emulator as
root with two real unprivileged accounts (created for the session, see
security_helpers), VICTIM and ATTACKER, through the real globus-sdk over HTTP.
The collection grants both identities everything: as on a real mapped
collection, the filesystem is what keeps them apart.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig

from pbs_globus_staging.credentials import login_scope
from pbs_globus_staging_sim.emulator import GlobusEmulator
from security_helpers import two_users  # noqa: F401

DOMAIN = "example.org"


def _own(path: Path, user: str, mode: int) -> None:
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    path.chmod(mode)


@pytest.fixture
def world(two_users, monkeypatch):  # noqa: F811
    """An emulator as root mapping identities by username, over home and
    remote trees the two accounts own as they would on a real host.  The base
    directory is outside pytest's tmp_path, which only root may enter."""
    victim, attacker = two_users
    base = Path(tempfile.mkdtemp(prefix="gs-accounts-", dir="/tmp"))
    base.chmod(0o755)
    emu = GlobusEmulator(base / "globus", accounts="username", bytes_per_second=float("inf"),
                         fault_retry_interval=0.05)
    try:
        emu.start()
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        home, remote = base / "home", base / "remote"
        ids = {"site": emu.add_collection("site", directory=home),
               "remote": emu.add_collection("remote", directory=remote)}
        home.chmod(0o755)
        remote.chmod(0o755)
        for user, mode in ((victim, 0o700), (attacker, 0o755)):
            for top in (home, remote):
                (top / user).mkdir()
                _own(top / user, user, mode)
        clients = {}
        for user in (victim, attacker):
            ident = emu.add_identity(f"{user}@{DOMAIN}")
            emu.grant(ident, ids["site"], "/")
            emu.grant(ident, ids["remote"], "/")
            clients[user] = _client(*emu.add_client(ident), collections=ids.values())
        secret = home / victim / "secret.dat"
        secret.write_text("victim's data\n")
        _own(secret, victim, 0o600)
        yield {"emu": emu, "victim": victim, "attacker": attacker, "home": home,
               "far": remote, "clients": clients, **ids}
    finally:
        emu.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not emu.internal_errors, emu.internal_errors


def _client(client_id: str, secret: str, *, collections=()) -> globus_sdk.TransferClient:
    # Mapped collections need their data_access consent in the token (emulator/auth.py).
    auth = globus_sdk.ConfidentialAppAuthClient(client_id, secret)
    return globus_sdk.TransferClient(
        authorizer=globus_sdk.ClientCredentialsAuthorizer(
            auth, str(login_scope(list(collections)))),
        retry_config=RetryConfig(max_retries=0))


def _submit(tc, src, dst, items, **kw) -> str:
    td = globus_sdk.TransferData(src, dst, **kw)
    for s, d, rec in items:
        td.add_item(s, d, recursive=rec)
    return tc.submit_transfer(td)["task_id"]


def _wait(tc, task_id, until, timeout=20.0) -> dict:
    end = time.monotonic() + timeout
    while True:
        doc = tc.get_task(task_id)
        if until(doc):
            return doc.data
        assert doc["status"] != "FAILED" or until(doc), doc.data
        assert time.monotonic() < end, f"task never reached the state: {doc.data}"
        time.sleep(0.05)


def _denied(doc) -> bool:
    return doc["status"] == "ACTIVE" and doc["nice_status"] == "PERMISSION_DENIED"


def _error_details(tc, task_id) -> str:
    return "\n".join(e["details"] for e in tc.task_event_list(task_id, limit=100)
                     if e["is_error"])


def test_stage_out_through_a_symlink_to_another_users_home_is_denied(world):
    w = world
    victim, attacker = w["victim"], w["attacker"]
    tc = w["clients"][attacker]
    link = w["home"] / attacker / "x"
    link.symlink_to(w["home"] / victim)
    os.lchown(link, pwd.getpwnam(attacker).pw_uid, -1)
    task = _submit(tc, w["site"], w["remote"],
                   [(f"/{attacker}/x/secret.dat", f"/{attacker}/loot.dat", False)])
    doc = _wait(tc, task, _denied)
    assert doc["files_transferred"] == 0 and doc["faults"] >= 1
    assert "Permission denied" in _error_details(tc, task)
    assert not (w["far"] / attacker / "loot.dat").exists()
    tc.cancel_task(task)
    # What refused is the kernel, for the attacker's account: the same request
    # done as the emulator's own account (root; the old behaviour) copies it.
    w["emu"].map_accounts("self")
    task = _submit(tc, w["site"], w["remote"],
                   [(f"/{attacker}/x/secret.dat", f"/{attacker}/loot.dat", False)])
    _wait(tc, task, lambda d: d["status"] == "SUCCEEDED")
    assert (w["far"] / attacker / "loot.dat").read_text() == "victim's data\n"


@pytest.mark.parametrize("recursive", [False, True])
def test_stage_in_through_a_symlink_cannot_plant_files_in_another_users_home(world,
                                                                              recursive):
    w = world
    victim, attacker = w["victim"], w["attacker"]
    tc = w["clients"][attacker]
    payload = w["far"] / attacker / "payload"
    payload.mkdir()
    (payload / "planted.txt").write_text("boo\n")
    for p in (payload, payload / "planted.txt"):
        _own(p, attacker, 0o755 if p.is_dir() else 0o644)
    link = w["home"] / attacker / "drop"
    link.symlink_to(w["home"] / victim)
    item = ((f"/{attacker}/payload/", f"/{attacker}/drop/sub/", True) if recursive else
            (f"/{attacker}/payload/planted.txt", f"/{attacker}/drop/planted.txt", False))
    task = _submit(tc, w["remote"], w["site"], [item])
    doc = _wait(tc, task, _denied)
    assert doc["files_transferred"] == 0
    assert "Permission denied" in _error_details(tc, task)
    tc.cancel_task(task)
    assert sorted(p.name for p in (w["home"] / victim).iterdir()) == ["secret.dat"]


def test_files_staged_in_belong_to_the_mapped_account(world):
    w = world
    attacker = w["attacker"]
    pw = pwd.getpwnam(attacker)
    tc = w["clients"][attacker]
    data = w["far"] / attacker / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("a\n")
    (data / "sub" / "b.txt").write_text("b\n")     # root's files, readable by all
    task = _submit(tc, w["remote"], w["site"],
                   [(f"/{attacker}/data/", f"/{attacker}/in/", True),
                    (f"/{attacker}/data/a.txt", f"/{attacker}/one.txt", False)])
    _wait(tc, task, lambda d: d["status"] == "SUCCEEDED")
    made = [w["home"] / attacker / p for p in ("in", "in/a.txt", "in/sub", "in/sub/b.txt",
                                               "one.txt")]
    assert [(p.stat().st_uid, p.stat().st_gid) for p in made] == \
        [(pw.pw_uid, pw.pw_gid)] * len(made)
    assert (w["home"] / attacker / "in" / "sub" / "b.txt").read_text() == "b\n"
    # ls / stat / mkdir are done as the account too, and show its name
    ls = tc.operation_ls(w["site"], path=f"/{attacker}/in/")
    assert {(e["name"], e["type"], e["user"]) for e in ls} == \
        {("a.txt", "file", attacker), ("sub", "dir", attacker)}
    assert tc.operation_stat(w["site"], f"/{attacker}/one.txt")["user"] == attacker
    tc.operation_mkdir(w["site"], f"/{attacker}/made")
    assert (w["home"] / attacker / "made").stat().st_uid == pw.pw_uid
    assert grp.getgrgid((w["home"] / attacker / "made").stat().st_gid).gr_name == attacker


def test_another_users_home_is_the_kernels_to_refuse_in_ls_stat_mkdir(world):
    w = world
    victim, attacker = w["victim"], w["attacker"]
    tc = w["clients"][attacker]
    calls = (lambda: tc.operation_ls(w["site"], path=f"/{victim}/"),
             lambda: tc.operation_stat(w["site"], f"/{victim}/secret.dat"),
             lambda: tc.operation_mkdir(w["site"], f"/{victim}/mine"))
    for call in calls:
        with pytest.raises(globus_sdk.TransferAPIError) as err:
            call()
        assert (err.value.http_status, err.value.code) == (403, "EndpointPermissionDenied")
    assert not (w["home"] / victim / "mine").exists()
    # the victim, as themself, sees their own files
    ls = w["clients"][victim].operation_ls(w["site"], path=f"/{victim}/")
    assert [(e["name"], e["user"], e["permissions"]) for e in ls] == \
        [("secret.dat", victim, "0600")]


def test_identity_without_a_local_account_touches_nothing(world):
    w = world
    emu = w["emu"]
    ghost = emu.add_identity(f"nosuchuser-{os.getpid()}@{DOMAIN}")
    emu.grant(ghost, w["site"], "/")
    emu.grant(ghost, w["remote"], "/")
    tc = _client(*emu.add_client(ghost), collections=(w["site"], w["remote"]))
    (w["far"] / "open.txt").write_text("anyone\n")
    task = _submit(tc, w["remote"], w["site"], [("/open.txt", "/open.txt", False)])
    _wait(tc, task, _denied)
    assert "maps to no local account" in _error_details(tc, task)
    assert not (w["home"] / "open.txt").exists()
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.operation_ls(w["site"], path="/")
    assert err.value.http_status == 403 and "maps to no local account" in err.value.message


def test_emulator_not_root_acts_only_as_its_own_user(world):
    """Without root the emulator cannot change account: it serves its own
    user's identity in-process and refuses any other with a clear error."""
    w = world
    victim, attacker = w["victim"], w["attacker"]
    from pbs_globus_staging_sim.emulator.fsaccess import AccountMap
    pw = pwd.getpwnam(attacker)
    # A forked child that becomes the attacker (the interpreter may sit where
    # the account cannot exec it) and reports what an emulator there can do.
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(rfd)
            os.setgroups([])
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)
            lines = []
            m = AccountMap("username")
            lines.append(f"own: {type(m.files(attacker + '@x')).__name__} {os.geteuid()}")
            try:
                m.files(f"{victim}@x")
            except PermissionError as exc:
                lines.append(f"other: {exc.strerror}")
            try:
                GlobusEmulator(w["home"] / attacker / "emu").add_identity(
                    "v", local_account=victim)
            except ValueError as exc:
                lines.append(f"setup: {exc}")
            os.write(wfd, "\n".join(lines).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as r:
        text = r.read()
    os.waitpid(pid, 0)
    out = text.splitlines()
    assert out[0] == f"own: Files {pwd.getpwnam(attacker).pw_uid}"
    refusal = (f"the emulator runs as {attacker!r} (uid {pwd.getpwnam(attacker).pw_uid}), "
               f"not root, so it cannot act as local account {victim!r}")
    assert out[1].startswith("other: " + refusal)
    assert out[2].startswith(f"setup: identity v: {refusal}")
