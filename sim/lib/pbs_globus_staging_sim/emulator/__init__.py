"""Globus Transfer + Auth emulator: a real HTTP server on loopback that the real
globus-sdk talks to.  Collections are local directories; tasks really copy files.

    from pbs_globus_staging_sim.emulator import GlobusEmulator
    with GlobusEmulator(tmp_path) as emu:
        os.environ.update(emu.env())
"""
from typing import Any

__all__ = ["GlobusEmulator", "Call", "Task", "data_access_scope", "main"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: ``globus-staging`` builds its ``emulator`` options
    # from .cli without paying for the server on every other command.
    if name == "GlobusEmulator":
        from .core import GlobusEmulator
        return GlobusEmulator
    if name in ("Call", "Task", "data_access_scope"):
        from . import model
        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv=None) -> int:  # noqa: ANN001 - thin re-export, typed in cli.main
    from .cli import main as _main

    return _main(argv)
