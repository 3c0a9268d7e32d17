"""The periodic-hook child: PBS forks pbs_server for each run; the double starts a process.

The child reads a snapshot of the server state (what `pbs.server()` shows is fixed at start),
releases the lock so that PBS commands it runs as subprocesses are served, runs the hook, and
exits 1 on accept, 0 on reject or error (HF:7142).
"""
from __future__ import annotations

import copy
import sys

from . import core, hookrun
from . import pbs as pbsmod


PERIODIC_BLOCKED = frozenset((1, 2, 15, 17))   # SIGHUP SIGINT SIGTERM SIGCHLD (Linux)


def child_main(argv: list) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: cmd _periodic HOOK_NAME\n")
        return 0
    name = argv[0]
    # pbs_server's periodic-hook child runs with SIGHUP, SIGINT, SIGTERM and
    # SIGCHLD blocked, and what the hook starts inherits that mask (seen on
    # OpenPBS 23.06.06: SigBlk 0x14003 in a process the hook started).
    import signal
    signal.pthread_sigmask(signal.SIG_BLOCK, PERIODIC_BLOCKED)
    conf = core.Conf.from_env()
    with core.locked_state(conf, write=False) as state:
        snapshot = copy.deepcopy(state)
    hook = snapshot["hooks"].get(name)
    if hook is None or not hook.get("has_script"):
        return 0
    jobs = hookrun.all_jobs(snapshot)
    view = pbsmod._server(snapshot["server_name"], lambda: jobs,
                          hookrun.resource_defs(snapshot))
    out = hookrun.run_hook(conf, snapshot, name, event="periodic",
                           params={"vnode_list": {}, "resv_list": {}},
                           requestor=None, requestor_host=None, server_view=view,
                           freq=int(hook.get("freq", 120)))
    return 1 if out.accepted else 0
