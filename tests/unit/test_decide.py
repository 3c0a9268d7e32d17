"""The pure decisions: every seed scenario as a fast unit test."""
from pbs_globus_staging import decide, states
from pbs_globus_staging.decide import Action, JobView, PendingItem, RequestStatus


def job(**kw):
    base = dict(job_id="7.srv", owner="alice", state="H", holds="s",
                stage_state=states.Stage.STAGING_IN, stagein="/lus/alice/in/@theta:/~/in/")
    base.update(kw)
    return JobView(**base)


def kinds(acts):
    return [(a.kind, a.value) for a in acts]


def test_success_sets_state_before_releasing():
    acts = decide.stagein_actions(job(), RequestStatus(decide.SUCCEEDED, tasks=("t1",)),
                                  failure_policy="hold")
    assert [a.kind for a in acts][:2] == ["set_state", "release"]
    assert acts[0].value == states.Stage.STAGED_IN and acts[0].reason == "t1"


def test_success_keeps_user_hold_and_releases_only_s():
    acts = decide.stagein_actions(job(holds="su"), RequestStatus(decide.SUCCEEDED),
                                  failure_policy="hold")
    assert ("release", "s") in kinds(acts)
    assert not any(a.kind == "release" and a.value != "s" for a in acts)


def test_success_without_s_hold_does_not_release_again():
    acts = decide.stagein_actions(job(holds="", state="Q", stage_state=states.Stage.STAGED_IN,
                                      comment="staging: stage-in done"),
                                  RequestStatus(decide.SUCCEEDED), failure_policy="hold")
    assert acts == []


def test_running_job_is_never_touched():
    for st in ("R", "E", "F"):
        assert decide.stagein_actions(job(state=st), RequestStatus(decide.FAILED, "x"),
                                      failure_policy="delete") == []


def test_failure_hold_policy_keeps_job_held_with_reason():
    acts = decide.stagein_actions(job(), RequestStatus(decide.FAILED, "FILE_NOT_FOUND: /x"),
                                  failure_policy="hold")
    assert ("set_state", states.Stage.STAGEIN_FAILED) in kinds(acts)
    assert not any(a.kind in ("release", "delete") for a in acts)
    comment = [a.value for a in acts if a.kind == "comment"][0]
    assert "FILE_NOT_FOUND: /x" in comment


def test_failure_rehold_when_s_hold_was_lifted_by_hand():
    acts = decide.stagein_actions(job(holds="", state="Q"), RequestStatus(decide.FAILED, "x"),
                                  failure_policy="hold")
    assert ("hold", "s") in kinds(acts)


def test_failure_delete_policy():
    acts = decide.stagein_actions(job(), RequestStatus(decide.FAILED, "boom"),
                                  failure_policy="delete")
    assert [a.kind for a in acts] == ["set_state", "comment", "delete"]
    assert acts[1].value == "staging: stage-in FAILED (job deleted): boom"


def test_failure_with_cleanup_submits_once_then_deletes():
    acts = decide.stagein_actions(job(), RequestStatus(decide.FAILED, "boom"),
                                  failure_policy="hold", cleanup="/home/alice/clean.sh")
    assert [a.kind for a in acts] == ["set_state", "submit_cleanup", "comment", "delete"]
    again = decide.stagein_actions(job(stage_state=states.Stage.STAGEIN_FAILED),
                                   RequestStatus(decide.FAILED, "boom"), failure_policy="hold",
                                   cleanup="/home/alice/clean.sh", cleanup_done=True)
    assert "submit_cleanup" not in [a.kind for a in again]


def test_user_action_says_what_to_run():
    acts = decide.stagein_actions(job(), RequestStatus(decide.USER_ACTION, "expired",
                                                       action="globus-staging login"),
                                  failure_policy="hold")
    assert ("set_state", states.Stage.USER_ACTION) in kinds(acts)
    assert any(a.kind == "comment" and "globus-staging login" in a.value for a in acts)
    assert not any(a.kind == "release" for a in acts)


