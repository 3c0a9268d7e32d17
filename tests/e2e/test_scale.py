"""Issue 7 at test scale: dedup, batching with one bad item, per-identity task
limits, PBS priority order and just-in-time staging.

The real agent, journal, globus-sdk backend and Globus emulator (real HTTP,
per-user limits on); PBS is the in-memory fake (``testing/fakepbs.py``) so the
jobs' priority and queue time are set exactly and each test takes seconds.
"""
import threading
import time

import pytest

from pbs_globus_staging_sim.scale import ScaleSite


@pytest.fixture
def make_site(tmp_path):
    sites = []

    def make(**kw):
        kw.setdefault("bytes_per_second", 5e6)
        site = ScaleSite(tmp_path / f"s{len(sites)}", **kw).start()
        sites.append(site)
        return site

    yield make
    for s in sites:
        s.stop()
        assert not s.emulator.internal_errors


class Sampler:
    """Most unfinished Globus tasks per identity, sampled every few ms in a
    thread, so tasks started by polls inside an agent run are seen too."""

    def __init__(self, site):
        self.site, self.max_live, self._halt = site, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._halt.is_set():
            for ident, n in self.site.live_tasks().items():
                self.max_live[ident] = max(n, self.max_live.get(ident, 0))
            self._halt.wait(0.003)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self._thread.join()


def tasks_of(site, user):
    ident = site.identities[user]
    return sorted((t for t in site.emulator.tasks.values() if t.owner_id == ident),
                  key=lambda t: t.request_time)


def dest_names(task):
    return sorted(i.destination_path.rsplit("/", 1)[-1] for i in task.items)


def one_file_job(site, user, name, **kw):
    site.remote_file(user, f"in/{name}", f"{name}\n" * 100)
    return site.submit(user, site.stagein(user, f"in/{name}", f"in/{name}"), **kw)


def all_released(site, jobs):
    return lambda: all(j in site.pbs.released_at for j in jobs)


def test_identical_requests_share_one_task_and_both_jobs_are_released(make_site):
    site = make_site()
    site.add_user("ann")
    site.remote_file("ann", "in/ref.dat", "genome\n" * 1000)
    value = site.stagein("ann", "in/ref.dat", "in/ref.dat")
    a = site.submit("ann", value)
    b = site.submit("ann", value)                   # queued together: one batch
    site.run_until(all_released(site, [a, b]), timeout=30)
    tasks = tasks_of(site, "ann")
    assert len(tasks) == 1 and dest_names(tasks[0]) == ["ref.dat"]
    assert site.local("ann", "in/ref.dat").read_text() == "genome\n" * 1000
    assert site.pbs.state_word(a) == site.pbs.state_word(b) == "staged-in"


def test_identical_request_queued_later_adopts_the_running_task(make_site):
    site = make_site(bytes_per_second=0)            # the first task cannot finish yet
    site.add_user("ann")
    site.remote_file("ann", "in/ref.dat", "genome\n" * 1000)
    value = site.stagein("ann", "in/ref.dat", "in/ref.dat")
    a = site.submit("ann", value)
    site.cycle()
    assert len(tasks_of(site, "ann")) == 1
    b = site.submit("ann", value)
    site.cycle()
    site.cycle()
    assert len(tasks_of(site, "ann")) == 1          # b waits on a's task, no second one
    assert a not in site.pbs.released_at and b not in site.pbs.released_at
    site.emulator.set_rate(5e6)
    site.run_until(all_released(site, [a, b]), timeout=30)
    assert len(tasks_of(site, "ann")) == 1
    j = site.journal()
    try:
        kinds = [e.kind for e in j.events(b)]
    finally:
        j.close()
    assert "stagein_adopted" in kinds


def test_batch_with_one_missing_file_fails_only_its_owner(make_site):
    site = make_site()
    site.add_user("ann")
    good1 = one_file_job(site, "ann", "one.dat")
    bad = site.submit("ann", site.stagein("ann", "in/missing.dat", "in/missing.dat"))
    good2 = one_file_job(site, "ann", "two.dat")
    site.run_until(lambda: site.pbs.state_word(bad) == "stagein-failed"
                   and all_released(site, [good1, good2])(), timeout=30)
    tasks = tasks_of(site, "ann")
    assert len(tasks) == 1, "the three requests were not batched into one task"
    assert dest_names(tasks[0]) == ["missing.dat", "one.dat", "two.dat"]
    assert tasks[0].skip_source_errors and tasks[0].status == "SUCCEEDED"
    assert site.local("ann", "in/one.dat").exists() and site.local("ann", "in/two.dat").exists()
    # the owner of the missing item gets that item's error; it stays held
    assert bad not in site.pbs.released_at and "s" in site.pbs.holds(bad)
    comment = site.pbs.jobs[bad]["comment"]
    assert "FAILED" in comment and "missing.dat" in comment
    assert site.pbs.state_word(good1) == site.pbs.state_word(good2) == "staged-in"


