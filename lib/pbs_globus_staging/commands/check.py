"""``check``: is the install sound?

One line per check -- ``ok``, ``WARN`` (worth a look, not broken) or
``FAIL`` with what to do -- and exit 1 when anything FAILs.  Everything is
read-only except one meta write that proves the journal is writable.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..services import (EXIT_BAD, EXIT_OK, emit, journal_path, load_site, make_backend,
                        pbs_home, with_json)

def register(sub) -> None:
    ck = with_json(sub.add_parser(
        "check", help="is the install sound? (resources, hooks, config, journal, Globus)",
        description="One line per check, ok/WARN/FAIL with what to do; exit 1 if any FAIL."))
    ck.set_defaults(func=cmd_check)


PBS_COMMANDS = ("qstat", "qsub", "qalter", "qhold", "qrls", "qdel", "qmgr")
OK, WARN, FAIL = "ok", "WARN", "FAIL"


class Checks:
    def __init__(self) -> None:
        self.items: List[Dict[str, str]] = []

    def add(self, status: str, check: str, detail: str = "", fix: str = "") -> None:
        self.items.append({"status": status, "check": check, "detail": detail, "fix": fix})

    @property
    def failed(self) -> bool:
        return any(i["status"] == FAIL for i in self.items)

    def text(self) -> str:
        lines = []
        for i in self.items:
            line = f"{i['status']:<4}  {i['check']}" + (f": {i['detail']}" if i["detail"] else "")
            if i["fix"] and i["status"] != OK:
                line += f" -> {i['fix']}"
            lines.append(line)
        n_fail = sum(i["status"] == FAIL for i in self.items)
        n_warn = sum(i["status"] == WARN for i in self.items)
        lines.append(f"{len(self.items)} checks: {n_fail} failed, {n_warn} warnings")
        return "\n".join(lines)


def _qmgr(pbs_exec: str, command: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(pbs_exec) / "bin" / "qmgr"), "-c", command],
                          capture_output=True, text=True, timeout=timeout)


def parse_blocks(text: str, kind: str) -> Dict[str, Dict[str, str]]:
    """``qmgr list hook|resource`` output -> {name: {attr: value}}."""
    out: Dict[str, Dict[str, str]] = {}
    cur: Optional[Dict[str, str]] = None
    for line in text.splitlines():
        if line.startswith(kind + " "):
            cur = out.setdefault(line.split(None, 1)[1].strip(), {})
        elif cur is not None and "=" in line:
            key, _, value = line.partition("=")
            cur[key.strip()] = value.strip()
    return out


def _one_line(proc: subprocess.CompletedProcess) -> str:
    text = (proc.stderr or proc.stdout or "").strip().splitlines()
    return text[0] if text else f"exit {proc.returncode}"


def _expected_attrs(spec: str) -> Dict[str, str]:
    return dict(part.split("=", 1) for part in spec.split(","))


def check_pbs(c: Checks, cfg: Any, pbs_exec: str, cf_expected: Dict[str, Any],
              plan: Any) -> None:
    from .. import installer
    missing = [n for n in PBS_COMMANDS
               if not os.access(Path(pbs_exec) / "bin" / n, os.X_OK)]
    if missing:
        c.add(FAIL, "PBS commands", f"not found in {pbs_exec}/bin: {', '.join(missing)}",
              "set pbs.exec in the site config or PBS_EXEC in /etc/pbs.conf")
        return
    c.add(OK, "PBS commands", f"{pbs_exec}/bin")
    try:
        proc = _qmgr(pbs_exec, "list server")
    except (OSError, subprocess.TimeoutExpired) as exc:
        c.add(FAIL, "PBS server", f"qmgr did not answer: {exc}", "is pbs_server running?")
        return
    if proc.returncode != 0:
        c.add(FAIL, "PBS server", _one_line(proc), "is pbs_server running?")
        return
    c.add(OK, "PBS server", "answers qmgr")

    res = parse_blocks(_qmgr(pbs_exec, "list resource").stdout, "Resource")
    for name, spec in installer.RESOURCES:
        want = _expected_attrs(spec)
        have = res.get(name)
        if have is None:
            c.add(FAIL, f"resource {name}", "missing", "run: globus-staging install")
            continue
        bad = [f"{k} is {have.get(k, '(unset)')}, expected {v}" for k, v in want.items()
               if have.get(k, "") != v]
        if "flag" not in want and have.get("flag"):
            bad.append(f"flag is {have['flag']}, expected none (users must be able to set it)")
        if bad:
            c.add(FAIL, f"resource {name}", "; ".join(bad),
                  f"qmgr -c \"set resource {name} {spec}\"")
        else:
            c.add(OK, f"resource {name}", spec)

    hooks = parse_blocks(_qmgr(pbs_exec, "list hook").stdout, "Hook")
    for name, _script, attrs in plan.hooks:
        have = hooks.get(name)
        if have is None:
            c.add(FAIL, f"hook {name}", "missing", "run: globus-staging upgrade")
            continue
        bad = []
        if have.get("enabled", "").lower() not in ("true", "t", "1", "y"):
            bad.append("disabled")
        events = set(filter(None, have.get("event", "").split(",")))
        if events != {attrs["event"]}:
            bad.append(f"events are {have.get('event') or '(none)'}, expected {attrs['event']}")
        if attrs["event"] == "periodic":
            alarm = float(have.get("alarm") or 0)
            budget = float(cf_expected.get("cycle_budget") or 0)
            if alarm and budget and alarm < budget + 5:
                bad.append(f"alarm {alarm:g} s leaves the agent's {budget:g} s budget no room")
        if bad:
            c.add(FAIL, f"hook {name}", "; ".join(bad), "run: globus-staging upgrade")
            continue
        detail = f"enabled, event {attrs['event']}"
        if attrs["event"] == "periodic":
            detail += f", freq {have.get('freq')} s, alarm {have.get('alarm')} s"
        cf = _qmgr(pbs_exec, f"export hook {name} application/x-config default")
        problem = _compare_hook_config(cf.stdout if cf.returncode == 0 else "", cf_expected)
        if problem:
            c.add(FAIL, f"hook {name}", f"{detail}; its config {problem}",
                  "run: globus-staging upgrade")
        else:
            c.add(OK, f"hook {name}", detail)


def _compare_hook_config(text: str, expected: Dict[str, Any]) -> str:
    try:
        have = json.loads(text) if text.strip() else None
    except ValueError:
        return "is not valid JSON"
    if not isinstance(have, dict):
        return "is missing"
    for key, what in (("site_config", "names another site config"),
                      ("journal", "names another journal"),
                      ("site", "is older than the site config (policy, aliases, roots)")):
        if have.get(key) != expected.get(key):
            return what
    python = have.get("python")
    if not python or not os.access(python, os.X_OK):
        return f"names an interpreter that cannot run ({python})"
    return ""


def check_journal(c: Checks, cfg: Any) -> None:
    from ..journal import Journal
    from ..errors import StagingError
    path = Path(journal_path(cfg))
    if not path.exists():
        c.add(FAIL, "journal", f"no journal at {path}", "run: globus-staging install")
        return
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != os.geteuid():
        c.add(FAIL, "journal permissions",
              f"{path} is mode {stat.S_IMODE(st.st_mode):04o} uid {st.st_uid}",
              f"chown root {path} && chmod 600 {path} (it holds every user's paths)")
    try:
        journal = Journal.open(path, timeout=5.0)
    except StagingError as exc:
        c.add(FAIL, "journal", str(exc), "see the message; the agent cannot run without it")
        return
    try:
        problems = journal.integrity_check()
        if problems:
            c.add(FAIL, "journal integrity", "; ".join(problems[:3]),
                  "stop the agent, keep a copy, then run sqlite3 .recover")
        try:
            journal.set_meta("check_last_run", repr(time.time()))
            c.add(OK, "journal", f"{path} writable, schema v{journal.schema_version}")
        except StagingError as exc:
            c.add(FAIL, "journal", f"not writable: {exc}", "check the disk and permissions")
        _check_agent(c, cfg, journal)
    finally:
        journal.close()


def _check_agent(c: Checks, cfg: Any, journal: Any) -> None:
    cycles = journal.last_cycles(1)
    freq = 30.0
    if not cycles:
        c.add(WARN, "agent", "no cycle recorded yet",
              "the periodic hook runs it; or run: globus-staging agent --once")
        return
    last = cycles[0]
    age = time.time() - last.started
    stale = max(10 * freq, 300.0)
    if age > stale:
        c.add(FAIL, "agent", f"last cycle {age:.0f} s ago",
              "check the periodic hook (qmgr -c \"list hook globus_staging_periodic\") and "
              "PBS_HOME/server_logs")
    elif last.finished and not last.ok:
        c.add(WARN, "agent", f"last cycle {age:.0f} s ago had errors: {last.error}",
              "globus-staging status shows the recent cycles")
    else:
        c.add(OK, "agent", f"last cycle {age:.0f} s ago")


def check_credentials(c: Checks, cfg: Any) -> None:
    """The credentials section: what the agent needs before it can talk to Globus."""
    cred = cfg.credentials
    if cred.mode == "client":
        from ..credentials import read_secret_file
        from ..errors import ConfigError
        try:
            read_secret_file(Path(cred.client_secret_file or ""))
            c.add(OK, "credentials", f"client mode, secret file {cred.client_secret_file}")
        except ConfigError as exc:
            c.add(FAIL, "credentials", str(exc), "see the message")
    else:
        from ..credentials import expand_token_dir
        from ..errors import ConfigError
        try:
            expand_token_dir(cred.token_dir, "user", "/home/user")
            if not cred.client_id:
                raise ConfigError("credentials.client_id is not set")
            c.add(OK, "credentials", f"user mode, tokens in {cred.token_dir}")
        except ConfigError as exc:
            c.add(FAIL, "credentials", str(exc), "fix the site config")


def _reachable(url: str, timeout: float) -> str:
    """'' when something answers HTTP at ``url`` (any status), else why not."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"),
                                    timeout=timeout) as resp:
            resp.read(1024)
        return ""
    except urllib.error.HTTPError as exc:
        return "" if exc.code < 500 else f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason)


