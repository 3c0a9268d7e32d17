"""``emulator``: run the bundled Globus emulator on loopback."""
from __future__ import annotations


def register(sub) -> None:
    from ..emulator import cli as emu_cli
    e = sub.add_parser("emulator", help="run the bundled Globus emulator on loopback",
                       description=emu_cli.DESCRIPTION)
    emu_cli.add_arguments(e)
    e.set_defaults(func=cmd_emulator)


def cmd_emulator(args) -> int:
    from ..emulator import cli as emu_cli
    return int(emu_cli.run(args) or 0)