def test_progress_comment_only_when_changed():
    st = RequestStatus(decide.ACTIVE, progress="50% 1/2 files 10 B task abcd")
    acts = decide.stagein_actions(job(), st, failure_policy="hold")
    assert kinds(acts) == [("progress", "staging: in 50% 1/2 files 10 B task abcd")]
    assert decide.stagein_actions(job(comment=acts[0].value), st, failure_policy="hold") == []


def test_progress_text_has_no_commas():
    text = decide.progress_text(files=30, files_done=12, bytes_done=12_345_678, rate=1.5e6,
                                nice_status="CONNECT_FAILED", task_id="0123456789abcdef")
    assert "," not in text
    assert text.startswith("40% 12/30 files 11.8 MiB at 1.4 MiB/s (CONNECT_FAILED) task 01234567")


def test_stageout_when():
    assert decide.stageout_wanted("ok", 0) is True
    assert decide.stageout_wanted("ok", 3) is False
    assert decide.stageout_wanted("notok", 3) is True
    assert decide.stageout_wanted("always", 271) is True
    assert decide.stageout_wanted("ok", None) is None


def test_fault_window():
    assert not decide.fault_expired(fault_since=None, now=100, window=10)
    assert not decide.fault_expired(fault_since=95, now=100, window=10)
    assert decide.fault_expired(fault_since=90, now=100, window=10)


def _item(rid, job_id, prio=0, qtime=0.0, ident="alice", path=None):
    return PendingItem(request_id=rid, job_id=job_id, priority=prio, qtime=qtime, identity=ident,
                       source_collection="R", destination_collection="S", options_key="{}",
                       source_path=path or f"/src/{rid}", destination_path=f"/dst/{rid}",
                       recursive=False)


def test_batches_respect_size_and_slots_in_priority_order():
    items = [_item(i, f"{i}.s", prio=(5 if i == 9 else 0), qtime=float(i)) for i in range(10)]
    batches = decide.plan_batches(items, max_items=3, free_slots={"alice": 2})
    assert len(batches) == 2
    # the high-priority job goes first, then queue order
    assert [it.request_id for it in batches[0].items] == [9, 0, 1]
    assert [it.request_id for it in batches[1].items] == [2, 3, 4]


def test_batches_never_split_a_request_and_separate_identities():
    items = [_item(1, "1.s", path="/a"), _item(1, "1.s", path="/b"), _item(2, "2.s"),
             _item(3, "3.s", ident="bob")]
    batches = decide.plan_batches(items, max_items=2, free_slots={"alice": 5, "bob": 0})
    assert [b.request_ids for b in batches] == [(1,), (2,)]


def test_summarize():
    assert decide.summarize([]) is None
    assert decide.summarize(["succeeded", "pending"]) is None
    assert decide.summarize(["succeeded", "failed"]) is False
    assert decide.summarize(["succeeded"] * 3) is True


def test_jobview_from_real_qstat_sample():
    import json
    from pathlib import Path
    sample = Path(__file__).resolve().parents[1] / "helpers/data/pbs-samples/qstat_held_job.json"
    attrs = json.loads(sample.read_text())["Jobs"]["106.vm"]
    v = JobView.from_qstat("106.vm", attrs)
    assert (v.owner, v.state, v.holds, v.stage_state) == ("alice", "H", "su", "staging-in")
    assert v.stagein == "theta:/~/in/@/lus/alice/in/" and v.stageout is None
    assert v.qtime > 1.7e9 and not v.started


def test_dependency_hold_is_left_to_pbs():
    # substate 22: PBS holds the job ('s') for an unmet dependency and lifts it itself
    acts = decide.stagein_actions(job(substate=22), RequestStatus(decide.SUCCEEDED),
                                  failure_policy="hold")
    assert ("set_state", states.Stage.STAGED_IN) in kinds(acts)
    assert not any(a.kind == "release" for a in acts)


def test_parse_pbs_time_fast_path_matches_strptime():
    import time
    text = "Sat Nov 21 23:09:43 2026"
    assert decide.parse_pbs_time(text) == time.mktime(time.strptime(text, "%a %b %d %H:%M:%S %Y"))
    assert decide.parse_pbs_time("garbage") == 0.0 and decide.parse_pbs_time(None) == 0.0
