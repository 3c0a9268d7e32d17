"""pytest plugin: ``pbs_server`` (a fresh PbsServer with commands installed and
``PBS_CONF_FILE`` set for the test) and helpers for writing job scripts and hooks."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from .server import PbsServer


@pytest.fixture
def pbs_server(tmp_path: Path, monkeypatch) -> PbsServer:
    """A PBS double under tmp_path/pbs_home; its commands are first on PATH."""
    server = PbsServer(tmp_path / "pbs_home", exec_dir=tmp_path / "pbs_exec",
                       server_name="pbsdouble")
    server.install_commands()
    for key, value in server.env().items():
        if key in ("PBS_CONF_FILE", "PATH"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("PBS_DOUBLE_USER", raising=False)
    yield server
    server.stop()


@pytest.fixture
def pbs_job_script(tmp_path: Path):
    """make(body, name="job.sh") -> Path of an executable bash job script under tmp_path."""
    def make(body: str = "true\n", name: str = "job.sh") -> Path:
        path = tmp_path / name
        path.write_text("#!/bin/bash\n" + textwrap.dedent(body))
        path.chmod(0o755)
        return path
    return make
