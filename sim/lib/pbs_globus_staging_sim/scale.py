"""A staging site for scale runs: the real agent, journal, Globus backend and
emulator (real HTTP on loopback, per-user limits on), with the in-memory
:class:`~.fakepbs.FakePbs` in place of PBS so 10,000 jobs cost seconds to set
up.  Used by ``bench/bench_scale.py`` and ``tests/e2e/test_scale*.py``.

Each :meth:`ScaleSite.cycle` is what one periodic-hook run does in
production: a fresh ``Agent`` with a fresh ``GlobusBackend`` and journal
connection (the agent runs as a new process every time), so per-process
start-up costs (SDK clients, caches) are counted, not amortised away.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Dict, List, Optional

import globus_sdk

from pbs_globus_staging import siteconfig
from pbs_globus_staging.agent import Agent, CycleStats
from pbs_globus_staging.globus_backend import GlobusBackend
from pbs_globus_staging.journal import Journal
from pbs_globus_staging.pbsctl import PbsCommands

from .emulator import GlobusEmulator
from .fakepbs import FakePbs
from .site import NATIVE_CLIENT, REMOTE_COLLECTION, SITE_COLLECTION


class StaticTokens:
    """Credential provider: one emulator-issued access token per identity
    (what a user's ``globus-staging login`` gives, minus the token files)."""

    def __init__(self) -> None:
        self.tokens: Dict[str, str] = {}

    def authorizer(self, identity: str) -> globus_sdk.AccessTokenAuthorizer:
        from pbs_globus_staging.errors import WaitingForUser
        token = self.tokens.get(identity)
        if token is None:
            raise WaitingForUser(f"no Globus login for {identity}", action="globus-staging login")
        return globus_sdk.AccessTokenAuthorizer(token)


@dataclasses.dataclass
class CycleResult:
    stats: CycleStats
    agent_cpu: float          # agent thread CPU, the fake PBS's own share removed
    wall: float
    globus_calls: Dict[str, int]
    pbs_calls: int


class ScaleSite:
    def __init__(self, root: Path, *, bytes_per_second: float = 10e6,
                 active_tasks_per_identity: int = 3,
                 requests_per_second: Optional[float] = 20.0,
                 agent: Optional[dict] = None) -> None:
        self.root = Path(root)
        self.site_dir = self.root / "site-fs"
        self.remote_dir = self.root / "remote-fs"
        self.emulator = GlobusEmulator(self.root / "globus", bytes_per_second=bytes_per_second,
                                       active_tasks_per_identity=active_tasks_per_identity,
                                       requests_per_second=requests_per_second)
        self.pbs = FakePbs()
        self.provider = StaticTokens()
        self.identities: Dict[str, str] = {}     # user -> emulator identity id
        self.agent_settings = {"poll_interval": 0.2, "cycle_budget": 15.0,
                               "fatal_fault_window": 2.0, "orphan_grace": 60.0}
        self.agent_settings.update(agent or {})
        self.journal_path = self.root / "journal.sqlite"
        self.config = None
        self.last_backend: Optional[GlobusBackend] = None

    def start(self) -> "ScaleSite":
        self.site_dir.mkdir(parents=True, exist_ok=True)
        self.remote_dir.mkdir(parents=True, exist_ok=True)
        emu = self.emulator.start()
        emu.add_collection("site", collection_id=SITE_COLLECTION, directory=self.site_dir)
        emu.add_collection("theta-dtn", collection_id=REMOTE_COLLECTION,
                           directory=self.remote_dir)
        emu.add_native_client(client_id=NATIVE_CLIENT)
        self._configure()
        return self

    def _configure(self) -> None:
        self.config = siteconfig.from_dict({
            "site": {"collection": SITE_COLLECTION, "name": "Scale HPC",
                     "roots": [f"{self.site_dir}/{{user}}/"],
                     "collection_root": f"{self.site_dir}/"},
            "collections": {"theta-dtn": REMOTE_COLLECTION},
            "credentials": {"mode": "user", "client_id": NATIVE_CLIENT,
                            "token_dir": str(self.root / "tokens" / "{user}")},
            "globus": {"transfer_url": self.emulator.url + "/", "max_retries": 1,
                       "http_timeout": 10},
            "agent": self.agent_settings,
            "journal": {"path": str(self.journal_path)},
        }, source="scale-site")

    def set_agent(self, **settings: object) -> None:
        self.agent_settings.update(settings)
        self._configure()

    def stop(self) -> None:
        self.emulator.stop()

    def __enter__(self) -> "ScaleSite":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ users/data
    def add_user(self, user: str) -> str:
        emu = self.emulator
        ident = emu.add_identity(user)
        emu.grant(ident, SITE_COLLECTION, f"/{user}/")
        emu.grant(ident, REMOTE_COLLECTION, f"/{user}/")
        (self.site_dir / user).mkdir(parents=True, exist_ok=True)
        (self.remote_dir / user).mkdir(parents=True, exist_ok=True)
        self.provider.tokens[user] = emu.issue_tokens(ident, client_id=NATIVE_CLIENT)[
            "access_token"]
        self.identities[user] = ident
        return ident

    def remote_file(self, user: str, rel: str, text: str = "data\n") -> Path:
        path = self.remote_dir / user / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def stagein(self, user: str, local_rel: str, remote_rel: str) -> str:
        """A ``stagein_globus`` value: remote ``/USER/REL`` to local ``site-fs/USER/REL``."""
        return f"{self.site_dir}/{user}/{local_rel}@theta-dtn:/{user}/{remote_rel}"

    def local(self, user: str, rel: str) -> Path:
        return self.site_dir / user / rel

    def submit(self, user: str, stagein: str, **kw: object) -> str:
        return self.pbs.add_job(user, stagein=stagein, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------ running
    def new_agent(self, journal: Journal) -> Agent:
        self.last_backend = GlobusBackend(credentials=self.provider,
                                          transfer_url=self.emulator.url + "/", max_retries=1,
                                          http_timeout=10)
        pbs = PbsCommands(pbs_exec="/fake", conf={}, runner=self.pbs)
        return Agent(config=self.config, journal=journal, pbs=pbs, backend=self.last_backend)

    def cycle(self, budget: Optional[float] = None) -> CycleResult:
        """One agent run as the periodic hook starts it (fresh process state).

        ``budget=None`` is exactly one full pass with no time limit (what a
        run does before its first poll); a budget runs ``Agent.run`` itself:
        the full pass, then poll passes every ``poll_interval`` seconds.
        """
        journal = Journal.open(self.journal_path)
        try:
            agent = self.new_agent(journal)
            fake0, cpu0, wall0 = self.pbs.cpu_seconds, time.thread_time(), time.perf_counter()
            if budget is None:
                agent.stats = CycleStats(started=time.time())
                agent.full_pass()
                stats = agent.stats
                stats.finished = time.time()
                stats.pbs_calls = agent.pbs.calls
                stats.globus_calls = sum(self.last_backend.calls.values())
            else:
                stats = agent.run(budget=budget)
            cpu = time.thread_time() - cpu0 - (self.pbs.cpu_seconds - fake0)
            wall = time.perf_counter() - wall0
            calls = dict(self.last_backend.calls)
            self.last_backend.close()
        finally:
            journal.close()
        return CycleResult(stats=stats, agent_cpu=cpu, wall=wall, globus_calls=calls,
                           pbs_calls=stats.pbs_calls)

    def run_until(self, predicate, *, timeout: float = 30.0, budget: Optional[float] = None,
                  pause: float = 0.05) -> List[CycleResult]:
        """Agent runs until ``predicate()``; the results of every run."""
        results: List[CycleResult] = []
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached in {timeout:g} s "
                                     f"({len(results)} agent runs)")
            results.append(self.cycle(budget=budget))
            time.sleep(pause)
        return results

    def live_tasks(self) -> Dict[str, int]:
        """Unfinished Globus tasks per identity id, as the emulator sees them."""
        out: Dict[str, int] = {}
        for t in self.emulator.tasks.values():
            if not t.finished:
                out[t.owner_id] = out.get(t.owner_id, 0) + 1
        return out

    def journal(self) -> Journal:
        return Journal.open(self.journal_path)

    def journal_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.journal_path) + suffix)
            if p.exists():
                total += p.stat().st_size
        return total

    def released(self) -> List[str]:
        return list(self.pbs.released_at)
