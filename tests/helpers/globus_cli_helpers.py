"""The real ``globus`` CLI (globus-cli) in a virtual environment of its own,
installed once and cached between runs (``$GLOBUS_STAGING_TEST_CACHE``, default
a directory under the system temp dir); tests that use it skip, with pip's
reason, where it cannot be installed."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

CLI_REQUIREMENT = "globus-cli>=3.44,<4"


def _cache_dir() -> Path:
    base = os.environ.get("GLOBUS_STAGING_TEST_CACHE") or os.path.join(
        tempfile.gettempdir(), "pbs-globus-staging-test-cache")
    return Path(base) / f"globus-cli-py{sys.version_info[0]}{sys.version_info[1]}"


@pytest.fixture(scope="session")
def globus_cli() -> Path:
    venv = _cache_dir()
    exe = venv / "bin" / "globus"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)       # one installer at a time
        if not (venv / ".installed").exists():
            steps = ([sys.executable, "-m", "venv", "--clear", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                      "--disable-pip-version-check", CLI_REQUIREMENT])
            for argv in steps:
                try:
                    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
                except (OSError, subprocess.TimeoutExpired) as exc:
                    pytest.skip(f"cannot install {CLI_REQUIREMENT}: {exc}")
                if proc.returncode != 0:
                    lines = [line for line in (proc.stderr or proc.stdout).splitlines()
                             if line.strip() and not line.startswith("WARNING")]
                    pytest.skip(f"cannot install {CLI_REQUIREMENT}: "
                                f"{lines[-1] if lines else 'pip failed'}")
            (venv / ".installed").write_text(CLI_REQUIREMENT + "\n")
    if not exe.exists():
        pytest.skip(f"{exe} missing after installing {CLI_REQUIREMENT}")
    return exe