def check_globus(c: Checks, cfg: Any) -> None:
    g = cfg.globus
    timeout = min(float(g.http_timeout or 10), 10.0)
    for name, url in (("Globus Transfer", g.transfer_url or "https://transfer.api.globus.org/"),
                      ("Globus Auth", g.auth_url or "https://auth.globus.org/")):
        why = _reachable(url, timeout)
        if why:
            c.add(FAIL, name, f"{url} unreachable: {why}",
                  "check the network/proxy from this host")
        else:
            c.add(OK, name, f"{url} answers")
    if cfg.credentials.mode == "client":
        # One authenticated call: a client-credentials token from Globus Auth.
        from ..errors import StagingError
        try:
            backend = make_backend(cfg)
            backend.credentials.authorizer("site").get_authorization_header()
            c.add(OK, "Globus login", "the site client gets a Transfer token")
        except StagingError as exc:
            fix = ("a collection under collections.data_access has no data_access scope "
                   "(only GCSv5 mapped, non-high-assurance ones have): remove it"
                   if "invalid_scope" in str(exc) else "check client_id and the secret file")
            c.add(FAIL, "Globus login", str(exc), fix)
            return
        except Exception as exc:  # the SDK's own errors: one line, no secrets
            c.add(FAIL, "Globus login", type(exc).__name__, "check client_id and the secret")
            return
        check_data_access(c, cfg, backend)


