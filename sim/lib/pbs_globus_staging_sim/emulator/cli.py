"""``python -m pbs_globus_staging_sim.emulator`` / ``globus-staging emulator``.

Runs the emulator in the foreground.  ``--setup FILE.yaml`` creates collections,
identities, grants and clients, then prints the environment lines and the
(emulator-only, throwaway) credentials it created::

    collections:
      - {name: site, id: OPTIONAL-UUID, directory: OPTIONAL-PATH,
         entity_type: GCSv5_mapped_collection, high_assurance: false,  # the defaults
         policies: [OPTIONAL-AUTH-POLICY-ID]}
    identities:
      - username: alice
        id: OPTIONAL-UUID
        local_account: OPTIONAL          # files as this account (default: --accounts)
        grants: [{collection: site, path: /, write: true}]
        clients: [{id: OPTIONAL, secret: OPTIONAL}]     # client_credentials acting as alice
        login: true                                     # refresh token for the native client
    native_clients: [{id: OPTIONAL}]
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from .core import GlobusEmulator

DESCRIPTION = "Run the Globus Transfer + Auth emulator."


class SetupError(Exception):
    pass


def _list(doc: Dict[str, Any], key: str) -> List[Dict[str, Any]]:
    value = doc.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise SetupError(f"'{key}' must be a list of mappings")
    return value


def apply_setup(emu: "GlobusEmulator", doc: Any) -> List[str]:
    """Create what the setup document names; returns the lines to print."""
    if not isinstance(doc, dict):
        raise SetupError("setup file must hold a mapping with collections/identities")
    lines: List[str] = []
    names: Dict[str, str] = {}
    for c in _list(doc, "collections"):
        if not isinstance(c.get("name"), str):
            raise SetupError("each collection needs a 'name'")
        directory = Path(c["directory"]) if c.get("directory") else None
        cid = emu.add_collection(c["name"], collection_id=c.get("id"), directory=directory,
                                 entity_type=str(c.get("entity_type",
                                                       "GCSv5_mapped_collection")),
                                 high_assurance=bool(c.get("high_assurance", False)))
        for policy in c.get("policies") or []:
            emu.require_policy(cid, str(policy))
        names[c["name"]] = cid
        lines.append(f"# collection {c['name']} = {cid}")
    native = []
    for n in _list(doc, "native_clients"):
        native.append(emu.add_native_client(client_id=n.get("id")))
        lines.append(f"# native client = {native[-1]}")
    for ident in _list(doc, "identities"):
        if not isinstance(ident.get("username"), str):
            raise SetupError("each identity needs a 'username'")
        account = ident.get("local_account")
        if account is not None and not isinstance(account, str):
            raise SetupError(f"local_account of {ident['username']} must be a user name")
        iid = emu.add_identity(ident["username"], identity_id=ident.get("id"),
                               local_account=account)
        lines.append(f"# identity {ident['username']} = {iid}")
        for g in _list(ident, "grants"):
            coll = names.get(g.get("collection"), g.get("collection"))
            if not isinstance(coll, str) or not isinstance(g.get("path", "/"), str):
                raise SetupError(f"bad grant for {ident['username']}: need collection and path")
            emu.grant(iid, coll, g.get("path", "/"), write=bool(g.get("write", True)))
        for c in _list(ident, "clients"):
            cid, secret = emu.add_client(iid, client_id=c.get("id"),
                                         client_secret=c.get("secret"))
            lines.append(f"# client for {ident['username']}: id={cid} secret={secret}")
        if ident.get("login"):
            if not native:
                native.append(emu.add_native_client())
                lines.append(f"# native client = {native[-1]}")
            tokens = emu.issue_tokens(iid, client_id=native[0])
            lines.append(f"# refresh token for {ident['username']}: "
                         f"{tokens['refresh_token']}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The emulator's options: one definition for ``python -m
    pbs_globus_staging_sim.emulator`` and ``globus-staging emulator``."""
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: pick a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback)")
    parser.add_argument("--root", type=Path, required=True,
                        help="directory under which collections live")
    parser.add_argument("--setup", type=Path, help="YAML file naming collections etc.")
    parser.add_argument("--rate", type=float, default=50e6, help="bytes per second per task")
    parser.add_argument("--active-limit", type=int, default=3,
                        help="concurrently moving tasks per identity (0: unlimited)")
    parser.add_argument("--accounts", choices=("username", "self"), default="username",
                        help="local account each identity's files are read and written as: "
                             "'username' (default, as Globus Connect Server maps identities: "
                             "the username without @domain; needs root to serve more than "
                             "one account) or 'self' (all as the emulator's own user)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(
        prog="globus-staging emulator", description=DESCRIPTION))


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run(build_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    from .core import GlobusEmulator

    if not 0 <= args.port <= 65535:
        print(f"error: --port {args.port}: expected 0..65535", file=sys.stderr)
        return 2
    emu = GlobusEmulator(args.root, bytes_per_second=args.rate,
                         active_tasks_per_identity=args.active_limit,
                         host=args.host, port=args.port, accounts=args.accounts)
    try:
        lines: List[str] = []
        if args.setup:
            import yaml

            try:
                doc = yaml.safe_load(args.setup.read_text())
            except OSError as exc:
                print(f"error: --setup {args.setup}: {exc.strerror}", file=sys.stderr)
                return 2
            except yaml.YAMLError as exc:
                print(f"error: --setup {args.setup}: not valid YAML "
                      f"({str(exc).splitlines()[0]})", file=sys.stderr)
                return 2
            lines = apply_setup(emu, doc)
        emu.start()
    except (SetupError, ValueError, KeyError) as exc:
        print(f"error: --setup {args.setup}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 2
    for k, v in emu.env().items():
        print(f"export {k}={v}")
    for line in lines:
        print(line)
    sys.stdout.flush()
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return 0