def test_task_limit_per_identity_is_never_exceeded(make_site):
    # Agent limit 2 (the emulator would let 3 move): the agent's own limit is
    # what is tested.  4 items per task, 20 KB files at 200 KB/s: each task
    # lives ~0.4 s, long enough that a third one would be seen.
    site = make_site(bytes_per_second=200_000,
                     agent={"max_tasks_per_identity": 2, "batch_max_items": 4,
                            "poll_interval": 0.1})
    for user in ("ann", "bob"):
        site.add_user(user)
    jobs = {"ann": [], "bob": []}
    for i in range(24):
        for user in ("ann", "bob") if i < 8 else ("ann",):
            site.remote_file(user, f"in/f{i:02d}", "x" * 20_000)
            jobs[user].append(site.submit(user, site.stagein(user, f"in/f{i:02d}",
                                                             f"in/f{i:02d}")))
    with Sampler(site) as sampler:
        first = site.cycle()
        j = site.journal()
        try:
            waiting = [r for r in j.requests(state=("pending",)) if r.owner == "ann"]
        finally:
            j.close()
        site.run_until(all_released(site, jobs["ann"] + jobs["bob"]), timeout=60, budget=1.5)
    ann, bob = site.identities["ann"], site.identities["bob"]
    assert len(waiting) >= 24 - 2 * 4, "the limit never held requests back in the journal"
    assert sampler.max_live[ann] == 2           # reached, never passed
    assert sampler.max_live.get(bob, 0) <= 2
    assert len(tasks_of(site, "ann")) == 6 and len(tasks_of(site, "bob")) == 2
    assert first.stats.ok
    assert not [c for c in site.emulator.calls if c.status == 429]


def test_tasks_follow_pbs_priority_then_queue_time(make_site):
    site = make_site(agent={"max_tasks_per_identity": 1, "batch_max_items": 2})
    site.add_user("ann")
    t0 = time.time() - 3600
    spec = {"p0-early": (0, t0 - 5), "p0-late": (0, t0), "p10-first": (10, t0 + 1),
            "p10-second": (10, t0 + 2), "p5": (5, t0 + 30), "neg": (-3, t0 - 100)}
    jobs = [one_file_job(site, "ann", name, priority=prio, qtime=qt)
            for name, (prio, qt) in spec.items()]
    site.run_until(all_released(site, jobs), timeout=30)
    order = [dest_names(t) for t in tasks_of(site, "ann")]
    assert order == [["p10-first", "p10-second"], ["p0-early", "p5"], ["neg", "p0-late"]]
    released = sorted(jobs, key=lambda j: site.pbs.released_at[j])
    assert released[:2] == sorted(jobs[2:4])   # the two priority-10 jobs went first


def test_just_in_time_stages_only_the_front_jobs(make_site):
    site = make_site(agent={"stage_ahead": 2})
    site.add_user("ann")
    t0 = time.time() - 600
    jobs = [one_file_job(site, "ann", f"f{i}", priority=10 - i, qtime=t0 + i) for i in range(5)]
    site.run_until(all_released(site, jobs[:2]), timeout=30)
    site.cycle()
    assert [site.pbs.state_word(j) for j in jobs] == ["staged-in"] * 2 + ["waiting"] * 3
    assert sorted(n for t in tasks_of(site, "ann") for n in dest_names(t)) == ["f0", "f1"]
    for j in jobs[:2]:
        site.pbs.start_job(j)                   # the front jobs run: the next two move up
    site.run_until(all_released(site, jobs[2:4]), timeout=30)
    site.cycle()
    assert site.pbs.state_word(jobs[4]) == "waiting"
    assert sorted(n for t in tasks_of(site, "ann") for n in dest_names(t)) == \
        ["f0", "f1", "f2", "f3"]


def test_batch_window_lets_a_sweep_arrive_and_share_one_task(make_site):
    site = make_site(agent={"batch_window": 2.0})   # PBS qtime has 1-s resolution
    site.add_user("ann")
    first = one_file_job(site, "ann", "a.dat")
    site.cycle()
    assert tasks_of(site, "ann") == []          # younger than the window: waits
    rest = [one_file_job(site, "ann", f"{n}.dat") for n in "bcd"]
    time.sleep(2.1)
    site.run_until(all_released(site, [first, *rest]), timeout=30)
    (task,) = tasks_of(site, "ann")             # all four in one Globus task
    assert dest_names(task) == ["a.dat", "b.dat", "c.dat", "d.dat"]