def check_data_access(c: Checks, cfg: Any, backend: Any) -> None:
    """Each named collection's Transfer endpoint document against
    ``collections.data_access``: GCSv5 mapped and not high assurance means a
    data_access scope (globus-sdk's "detecting data_access" rule)."""
    from ..errors import StagingError
    named = dict.fromkeys([str(v).lower() for v in cfg.collections.aliases.values()]
                          + ([cfg.site.collection.lower()] if cfg.site.collection else []))
    listed = set(cfg.collections.data_access)
    for cid in named:
        try:
            doc = backend._call("site", "get_endpoint", lambda tc, cid=cid: tc.get_endpoint(cid))
        except StagingError as exc:
            c.add(WARN, f"collection {cid}", f"cannot read its endpoint document ({exc})",
                  "check the collection id and the client's access")
            continue
        kind, ha = doc.get("entity_type"), doc.get("high_assurance")
        needs = kind == "GCSv5_mapped_collection" and ha is False
        if needs and cid not in listed:
            c.add(WARN, f"collection {cid}", f"{kind}, not high assurance, not listed under "
                  "collections.data_access", "add it (else its first transfer of each agent "
                  "cache is refused once, and user logins lack its consent)")
        elif not needs and cid in listed:
            c.add(FAIL, f"collection {cid}", f"{kind}, high_assurance={ha}: it has no "
                  "data_access scope", "remove it from collections.data_access")
        else:
            c.add(OK, f"collection {cid}", f"{kind}, high_assurance={ha}"
                  + (", data_access listed" if needs else ""))


