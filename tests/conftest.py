"""Shared fixtures: the Globus emulator and the PBS test double are pytest plugins
shipped in the package (the demo uses them too)."""
import pytest

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
