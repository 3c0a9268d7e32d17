"""PBS test double: a fake ``pbs`` hook module, a file-backed server and the PBS commands,
faithful to OpenPBS 23.06 as documented in ``/work/shared/reference/pbs-hook-api.md``.

Start with ``PbsServer`` (``server.py``) or the pytest fixture ``pbs_server`` (``fixture.py``).
Standard library only.
"""
from __future__ import annotations


def __getattr__(name):
    # lazy: the commands import this package and must start fast
    if name == "PbsServer":
        from .server import PbsServer
        return PbsServer
    if name == "PbsError":
        from .ops import PbsError
        return PbsError
    raise AttributeError(name)


__all__ = ["PbsServer", "PbsError"]