def check_files(c: Checks, cfg: Any) -> None:
    from . import userviews
    src = Path(cfg.source)
    try:
        mode = stat.S_IMODE(src.stat().st_mode)
        if not mode & 0o004:
            c.add(WARN, "site config", f"{src} is not world-readable",
                  f"chmod 644 {src} (users' show/status/login read it; keep secrets in "
                  "client_secret_file)")
        else:
            c.add(OK, "site config", f"{src} valid")
    except OSError as exc:
        c.add(FAIL, "site config", str(exc))
    views = userviews.views_dir(journal_path(cfg))
    if views.exists():
        mode = stat.S_IMODE(views.stat().st_mode)
        pmode = stat.S_IMODE(views.parent.stat().st_mode)
        if mode & 0o011 != 0o011 or pmode & 0o011 != 0o011 or mode & 0o022:
            c.add(FAIL, "user views", f"{views} mode {mode:04o} (parent {pmode:04o})",
                  f"chmod 711 {views.parent} {views} (users read only their own directory)")
        else:
            c.add(OK, "user views", f"{views}")
    else:
        c.add(WARN, "user views", f"{views} not created yet",
              "the agent creates it on its first cycle with a staged job")


def cmd_check(args: Any) -> int:
    from .. import installer, siteconfig
    from ..errors import ConfigError
    from ..pbsctl import read_pbs_conf
    c = Checks()
    try:
        cfg = load_site(args.config)
    except ConfigError as exc:
        c.add(FAIL, "site config", str(exc), "fix the file; the agent cannot start")
        emit({"ok": False, "checks": c.items}, as_json=args.json, text=c.text())
        return EXIT_BAD
    pbs_exec = cfg.pbs.exec or read_pbs_conf().get("PBS_EXEC") or "/opt/pbs"
    cf_path = Path(pbs_home(cfg)) / "globus_staging" / "globus_staging.json"
    try:
        plan = installer.make_plan(hook_config=cf_path)
        with open(cf_path, encoding="utf-8") as fh:
            installed = json.load(fh)
    except (OSError, ValueError) as exc:
        installed = {}
        c.add(FAIL, "hook config", f"{cf_path}: {getattr(exc, 'strerror', None) or exc}",
              "run: globus-staging install")
        plan = installer.make_plan(hook_config=cf_path)
    expected = {"site_config": str(Path(os.path.abspath(cfg.source))),
                "journal": journal_path(cfg),
                "site": siteconfig.to_hook_config(cfg),
                "cycle_budget": installed.get("cycle_budget")}
    # JSON round trip: tuples in the subset compare equal to the lists read back.
    expected["site"] = json.loads(json.dumps(expected["site"]))
    check_files(c, cfg)
    check_pbs(c, cfg, pbs_exec, expected, plan)
    check_journal(c, cfg)
    check_credentials(c, cfg)
    check_globus(c, cfg)
    emit({"ok": not c.failed, "checks": c.items}, as_json=args.json, text=c.text())
    return EXIT_BAD if c.failed else EXIT_OK
