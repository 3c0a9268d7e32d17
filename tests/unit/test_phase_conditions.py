"""Phase conditions: slow / unhealthy / unreachable alerts (phases/conditions.py)."""
from __future__ import annotations

from phasekit import make_site, no_sleep, site  # noqa: F401  (fixtures)

from pbs_globus_staging.phases import conditions, intake, submit


def test_a_task_without_progress_for_slow_after_is_reported_slow(make_site):
    s = make_site(slow_after=600.0)
    jid = s.qsub(stagein=s.stagein("alice", "a.dat"))
    intake.run_cycle(s.ctx, s.views, s.settling, now=s.clock())
    submit.run_cycle(s.ctx, s.submitting, s.views, s.settling, now=s.clock())
    s.clock.advance(599)
    conditions.run_cycle(s.ctx, s.views, now=s.clock())
    assert s.alert_kinds() == ["stagein_submitted"]
    s.clock.advance(1)
    conditions.run_cycle(s.ctx, s.views, now=s.clock())
    assert s.alert_kinds()[-1] == "slow"
    (slow,) = [a for a in s.alerts if a["kind"] == "slow"]
    assert slow["job_id"] == jid and slow["message"].startswith("no progress for 10 minutes")


def failed_runs(s, n):
    for _ in range(n):
        cid = s.journal.start_cycle(now=s.clock())
        s.journal.finish_cycle(cid, ok=False, error="globus: 503", now=s.clock())
        s.clock.advance(10)


def test_the_agent_is_unhealthy_after_three_failed_runs(site):
    site.ctx.stats.errors.append("globus: 503")
    failed_runs(site, 1)
    conditions.health_alert(site.ctx)
    assert "agent_unhealthy" not in site.alert_kinds()
    failed_runs(site, 1)
    conditions.health_alert(site.ctx)
    assert site.alert_kinds() == ["agent_unhealthy"]


def test_one_good_run_is_enough_to_be_healthy(site):
    failed_runs(site, 3)
    conditions.health_alert(site.ctx)      # this run had no error
    assert site.alert_kinds() == []


def test_globus_down_is_reported_to_the_admins(site):
    conditions.globus_trouble(site.ctx, "Globus 503")
    conditions.run_cycle(site.ctx, site.views, now=site.clock())
    (alert,) = site.alerts if site.alert_kinds() else [None]
    assert alert["kind"] == "globus_unreachable" and "job_id" not in alert
    conditions.globus_ok(site.ctx)
    assert not site.journal.get_meta("globus_down_since")
