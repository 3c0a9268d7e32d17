"""The real ``globus`` CLI (globus-cli) drives the emulator (issue 11, "Done when").

globus-cli is installed from the package index into a virtual environment of
its own, cached between runs (``$GLOBUS_STAGING_TEST_CACHE``, default a
directory under the system temp dir), and pointed at the emulator the way
globus-sdk documents: ``GLOBUS_SDK_SERVICE_URL_TRANSFER`` and
``GLOBUS_SDK_SERVICE_URL_AUTH`` (globus_sdk/config/environments.py,
``get_service_url``).  It authenticates as a client identity with
``GLOBUS_CLI_CLIENT_ID`` / ``GLOBUS_CLI_CLIENT_SECRET``
(globus_cli/login_manager/client_login.py): client credentials grants, which
the emulator serves.  Skipped, with pip's reason, where it cannot be installed.
"""
from __future__ import annotations

import json
import os
import pwd
import subprocess
import uuid
from pathlib import Path

import pytest

from pbs_globus_staging_sim.emulator import GlobusEmulator



@pytest.fixture
def cli_world(tmp_path, globus_cli):
    emu = GlobusEmulator(tmp_path / "globus", bytes_per_second=float("inf")).start()
    try:
        # Guest collections: globus-cli asks a client login's token for Transfer
        # alone (login_manager/manager.py adds data_access only for user logins on
        # GCS commands), so on mapped collections the real service, and the
        # emulator, answer ConsentRequired to it; that refusal is pinned below.
        site = emu.add_collection("site", entity_type="GCSv5_guest_collection")
        remote = emu.add_collection("remote", entity_type="GCSv5_guest_collection")
        mapped = emu.add_collection("mapped")
        ident = emu.add_identity("alice@example.org")
        emu.grant(ident, site, "/")
        emu.grant(ident, remote, "/data", write=False)
        # globus-cli wants a UUID client id (exception_handling/messages.py)
        client_id, secret = emu.add_client(ident, client_id=str(uuid.uuid4()))
        home = tmp_path / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GLOBUS_", "PYTHON"))}
        env.update(emu.env())
        env.update({"GLOBUS_CLI_CLIENT_ID": client_id, "GLOBUS_CLI_CLIENT_SECRET": secret,
                    "HOME": str(home)})           # the CLI's token storage lives there

        def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
            proc = subprocess.run([str(globus_cli), *args], capture_output=True, text=True,
                                  env=env, timeout=120)
            if check:
                assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            return proc

        emu.grant(ident, mapped, "/")
        yield {"emu": emu, "run": run, "site": site, "remote": remote, "mapped": mapped,
               "ident": ident,
               "site_dir": emu.root / "site", "remote_dir": emu.root / "remote"}
        assert not emu.internal_errors, emu.internal_errors
    finally:
        emu.stop()


