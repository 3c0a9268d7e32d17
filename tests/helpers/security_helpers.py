"""Shared set-up for the security tests: two real local accounts.

The per-user credential checks compare file owners with the job owner's uid,
so cross-user tests need accounts that exist in the passwd database of the
machine running the tests.  As root (how the agent runs, and how CI runs the
suite) we create two throw-away accounts for the session and delete them
afterwards; without root the tests cannot chown files to another user and
are skipped with that reason.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from pbs_globus_staging_sim.site import StagingSite


def _useradd(name: str) -> None:
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", name], check=True, capture_output=True, text=True,
                   timeout=30)


def _userdel(name: str) -> None:
    subprocess.run(["userdel", name], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="session")
def two_users():
    """(victim, attacker): two fresh accounts, e.g. ('gsa1a2b3c', 'gsb1a2b3c')."""
    if os.geteuid() != 0:
        pytest.skip("cross-user tests need root (to create accounts and chown to them)")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("cross-user tests need useradd/userdel")
    tag = uuid.uuid4().hex[:7]
    names = (f"gsa{tag}", f"gsb{tag}")
    made = []
    try:
        for name in names:
            _useradd(name)
            made.append(name)
        yield names
    finally:
        for name in made:
            _userdel(name)


def give_to(site: StagingSite, user: str) -> None:
    """Make ``user``'s token directory and file theirs, as if ``globus-staging
    login`` had run as them (StagingSite.add_user writes as the test's uid)."""
    pw = pwd.getpwnam(user)
    tdir = site.token_dir(user)
    for path in (tdir, tdir / "tokens.json"):
        os.chown(path, pw.pw_uid, pw.pw_gid)


def add_real_user(site: StagingSite, user: str) -> str:
    ident = site.add_user(user)
    give_to(site, user)
    return ident


def job_comment(site: StagingSite, job: str) -> str:
    return str(site.qstat(job).get("comment", ""))


def agent_log(site: StagingSite) -> str:
    """What the admins read: the agent's log in its state directory (next to
    the journal)."""
    path = Path(site.root) / "agent.log"
    return path.read_text(errors="replace") if path.exists() else ""
