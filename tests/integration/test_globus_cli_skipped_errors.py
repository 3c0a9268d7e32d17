"""The real `globus` CLI (globus-cli, in its own virtual environment) reads the
emulator's skipped errors and task events as it reads Globus's: a recursive
transfer with --skip-source-errors, `task wait`, `task show`,
`task show --skipped-errors`, `task event-list`.  Skips when globus-cli cannot
be installed here."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pbs_globus_staging_sim.emulator import GlobusEmulator

def test_globus_cli_shows_skipped_errors_and_events(globus_cli: Path, tmp_path: Path):
    with GlobusEmulator(tmp_path / "globus") as emu:
        # guest collections: a client login's token carries no data_access (test_globus_cli.py)
        src = emu.add_collection("src", entity_type="GCSv5_guest_collection")
        dst = emu.add_collection("dst", entity_type="GCSv5_guest_collection")
        ident = emu.add_identity("alice")
        emu.grant(ident, src, "/")
        emu.grant(ident, dst, "/")
        client_id, secret = emu.add_client(ident)
        inputs = tmp_path / "globus" / "src" / "in"
        inputs.mkdir(parents=True)
        (inputs / "a.dat").write_text("a\n")
        (inputs / "b.dat").write_text("b\n")
        emu.make_ambiguous(src, "/in/b.dat")
        env = dict(os.environ, **emu.env(), GLOBUS_CLI_CLIENT_ID=client_id,
                   GLOBUS_CLI_CLIENT_SECRET=secret, HOME=str(tmp_path))

        def globus(*args: str) -> str:
            proc = subprocess.run([str(globus_cli), *args], env=env, capture_output=True,
                                  text=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        task_id = json.loads(globus("transfer", f"{src}:/in/", f"{dst}:/out/", "-r",
                                    "--skip-source-errors", "-F", "json"))["task_id"]
        globus("task", "wait", task_id, "--timeout", "30")
        show = json.loads(globus("task", "show", task_id, "-F", "json"))
        assert show["status"] == "SUCCEEDED" and show["subtasks_skipped_errors"] == 1
        skipped = json.loads(globus("task", "show", "--skipped-errors", task_id, "-F", "json"))
        (err,) = skipped["DATA"]
        assert (err["source_path"], err["error_code"]) == ("/in/b.dat", "AMBIGUOUS_PATH")
        assert "AMBIGUOUS_PATH" in globus("task", "show", "--skipped-errors", task_id)
        events = json.loads(globus("task", "event-list", task_id, "-F", "json"))["DATA"]
        assert [e["code"] for e in events][:2] == ["SUCCEEDED", "SKIPPED_ERRORS"]
        assert (tmp_path / "globus" / "dst" / "out" / "a.dat").read_text() == "a\n"
        assert not (tmp_path / "globus" / "dst" / "out" / "b.dat").exists()
