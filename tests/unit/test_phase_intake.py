"""Phase intake: PBS read -> registered requests (phases/intake.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide
from pbs_globus_staging.errors import RetryableError
from pbs_globus_staging.phases import intake


def run(site):
    return intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())


def test_a_new_stagein_is_registered_pending(site):
    jid = site.qsub(stagein=site.stagein("alice", "a.dat"))
    jobs = run(site)
    assert jid in jobs and site.views.get(jid).stagein
    req = site.request(jid)
    assert req.state == decide.PENDING and req.identity == "alice"
    assert site.kinds(jid)[:2] == ["seen", "stagein_requested"]
    assert site.backend.log == []          # intake never talks to Globus for a new request


def test_a_stageout_waits_for_the_job_end(site):
    jid = site.qsub(stageout=site.stageout("alice", "r.dat"))
    run(site)
    assert site.request(jid, "out").state == decide.WAITING_EXIT


def test_a_request_the_policy_now_refuses_fails_with_the_reason_and_an_alert(site):
    jid = site.qsub(stagein="/etc/passwd@theta-dtn:/alice/a.dat")
    run(site)
    req = site.request(jid)
    assert req.state == decide.FAILED and req.message
    assert "stagein_failed" in site.kinds(jid)
    assert site.alert_kinds() == ["stagein_failed"]


def test_pbs_down_changes_nothing_and_says_so(site, monkeypatch):
    site.qsub(stagein=site.stagein("alice", "a.dat"))

    def down():
        raise RetryableError("pbs_server not answering")
    monkeypatch.setattr(site.pbs, "jobs", down)
    assert run(site) is None
    assert site.journal.requests() == []
    assert site.ctx.stats.errors == ["pbs_server not answering"]


def test_stage_ahead_ranks_the_jobs_that_could_run_next(make_site):
    s = make_site(stage_ahead=2)
    low = s.qsub(stagein=s.stagein("alice", "low"), priority=0, qtime=s.clock() - 10)
    high = s.qsub(stagein=s.stagein("alice", "high"), priority=5, qtime=s.clock())
    early = s.qsub(stagein=s.stagein("alice", "early"), priority=0, qtime=s.clock() - 20)
    run(s)
    assert s.views.queue_rank == {high: 0, early: 1, low: 2}


def test_the_same_data_already_moving_are_adopted_not_sent_twice(site):
    first = site.qsub(stagein=site.stagein("alice", "a.dat"))
    run(site)
    from pbs_globus_staging.phases import submit
    submit.run_cycle(site.ctx, site.submitting, site.views, site.settling, now=site.clock())
    assert site.request(first).state == decide.ACTIVE
    second = site.qsub(stagein=site.stagein("alice", "a.dat"))
    site.clock.advance(5)
    run(site)
    assert site.request(second).state == decide.ACTIVE
    assert [t.transfer_id for t in site.transfers(second)] == \
        [t.transfer_id for t in site.transfers(first)]
    assert "stagein_adopted" in site.kinds(second)
    assert sum(1 for name, _ in site.backend.log if name == "submit") == 1
