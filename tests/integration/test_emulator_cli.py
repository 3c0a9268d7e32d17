"""``python -m pbs_globus_staging_sim.emulator``: standalone run with a setup file."""
from __future__ import annotations

import re
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig

from pbs_globus_staging_sim.emulator import main

SETUP = """\
collections:
  - {name: site}
  - {name: remote, id: 6a1c2b3d-0000-4000-8000-000000000001}
identities:
  - username: alice
    grants:
      - {collection: site, path: /}
      - {collection: remote, path: /data, write: false}
    clients: [{id: alice-client, secret: s3cret}]
    login: true
"""


def _read_until(proc: subprocess.Popen, pattern: str, timeout: float = 20) -> List[str]:
    """Lines of stdout up to one matching ``pattern`` (a reader thread, because
    select() does not see what a text stream has already buffered)."""
    lines: "queue.Queue[str | None]" = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: List[str] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if re.search(pattern, line):
            return seen
    raise AssertionError(f"no line matching {pattern!r}; got {seen!r}")


def test_standalone_server_with_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = tmp_path / "setup.yaml"
    setup.write_text(SETUP)
    root = tmp_path / "root"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbs_globus_staging_sim.emulator", "--port", "0",
         "--root", str(root), "--setup", str(setup), "--accounts", "self"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _read_until(proc, r"refresh token for alice")
        env = dict(re.match(r"export (\w+)=(\S+)$", l).groups()
                   for l in lines if l.startswith("export "))
        assert set(env) == {"GLOBUS_SDK_SERVICE_URL_TRANSFER", "GLOBUS_SDK_SERVICE_URL_AUTH"}
        assert env["GLOBUS_SDK_SERVICE_URL_TRANSFER"].startswith("http://127.0.0.1:")
        assert any("id=alice-client secret=s3cret" in l for l in lines)
        site = next(re.search(r"collection site = (\S+)", l).group(1)
                    for l in lines if "collection site" in l)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        (root / "site" / "in.txt").write_text("via cli")
        (root / "remote" / "data").mkdir(parents=True)
        auth = globus_sdk.ConfidentialAppAuthClient("alice-client", "s3cret")
        tc = globus_sdk.TransferClient(
            authorizer=globus_sdk.ClientCredentialsAuthorizer(
                auth, globus_sdk.TransferClient.scopes.all.with_dependency(
                    globus_sdk.scopes.GCSCollectionScopes(site).data_access)),
            retry_config=RetryConfig(max_retries=0))
        td = globus_sdk.TransferData(site, site)
        td.add_item("/in.txt", "/out.txt")
        task_id = tc.submit_transfer(td)["task_id"]
        end = time.monotonic() + 10
        while tc.get_task(task_id)["status"] != "SUCCEEDED":
            assert time.monotonic() < end
            time.sleep(0.05)
        assert (root / "site" / "out.txt").read_text() == "via cli"
        assert tc.get_endpoint("6a1c2b3d-0000-4000-8000-000000000001")["display_name"] \
            == "remote"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize("content,fragment", [
    ("collections: 5\n", "'collections' must be a list"),
    ("identities:\n  - {grants: []}\n", "needs a 'username'"),
    ("collections: [\n", "not valid YAML"),
])
def test_bad_setup_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture,
                                     content: str, fragment: str) -> None:
    setup = tmp_path / "setup.yaml"
    setup.write_text(content)
    assert main(["--root", str(tmp_path / "r"), "--setup", str(setup)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_setup_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--root", str(tmp_path), "--setup", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_console_script_takes_the_same_options(tmp_path: Path) -> None:
    """Issue 11 point 5: ``globus-staging emulator --root DIR --port N`` used to
    fail with "unrecognized arguments"; both entry points share one parser."""
    script = Path(sys.executable).with_name("globus-staging")
    assert script.exists(), f"console script not installed next to {sys.executable}"
    helps = [subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=60)
             for argv in ([str(script), "emulator"],
                          [sys.executable, "-m", "pbs_globus_staging_sim.emulator"])]
    assert [h.returncode for h in helps] == [0, 0]
    assert helps[0].stdout == helps[1].stdout
    setup = tmp_path / "setup.yaml"
    setup.write_text(SETUP)
    port = _free_port()
    proc = subprocess.Popen(
        [str(script), "emulator", "--root", str(tmp_path / "root"), "--port", str(port),
         "--setup", str(setup), "--rate", "1e9", "--active-limit", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _read_until(proc, r"refresh token for alice")
        assert f"export GLOBUS_SDK_SERVICE_URL_TRANSFER=http://127.0.0.1:{port}/" in lines
        auth = globus_sdk.ConfidentialAppAuthClient("alice-client", "s3cret")
        auth.base_url = f"http://127.0.0.1:{port}/"
        token = auth.oauth2_client_credentials_tokens(
            requested_scopes=globus_sdk.TransferClient.scopes.all)
        assert token.by_resource_server["transfer.api.globus.org"]["access_token"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    bad = subprocess.run([str(script), "emulator", "--root", str(tmp_path), "--port", "70000"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == \
        "error: --port 70000: expected 0..65535"
