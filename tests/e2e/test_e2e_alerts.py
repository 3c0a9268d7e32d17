"""Alerts through the whole path: the agent run by the periodic hook decides,
the alert engine matches the site's rules, and real mail reaches a real SMTP
server -- once per event, across agent restarts."""
from alerts_helpers import start_smtp
from e2e_helpers import local, make_site, request_state, stagein_arg

from pbs_globus_staging_sim.invariants import assert_invariants


def test_failed_stage_in_mails_owner_once_through_smtp(tmp_path):
    smtp = start_smtp()
    alerts = {"admins": ["hpc-admin@example.org"], "mail_domain": "example.org",
              "mail": {"method": "smtp", "host": smtp.host, "port": smtp.port,
                       "from": "pbs-staging@example.org"}}
    site = make_site(tmp_path, extra_config={"alerts": alerts})
    try:
        quiet = site.submit("-m", "n", "-l", stagein_arg(site, "in/q.dat", "missing-q.dat"))
        job = site.submit("-l", stagein_arg(site, "in/x.dat", "missing.dat"),
                          "-l", f"stageout_globus={local(site, 'out/')}@theta-dtn:~/{site.user}/o/")
        site.run_until(lambda: request_state(site, job) == "failed"
                       and request_state(site, quiet) == "failed", timeout=60)
        for _ in range(3):                 # more agent runs (new processes): no resend
            site.cycle()
        mails = [m for m in smtp.messages if job in m.msg["Subject"]]
        assert len(mails) == 1, [m.msg["Subject"] for m in smtp.messages]
        (mail,) = mails
        assert mail.rcpt_tos == [f"{site.user}@example.org"]
        assert mail.msg["Subject"] == f"[PBS staging] job {job}: stage-in failed"
        body = mail.msg.get_content()
        assert "missing.dat" in body and "app.globus.org/activity/" in body
        # -m n: the owner asked for no mail about that job
        assert not any(quiet in m.msg["Subject"] for m in smtp.messages)
        assert_invariants(site)
    finally:
        site.stop()
        smtp.stop()
