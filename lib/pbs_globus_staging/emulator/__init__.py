"""Globus Transfer + Auth emulator: a real HTTP server on loopback that the real
globus-sdk talks to.  Collections are local directories; tasks really copy files.

    from pbs_globus_staging.emulator import GlobusEmulator
    with GlobusEmulator(tmp_path) as emu:
        os.environ.update(emu.env())
"""
from .core import GlobusEmulator
from .model import Call, Task, data_access_scope

__all__ = ["GlobusEmulator", "Call", "Task", "data_access_scope", "main"]


def main(argv=None) -> int:  # noqa: ANN001 - thin re-export, typed in cli.main
    from .cli import main as _main

    return _main(argv)
