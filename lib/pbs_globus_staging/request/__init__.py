"""The staging request grammar: values of ``stagein_globus`` / ``stageout_globus``.

Stdlib only: the queuejob hook imports this inside ``pbs_server`` on every
qsub, so parsing must be fast, must never raise anything but
``errors.RequestError`` for a bad value, and must never touch the network.

The grammar (docs/internals.md, "The request grammar"; user guide in
docs/grammar.md) needs neither commas nor spaces, so a value works unquoted in
``qsub -l stagein_globus=VALUE`` and ``#PBS -l stagein_globus=VALUE``::

    VALUE   := ELEMENT ( '+' ELEMENT )*
    ELEMENT := ITEM | 'task=' UUID | 'manifest=' ABSPATH | OPTION
    ITEM    := LOCAL '@' COLLECTION ':' REMOTE

The package: ``model`` (types, limits, message helpers), ``grammar``
(``parse``), ``render`` (``render``, ``request_key``), ``manifests``
(``read_manifest``, ``expand_manifests``).  Everything callers use is
re-exported here: ``from pbs_globus_staging.request import X`` keeps working.
"""

from .grammar import _UUID_RE, is_uuid, parse
from .manifests import expand_manifests, read_manifest
from .model import (_PATH_QUOTE_MAX, MANIFEST_MAX_BYTES, MANIFEST_MAX_ITEMS, MAX_DEADLINE_SECONDS,
                    MAX_ITEMS, MAX_VALUE_LENGTH, Deadline, Direction, Item, Options,
                    StagingRequest, _q, resource_name)
from .render import render, request_key

__all__ = [
    "Direction", "Deadline", "Item", "Options", "StagingRequest",
    "parse", "render", "expand_manifests", "read_manifest", "request_key",
    "resource_name", "is_uuid", "MAX_VALUE_LENGTH", "MAX_ITEMS",
    "MANIFEST_MAX_BYTES", "MANIFEST_MAX_ITEMS", "MAX_DEADLINE_SECONDS",
    # for policy, pathcheck and the login command: one quoting, one UUID pattern
    "_PATH_QUOTE_MAX", "_UUID_RE", "_q",
]
