"""The loop (agent.py) drives the phases: a full pass, then poll passes, on a
hand-driven clock (the agent's injected sleep advances it)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide
from pbs_globus_staging.agent import Agent


def agent_for(s, **kw):
    return Agent(config=s.config, journal=s.journal, pbs=s.pbs, backend=s.backend,
                 clock=s.clock, sleep=s.clock.advance, alerts=s.alerts.extend, **kw)


def test_one_run_submits_polls_and_releases_when_the_task_ends(site):
    jid = site.qsub(stagein=site.stagein("alice", "a.dat"))
    agent = agent_for(site)

    def sleep(seconds):
        site.clock.advance(seconds)
        for task_id in list(site.backend.tasks):
            site.backend.succeed(task_id)        # Globus finishes while the agent waits
    agent.sleep = sleep
    stats = agent.run(budget=10.0)
    assert stats.ok and stats.submitted == 1 and stats.released == 1
    assert stats.passes == 1 and stats.polls >= 2
    assert site.request(jid).state == decide.SUCCEEDED
    assert site.job(jid)["Hold_Types"] == "n"
    (cycle,) = site.journal.last_cycles(1)
    assert cycle.ok and cycle.finished


def test_a_run_with_nothing_in_flight_ends_after_its_full_pass(site):
    t0 = site.clock()
    stats = agent_for(site).run(budget=10.0)
    assert stats.passes == 1 and stats.polls == 1
    assert site.clock() == t0                     # it never slept


def test_three_failed_runs_raise_agent_unhealthy(site, monkeypatch):
    from pbs_globus_staging.errors import RetryableError

    def down():
        raise RetryableError("pbs_server down")
    monkeypatch.setattr(site.pbs, "jobs", down)
    for _ in range(3):
        agent_for(site).run(budget=2.0)
        site.clock.advance(10)
    assert [a["kind"] for a in site.alerts] == ["agent_unhealthy"]
