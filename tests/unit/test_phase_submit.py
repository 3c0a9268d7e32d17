"""Phase submit: waiting requests -> batches -> Globus tasks (phases/submit.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging import decide, states
from pbs_globus_staging.errors import RetryableError
from pbs_globus_staging.phases import intake, submit


def intake_and_submit(s):
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())


def submits(s):
    return sum(1 for name, _ in s.backend.log if name == "submit")


def test_a_request_is_submitted_and_its_job_marked_staging_in_first(site):
    jid = site.qsub(stagein=site.stagein("alice", "a.dat"))
    intake_and_submit(site)
    assert site.request(jid).state == decide.ACTIVE
    (t,) = site.transfers(jid)
    assert t.status == decide.T_ACTIVE and t.task_id in site.backend.tasks
    assert site.fake.state_word(jid) == states.Stage.STAGING_IN   # before Globus moves a byte
    assert site.fake.calls["qalter"] == 1
    assert "stagein_submitted" in site.kinds(jid)


def test_the_batch_window_lets_a_sweep_share_one_task(make_site):
    s = make_site(batch_window=30.0)
    jobs = [s.qsub(stagein=s.stagein("alice", f"f{i}"), qtime=s.clock()) for i in range(3)]
    intake_and_submit(s)
    assert submits(s) == 0 and s.submitting.pending_left == 3
    assert all(s.request(j).state == decide.PENDING for j in jobs)
    s.clock.advance(31)
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    assert submits(s) == 1 and s.submitting.pending_left == 0
    assert len({s.transfers(j)[0].transfer_id for j in jobs}) == 1


def test_stage_ahead_stages_only_the_front_of_the_queue(make_site):
    s = make_site(stage_ahead=1)
    first = s.qsub(stagein=s.stagein("alice", "first"), qtime=s.clock() - 10)
    later = s.qsub(stagein=s.stagein("alice", "later"), qtime=s.clock())
    intake_and_submit(s)
    assert s.request(first).state == decide.ACTIVE
    assert s.request(later).state == decide.PENDING
    assert s.submitting.pending_left == 0     # not counted: it waits for its turn


def test_an_identity_gets_no_more_tasks_than_its_slots(make_site):
    s = make_site(max_tasks_per_identity=1, batch_max_items=1)
    a = s.qsub(stagein=s.stagein("alice", "a"), qtime=s.clock() - 10)
    b = s.qsub(stagein=s.stagein("alice", "b"), qtime=s.clock())
    intake_and_submit(s)
    assert submits(s) == 1
    assert s.request(a).state == decide.ACTIVE and s.request(b).state == decide.PENDING
    assert s.submitting.pending_left == 1


def test_the_submission_id_is_kept_before_the_post_and_reused(site):
    jid = site.qsub(stagein=site.stagein("alice", "a.dat"))
    site.backend.fail_next["submit"] = RetryableError("Globus 503")
    intake_and_submit(site)
    (t,) = site.transfers(jid)
    assert t.submission_id and not t.task_id
    assert site.request(jid).state == decide.QUEUED
    assert site.journal.get_meta("globus_down_since")
    site.clock.advance(5)
    submit.run_cycle(site.ctx, site.submitting, site.views, site.settling, now=site.clock())
    (t2,) = site.transfers(jid)
    assert t2.task_id and t2.submission_id == t.submission_id
    assert site.backend.tasks[t2.task_id].spec.submission_id == t.submission_id