def test_globus_cli_transfer_wait_show_list_ls(cli_world):  # noqa: C901 - one CLI session
    w, run = cli_world, cli_world["run"]
    data = w["remote_dir"] / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.dat").write_text("alpha\n")
    (data / "sub" / "b.dat").write_text("beta\n")
    (data / ".hidden").write_text("dot\n")

    ls = json.loads(run("ls", f"{w['remote']}:/data/", "-F", "json").stdout)
    assert sorted((e["name"], e["type"]) for e in ls["DATA"]) == [("a.dat", "file"),
                                                                  ("sub", "dir")]
    assert {e["user"] for e in ls["DATA"]} == {pwd.getpwuid(os.geteuid()).pw_name}
    # globus ls sends show_hidden=0 unless --all
    assert run("ls", f"{w['remote']}:/data/").stdout.split() == ["a.dat", "sub/"]
    assert run("ls", "--all", f"{w['remote']}:/data/").stdout.split() == \
        [".hidden", "a.dat", "sub/"]

    sub = json.loads(run("transfer", f"{w['remote']}:/data/", f"{w['site']}:/in/",
                         "--recursive", "--label", "cli test", "-F", "json").stdout)
    task_id = sub["task_id"]
    assert sub["code"] == "Accepted"
    task = w["emu"].tasks[task_id]
    assert task.owner_id == w["ident"] and task.label == "cli test"

    run("task", "wait", task_id, "--timeout", "60", "--polling-interval", "1")
    shown = json.loads(run("task", "show", task_id, "-F", "json").stdout)
    assert (shown["status"], shown["files_transferred"], shown["label"]) == \
        ("SUCCEEDED", 3, "cli test")     # hidden files are transferred
    moved = json.loads(run("task", "show", "--successful-transfers", task_id,
                           "-F", "json").stdout)
    assert sorted((r["source_path"], r["destination_path"]) for r in moved["DATA"]) == [
        ("/data/.hidden", "/in/.hidden"), ("/data/a.dat", "/in/a.dat"),
        ("/data/sub/b.dat", "/in/sub/b.dat")]
    listed = json.loads(run("task", "list", "-F", "json").stdout)
    assert [t["task_id"] for t in listed["DATA"]] == [task_id]
    assert listed["DATA"][0]["filter_rules"] is None
    assert (w["site_dir"] / "in" / "sub" / "b.dat").read_text() == "beta\n"
    ls = json.loads(run("ls", f"{w['site']}:/in/", "-l", "-F", "json").stdout)
    assert sorted(e["name"] for e in ls["DATA"]) == ["a.dat", "sub"]

    # --include/--exclude become filter_rules (first match wins, default include;
    # globus_cli/commands/transfer.py, globus-sdk TransferData.add_filter_rule)
    (data / "skip.tmp").write_text("tmp\n")
    (data / "sub" / "keep.tmp").write_text("kept\n")
    filtered = json.loads(run("transfer", f"{w['remote']}:/data/", f"{w['site']}:/f/",
                              "--recursive", "--include", "keep.*", "--exclude", "*.tmp",
                              "-F", "json").stdout)["task_id"]
    run("task", "wait", filtered, "--timeout", "60", "--polling-interval", "1")
    got = sorted(str(p.relative_to(w["site_dir"] / "f"))
                 for p in (w["site_dir"] / "f").rglob("*") if p.is_file())
    assert got == [".hidden", "a.dat", "sub/b.dat", "sub/keep.tmp"]
    rules = json.loads(run("task", "show", filtered, "-F", "json").stdout)["filter_rules"]
    assert [(r["method"], r["name"], r["type"]) for r in rules] == \
        [("include", "keep.*", "file"), ("exclude", "*.tmp", "file")]

    # the CLI's view of failures: a task that cannot finish times out the wait
    # (exit 1), the emulator's errors reach the CLI's error output
    stuck = json.loads(run("transfer", f"{w['remote']}:/data/missing.dat",
                           f"{w['site']}:/missing.dat", "-F", "json").stdout)["task_id"]
    waited = run("task", "wait", stuck, "--timeout", "2", "--polling-interval", "1",
                 check=False)
    assert waited.returncode == 1
    assert json.loads(run("task", "show", stuck, "-F", "json").stdout)["nice_status"] == \
        "FILE_NOT_FOUND"
    missing = run("ls", f"{w['remote']}:/data/nope/", check=False)
    assert missing.returncode == 1 and "ClientError.NotFound" in missing.stderr
    refused = run("ls", f"{w['site']}:/../", check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr

    # every route the CLI used exists in the emulator
    unknown = [c for c in w["emu"].calls if c.status == 404 and "ls" not in c.path]
    assert unknown == [], unknown


def test_globus_cli_client_login_on_a_mapped_collection_gets_consent_required(cli_world):
    """The real CLI, logged in as a client, sees the ConsentRequired refusal a
    mapped collection gives a token without its data_access scope."""
    proc = cli_world["run"]("ls", f"{cli_world['mapped']}:/", "-F", "json", check=False)
    assert proc.returncode != 0
    assert "ConsentRequired" in proc.stdout + proc.stderr
    assert f"{cli_world['mapped']}/data_access" in proc.stdout + proc.stderr
