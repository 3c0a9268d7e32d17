"""Shared fixtures: the Globus emulator and the PBS test double are pytest plugins
shipped in the package (the demo uses them too).

The tests are in tiers: unit/ (pure, in-memory, seconds), integration/ (the
emulator over HTTP, the PBS double, globus-cli, the package build), e2e/ (whole
sites), real/ (opt-in, a real OpenPBS).  Their shared helpers are modules in
helpers/, importable by name from every tier."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "helpers"))

from globus_cli_helpers import globus_cli  # noqa: F401  (a fixture)

pytest_plugins = [
    "pbs_globus_staging.emulator.fixture",
    "pbs_globus_staging.testing.pbsdouble.fixture",
]


@pytest.fixture
def staged(pbs_server):
    """A PBS double with the two resources the staging hooks read, as on the
    real server the samples were captured on."""
    pbs_server.create_resource("stagein_globus")
    pbs_server.create_resource("globus_stage_state", flag="r")
    return pbs_server
