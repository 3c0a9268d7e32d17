"""Shared fixtures: the Globus emulator and the PBS test double are pytest plugins
of the test doubles' package, pbs_globus_staging_sim (the demo uses them too).

The tests are in tiers: unit/ (pure, in-memory, seconds), integration/ (the
emulator over HTTP, the PBS double, globus-cli, the package build), e2e/ (whole
sites), real/ (opt-in, a real OpenPBS).  Their shared helpers are modules in
helpers/, importable by name from every tier.

``make test`` runs them with pytest-xdist (``-n 3``): every test has its own
tmp_path, ports are chosen by the kernel (port 0), the cached globus-cli venv is
built under a file lock.  The scheduler below keeps together, in one worker,
the tests that must share one process (ONE_WORKER), and hands out the slowest
tier first so that no long test starts last."""
import compileall
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from globus_cli_helpers import globus_cli  # noqa: F401  (a fixture)

pytest_plugins = [
    "pbs_globus_staging_sim.emulator.fixture",
    "pbs_globus_staging_sim.pbsdouble.fixture",
]


TESTS = Path(__file__).resolve().parent

# Node-id prefixes whose tests run in one worker, one after the other:
ONE_WORKER = (
    "tests/real/",              # one real PBS server on the host: never two at once
    "tests/integration/test_package.py",        # module fixture: the build and venv
    "tests/integration/test_hooks_old_python.py",   # module fixture: the hook site
)
# Under xdist the tiers are handed out slowest first.
TIER_ORDER = ("e2e", "integration", "unit", "real")


@pytest.hookimpl(tryfirst=True)       # before the tmp_path factory reads basetemp
def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return
    if config.getoption("numprocesses", None) and not config.option.basetemp:
        # xdist puts each worker's tmp_path one level deeper (.../popen-gw0/);
        # some e2e tests assert words a PBS comment carries after a tmp path, and
        # PBS comments are cut at 200 characters.  A short base keeps the paths
        # no longer than a serial run's (/tmp/pytest-of-USER/pytest-N/...).
        config.option.basetemp = tempfile.mkdtemp(prefix="pgs-")
        config._pgs_short_basetemp = config.option.basetemp
    _byte_compile()


def pytest_unconfigure(config):
    base = getattr(config, "_pgs_short_basetemp", None)
    if base and getattr(config, "_pgs_exitstatus", 1) == 0:    # kept when a test failed
        shutil.rmtree(base, ignore_errors=True)


def pytest_sessionfinish(session, exitstatus):
    session.config._pgs_exitstatus = exitstatus


def _byte_compile():
    """Byte-compile the packages once per run: the agent, the hooks, the CLI and
    the PBS double's commands run as hundreds of short Python subprocesses, and
    with PYTHONDONTWRITEBYTECODE set (as on this machine) each of them would
    otherwise recompile every module changed since the last compile (~0.5 s)."""
    for name in ("pbs_globus_staging", "pbs_globus_staging_sim"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            for location in spec.submodule_search_locations:
                if os.access(location, os.W_OK):
                    compileall.compile_dir(location, quiet=1)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    # xdist's own --dist loadgroup marks tests by rewriting item._nodeid, which
    # pytest >= 9.2 no longer reads; group by node id in the controller instead.
    if config.getvalue("dist") != "load":     # another --dist asked for: xdist's own
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return next((p for p in ONE_WORKER if nodeid.startswith(p)), nodeid)

    return OneWorkerGroups(config, log)


def pytest_collection_modifyitems(config, items):
    if not hasattr(config, "workerinput"):     # not an xdist worker: collection order
        return

    def tier(item):
        rel = Path(item.path).resolve().relative_to(TESTS).parts
        return TIER_ORDER.index(rel[0]) if rel and rel[0] in TIER_ORDER else len(TIER_ORDER)
    items.sort(key=tier)                        # stable: file order kept inside a tier


@pytest.fixture
def staged(pbs_server):
    """A PBS double with the two resources the staging hooks read, as on the
    real server the samples were captured on."""
    pbs_server.create_resource("stagein_globus")
    pbs_server.create_resource("globus_stage_state", flag="r")
    return pbs_server
