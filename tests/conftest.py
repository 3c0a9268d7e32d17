"""Shared fixtures: the Globus emulator and the PBS test double are pytest plugins
shipped in the package (the demo uses them too)."""
pytest_plugins = [
    "pbs_globus_staging.emulator.fixture",
    "pbs_globus_staging.testing.pbsdouble.fixture",
]
