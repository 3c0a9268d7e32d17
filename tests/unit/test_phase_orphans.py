"""Phase orphans: a job deleted while staging (phases/orphans.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide
from pbs_globus_staging.phases import intake, orphans, submit


def staging(s, name="a.dat", **kw):
    jid = s.qsub(stagein=s.stagein("alice", name), **kw)
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    return jid


def look(s):
    jobs = intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    orphans.run_cycle(s.ctx, jobs, now=s.clock())


def test_a_job_deleted_while_staging_keeps_its_task_for_the_grace_then_cancels_it(make_site):
    s = make_site(orphan_grace=300.0)
    jid = staging(s)
    (t,) = s.transfers(jid)
    s.pbs.delete(jid)                                   # qdel while its data move
    s.clock.advance(1)
    look(s)
    assert "job_deleted" in s.kinds(jid) and "job_deleted" in s.alert_kinds()
    assert s.journal.get_transfer(t.transfer_id).orphaned_since == s.clock()
    assert not s.backend.tasks[t.task_id].canceled      # a resubmission may adopt it
    s.clock.advance(299)
    look(s)
    assert not s.backend.tasks[t.task_id].canceled
    s.clock.advance(2)
    look(s)
    assert s.backend.tasks[t.task_id].canceled
    assert s.journal.get_transfer(t.transfer_id).status == decide.T_CANCELED
    assert s.request(jid).state == decide.CANCELED
    assert "transfer_canceled" in s.kinds(jid)


def test_a_job_deleted_before_its_task_started_is_canceled_at_once(make_site):
    s = make_site(max_tasks_per_identity=1, batch_max_items=1)
    staging(s, "a", qtime=s.clock() - 10)
    waiting = staging(s, "b")
    assert s.request(waiting).state == decide.PENDING
    s.pbs.delete(waiting)
    s.clock.advance(1)
    look(s)
    assert s.request(waiting).state == decide.CANCELED


def test_a_resubmission_adopts_the_orphan_and_nothing_is_canceled(make_site):
    s = make_site(orphan_grace=300.0)
    first = staging(s)
    (t,) = s.transfers(first)
    s.pbs.delete(first)
    s.clock.advance(1)
    look(s)
    again = staging(s)                                   # same data, same user
    assert s.transfers(again)[0].transfer_id == t.transfer_id
    s.clock.advance(400)
    look(s)
    assert not s.backend.tasks[t.task_id].canceled
    assert s.request(again).state == decide.ACTIVE


def test_its_stageout_is_skipped(site):
    jid = site.qsub(stagein=site.stagein("alice", "a.dat"),
                    stageout=site.stageout("alice", "r.dat"))
    intake.run_cycle(site.ctx, site.views, site.settling, now=site.clock())
    submit.run_cycle(site.ctx, site.submitting, site.views, site.settling, now=site.clock())
    site.pbs.delete(jid)
    site.clock.advance(1)
    look(site)
    out = site.request(jid, "out")
    assert out.state == decide.SKIPPED and out.message == decide.SKIP_LEFT_BEFORE_RUN


def test_a_job_pbs_still_shows_is_not_taken_for_gone(site):
    jid = staging(site)
    orphans.run_cycle(site.ctx, {}, now=site.clock() + 1)   # not in this read, but PBS has it
    assert "job_deleted" not in site.kinds(jid)
