"""Shared setup for the end-to-end scenario tests (hooks + PBS double +
Globus emulator + the agent run by the periodic hook as a subprocess)."""
import pytest

from pbs_globus_staging_sim.invariants import assert_invariants
from pbs_globus_staging_sim.site import REMOTE_COLLECTION, StagingSite


def make_site(tmp_path, **kw):
    # The install itself is the integration tier's (test_site_install.py pins that both
    # ways install the same suite); the scenarios here need only its result.
    kw.setdefault("install", "in-process")
    return StagingSite(tmp_path, **kw).start()


def remote_file(site, rel, text="data\n", user=None):
    path = site.remote_dir / (user or site.user) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def local(site, rel, user=None):
    return f"{site.site_dir}/{user or site.user}/{rel}"


def stagein_arg(site, local_rel, remote_rel, extra=""):
    return f"stagein_globus={local(site, local_rel)}@theta-dtn:~/{site.user}/{remote_rel}{extra}"


def request_state(site, job_id, direction="in"):
    j = site.journal()
    try:
        for r in j.requests_for_job(job_id):
            if r.direction == direction:
                return r.state
        return None
    finally:
        j.close()


def tasks_for(site, job_id):
    return [t for t in site.emulator.tasks.values() if job_id in str(t.label)]


@pytest.fixture
def site(tmp_path):
    s = make_site(tmp_path)
    try:
        yield s
        assert_invariants(s)
    finally:
        s.stop()
