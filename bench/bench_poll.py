#!/usr/bin/env python3
"""Bench: one batched poll of N Globus tasks through GlobusBackend.

Starts the Globus emulator on loopback, creates N finished tasks for one
identity, then times ``GlobusBackend.poll`` (real globus-sdk, real HTTP)
``--repeat`` times and prints the median wall time and the API calls per poll
(backend's own count and the emulator's count of task_list requests).

    .venv/bin/python bench/bench_poll.py [--tasks 1000] [--repeat 7]
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks per poll (default 1000)")
    parser.add_argument("--repeat", type=int, default=7, help="timed polls (default 7)")
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.repeat < 1:
        parser.error("--tasks and --repeat must be >= 1")

    from pbs_globus_staging.credentials import ClientCredentialsProvider
    from pbs_globus_staging.globus_backend import GlobusBackend
    from pbs_globus_staging_sim.emulator import GlobusEmulator

    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "src").mkdir()
        (tmp / "dst").mkdir()
        state = tmp / "state"
        state.mkdir(mode=0o700)
        with GlobusEmulator(tmp / "globus") as emu:
            src = emu.add_collection("src", directory=tmp / "src")
            dst = emu.add_collection("dst", directory=tmp / "dst")
            ident = emu.add_identity("bench@example.org")
            client_id, secret = emu.add_client(ident)
            secret_file = state / "secret"
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, secret.encode())
            os.close(fd)
            provider = ClientCredentialsProvider(
                client_id=client_id, client_secret_file=secret_file,
                token_storage_path=state / "tokens.db", auth_url=emu.url + "/",
            )
            backend = GlobusBackend(credentials=provider, transfer_url=emu.url + "/")
            ids = emu.add_finished_tasks(ident, args.tasks, source_collection=src,
                                         destination_collection=dst)
            backend.poll("bench", ids[:1])  # warm-up: token, connection
            times, calls, http, server = [], [], [], []
            for _ in range(args.repeat):
                c0, h0 = backend.calls["bench"], backend.http_requests["bench"]
                emu.reset_calls()
                t0 = time.perf_counter()
                reports = backend.poll("bench", ids)
                times.append(time.perf_counter() - t0)
                if len(reports) != len(ids):
                    print(f"error: poll returned {len(reports)} of {len(ids)}", file=sys.stderr)
                    return 1
                calls.append(backend.calls["bench"] - c0)
                http.append(backend.http_requests["bench"] - h0)
                server.append(emu.count_calls("/v0.10/task_list"))
            backend.close()

    cmd = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    print(f"command: {cmd}")
    print(f"tasks per poll:            {args.tasks}")
    print(f"polls timed:               {args.repeat}")
    print(f"median poll time:          {statistics.median(times) * 1000:.1f} ms "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")
    print(f"API calls per poll:        {statistics.median(calls):g} (backend count)")
    print(f"HTTP requests per poll:    {statistics.median(http):g} (incl. SDK retries)")
    print(f"task_list seen by server:  {statistics.median(server):g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
