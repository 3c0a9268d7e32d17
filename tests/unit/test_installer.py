"""The installer's plan: the qmgr script, in the order a real OpenPBS takes it."""

import os

from pbs_globus_staging import installer


def test_script_creates_resources_with_flags_and_enables_hooks_last(tmp_path):
    plan = installer.make_plan(hook_config=tmp_path / "cf.json")
    lines = plan.script(assume_empty=True)
    assert lines[:4] == ["create resource stagein_globus type=string",
                         "create resource stageout_globus type=string",
                         "create resource globus_stage_state type=string,flag=r",
                         "create resource globus_stage_tasks type=string,flag=r"]
    periodic = [l for l in lines if "globus_staging_periodic" in l]
    assert periodic[0] == "create hook globus_staging_periodic"
    assert periodic.index("set hook globus_staging_periodic event = periodic") < \
        periodic.index("set hook globus_staging_periodic freq = 30")
    # a real OpenPBS refuses to enable a periodic hook before its script is imported
    assert periodic[-1] == "set hook globus_staging_periodic enabled = true"
    assert any(l.startswith("import hook globus_staging_periodic application/x-python")
               for l in periodic[:-1])


def test_script_skips_what_exists(tmp_path):
    plan = installer.make_plan(hook_config=tmp_path / "cf.json")
    lines = plan.script(existing_resources=["stagein_globus"],
                        existing_hooks=["globus_staging_queuejob"])
    assert "create resource stagein_globus type=string" not in lines
    assert "create hook globus_staging_queuejob" not in lines
    assert "create hook globus_staging_runjob" in lines


def test_run_budget_leaves_room_before_the_next_run():
    assert installer.run_budget(None, freq=30, alarm=60) == 28
    assert installer.run_budget(10, freq=30, alarm=60) == 10
    assert installer.run_budget(None, freq=30, alarm=20) == 15      # inside the alarm
    assert installer.run_budget(None, freq=1, alarm=30) == 1


def test_uninstall_removes_logs_views_and_token_caches_and_keeps_the_journal(tmp_path):
    state = tmp_path / "globus_staging"
    (state / "users" / "alice").mkdir(parents=True)
    for name in ("journal.sqlite", "journal.sqlite-wal", "agent.log", "agent.log.1.gz",
                 "user-tokens.db", "user-tokens.db-wal", "client-tokens.db",
                 "globus_staging.json", "unrelated.txt"):
        (state / name).write_text("x")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (state / "users" / "alice" / "link").symlink_to(outside)
    cf, journal = state / "globus_staging.json", state / "journal.sqlite"
    remove, keep = installer.state_files(hook_config=cf, journal=journal)
    assert sorted(p.name for p in remove) == ["agent.log", "agent.log.1.gz", "client-tokens.db",
                                              "globus_staging.json", "user-tokens.db",
                                              "user-tokens.db-wal", "users"]
    assert keep == [journal, state / "journal.sqlite-wal"]
    installer.remove_state_files(remove, out=open(os.devnull, "w"))
    assert sorted(os.listdir(state)) == ["journal.sqlite", "journal.sqlite-wal", "unrelated.txt"]
    assert (outside / "keep.txt").exists()            # a symlink in users/ is not followed
    remove, keep = installer.state_files(hook_config=cf, journal=journal, purge=True)
    assert keep == [] and sorted(p.name for p in remove) == ["journal.sqlite",
                                                             "journal.sqlite-wal"]
