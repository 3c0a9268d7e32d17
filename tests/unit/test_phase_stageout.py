"""Phase stageout: a finished job's stage-out started or skipped (phases/stageout.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide
from pbs_globus_staging.phases import intake, stageout


def ended(s, exit_status, *, options="", **kw):
    jid = s.qsub(stageout=s.stageout("alice", "r.dat", options=options), **kw)
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    s.finish(jid, exit_status)
    jobs = intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    started = stageout.run_cycle(s.ctx, s.views, jobs, now=s.clock())
    return jid, started


def test_exit_status_zero_starts_the_stageout(site):
    jid, started = ended(site, 0)
    assert started == 1 and site.request(jid, "out").state == decide.PENDING
    assert "job_ended" in site.kinds(jid)


def test_a_failed_job_skips_it_by_default(site):
    jid, started = ended(site, 3)
    req = site.request(jid, "out")
    assert started == 0 and req.state == decide.SKIPPED
    assert req.message == "exit status 3 does not match when=ok"


def test_when_always_sends_a_failed_jobs_results(site):
    jid, started = ended(site, 3, options="+when=always")
    assert started == 1


def test_a_job_pbs_no_longer_knows_is_skipped_saying_why(site):
    jid = site.qsub(stageout=site.stageout("alice", "r.dat"))
    intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())
    del site.fake.jobs[jid]                 # gone without a trace (no history, no obit)
    jobs = intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())
    stageout.run_cycle(site.ctx, site.views, jobs, now=site.clock())
    req = site.request(jid, "out")
    assert req.state == decide.SKIPPED and req.message == decide.SKIP_UNKNOWN_JOB


def test_the_obit_gives_the_exit_status_without_asking_pbs(site):
    jid = site.qsub(stageout=site.stageout("alice", "r.dat"))
    intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())
    site.journal.record_obit(jid, 0, at=site.clock(), owner="alice")
    site.finish(jid, 0)
    jobs = intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())
    qstats = site.fake.calls["qstat"]
    assert stageout.run_cycle(site.ctx, site.views, jobs, now=site.clock()) == 1
    assert site.fake.calls["qstat"] == qstats
