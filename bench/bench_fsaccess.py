#!/usr/bin/env python3
"""Bench: the emulator's file work as the mapped account (emulator/fsaccess.py).

One recursive transfer of N small files through the real globus-sdk, with the
emulator doing its file work as itself (``accounts="self"``, in-process) and,
when run as root, as another local account (``accounts="username"``: every
operation goes to that account's worker process).  Prints the wall time from
submission to SUCCEEDED and files per second for each, and the round-trip time
of one worker operation.

    .venv/bin/python bench/bench_fsaccess.py [--files 2000] [--account nobody]
"""
from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _transfer(base: Path, mapping: str, account: str, files: int) -> float:
    import globus_sdk
    from globus_sdk.transport import RetryConfig

    from pbs_globus_staging.credentials import login_scope
    from pbs_globus_staging_sim.emulator import GlobusEmulator

    emu = GlobusEmulator(base / f"globus-{mapping}", accounts=mapping,
                         bytes_per_second=float("inf"))
    emu.start()
    try:
        os.environ.update(emu.env())
        src_dir, dst_dir = base / f"src-{mapping}", base / f"dst-{mapping}"
        src = emu.add_collection("src", directory=src_dir)
        dst = emu.add_collection("dst", directory=dst_dir)
        data = src_dir / "data"
        for n in range(files):
            sub = data / f"d{n // 100:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"f{n:05d}").write_bytes(b"x" * 64)
        if mapping == "username":
            pw = pwd.getpwnam(account)
            for root, dirs, names in os.walk(base):
                for name in [root] + [os.path.join(root, d) for d in dirs + names]:
                    os.chown(name, pw.pw_uid, pw.pw_gid)
        ident = emu.add_identity(f"{account}@example.org")
        emu.grant(ident, src, "/")
        emu.grant(ident, dst, "/")
        cid, secret = emu.add_client(ident)
        auth = globus_sdk.ConfidentialAppAuthClient(cid, secret)
        # Mapped collections want their data_access consents (ConsentRequired without).
        tc = globus_sdk.TransferClient(
            authorizer=globus_sdk.ClientCredentialsAuthorizer(
                auth, str(login_scope([src, dst]))),
            retry_config=RetryConfig(max_retries=0))
        td = globus_sdk.TransferData(src, dst)
        td.add_item("/data/", "/data/", recursive=True)
        start = time.perf_counter()
        task = tc.submit_transfer(td)["task_id"]
        while True:
            doc = tc.get_task(task)
            if doc["status"] != "ACTIVE":
                break
            time.sleep(0.02)
        took = time.perf_counter() - start
        if doc["status"] != "SUCCEEDED" or doc["files_transferred"] != files:
            raise SystemExit(f"transfer ended {doc['status']} with "
                             f"{doc['files_transferred']}/{files} files")
        return took
    finally:
        emu.stop()


def _round_trip(account: str, repeat: int = 2000) -> float:
    from pbs_globus_staging_sim.emulator.fsaccess import AccountMap

    m = AccountMap("username")
    try:
        fs = m.files(f"{account}@example.org")
        fs.probe("/")
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fs.probe("/")
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        m.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000, help="files in the tree (default 2000)")
    parser.add_argument("--account", default="nobody",
                        help="local account for the mapped run (default nobody)")
    args = parser.parse_args(argv)
    print("command:", shlex.join([sys.executable, *sys.argv]))
    base = Path(tempfile.mkdtemp(prefix="bench-fsaccess-", dir="/tmp"))
    base.chmod(0o755)
    try:
        me = pwd.getpwuid(os.geteuid()).pw_name
        took = _transfer(base, "self", me, args.files)
        print(f"as the emulator's own account ({me}, in-process): {args.files} files in "
              f"{took:.2f} s = {args.files / took:.0f} files/s")
        if os.geteuid() != 0:
            print("mapped run skipped: needs root to act as another account")
            return 0
        took = _transfer(base, "username", args.account, args.files)
        print(f"as local account {args.account} (worker process): {args.files} files in "
              f"{took:.2f} s = {args.files / took:.0f} files/s")
        print(f"one worker operation (stat) round trip: median "
              f"{_round_trip(args.account) * 1e6:.0f} us")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
