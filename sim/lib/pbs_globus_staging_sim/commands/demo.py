"""``demo``: the hooks, the PBS double and the Globus emulator, end to end."""
from __future__ import annotations


def register(sub) -> None:
    d = sub.add_parser("demo", help="run the demo: hooks + PBS double + Globus emulator")
    d.add_argument("--workdir", help="where to put the demo's files (default: a temp dir)")
    d.add_argument("--keep", action="store_true", help="keep the work directory")
    d.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .. import demo
    return demo.main(workdir=args.workdir, keep=args.keep)
