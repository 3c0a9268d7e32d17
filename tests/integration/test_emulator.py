"""The Globus emulator, driven through the real globus-sdk over HTTP."""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import time
import uuid
from pathlib import Path
from typing import Callable, List

import globus_sdk
import pytest
from globus_sdk.gare import to_gare
from globus_sdk.scopes import GCSCollectionScopes
from globus_sdk.transport import RetryConfig

from pbs_globus_staging_sim.emulator import GlobusEmulator, data_access_scope


def _fast_retries(max_retries: int = 5) -> RetryConfig:
    # Retry-After is still honoured: the SDK uses it instead of the backoff
    return RetryConfig(max_retries=max_retries,
                       backoff=lambda ctx: 0.01 if ctx.backoff is None else ctx.backoff)


@dataclasses.dataclass
class World:
    emu: GlobusEmulator
    src: str
    dst: str
    alice: str
    bob: str
    src_dir: Path
    dst_dir: Path
    make_client: Callable[..., globus_sdk.TransferClient]

    def tc(self, who: str = "alice", **kw) -> globus_sdk.TransferClient:
        return self.make_client(who, **kw)


@pytest.fixture
def world(globus_emulator: GlobusEmulator) -> World:
    emu = globus_emulator
    src = emu.add_collection("site")
    dst = emu.add_collection("remote")
    alice = emu.add_identity("alice")
    bob = emu.add_identity("bob")
    for coll in (src, dst):
        emu.grant(alice, coll, "/alice")
        emu.grant(bob, coll, "/bob")
    creds = {"alice": emu.add_client(alice), "bob": emu.add_client(bob)}

    def make_client(who: str, retry_config: RetryConfig | None = None):
        cid, secret = creds[who]
        auth = globus_sdk.ConfidentialAppAuthClient(cid, secret)
        # Both are GCSv5 mapped collections: their data_access consents go
        # into the token, as globus-sdk's add_app_data_access_scope asks for them.
        scope = globus_sdk.TransferClient.scopes.all.with_dependencies(
            GCSCollectionScopes(c).data_access for c in (src, dst))
        authorizer = globus_sdk.ClientCredentialsAuthorizer(auth, scope)
        return globus_sdk.TransferClient(authorizer=authorizer,
                                         retry_config=retry_config or _fast_retries())

    (emu.root / "site" / "alice").mkdir()
    (emu.root / "site" / "bob").mkdir()
    return World(emu, src, dst, alice, bob, emu.root / "site", emu.root / "remote",
                 make_client)


def _submit(tc, src, dst, items, **kw):
    td = globus_sdk.TransferData(src, dst, **kw)
    for item in items:
        if len(item) == 3:
            td.add_item(item[0], item[1], recursive=item[2])
        else:
            td.add_item(*item)
    return tc.submit_transfer(td)


def _until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


# -- basic flow -------------------------------------------------------------------
def test_submit_copies_file_and_reports_like_globus(world: World) -> None:
    data = os.urandom(5000)
    (world.src_dir / "alice" / "in.bin").write_bytes(data)
    tc = world.tc()
    res = _submit(tc, world.src, world.dst, [("/alice/in.bin", "/alice/out/in.bin")],
                  label="stage in 1")
    assert res.http_status == 202 and res["code"] == "Accepted"
    world.emu.wait_for_status(res["task_id"], "SUCCEEDED")
    assert (world.dst_dir / "alice" / "out" / "in.bin").read_bytes() == data

    task = tc.get_task(res["task_id"])
    assert task["status"] == "SUCCEEDED" and task["nice_status"] is None
    assert task["is_ok"] is None and task["fatal_error"] is None
    assert task["owner_id"] == world.alice and task["label"] == "stage in 1"
    assert (task["files"], task["files_transferred"], task["bytes_transferred"]) == (1, 1, 5000)
    assert task["subtasks_succeeded"] == task["subtasks_total"] == 2
    assert task["subtasks_pending"] == 0 and task["completion_time"]
    assert task["source_endpoint_id"] == world.src
    rows = list(tc.task_successful_transfers(res["task_id"]))
    assert [(r["source_path"], r["destination_path"]) for r in rows] == [
        ("/alice/in.bin", "/alice/out/in.bin")]
    codes = [e["code"] for e in tc.task_event_list(res["task_id"])]
    assert codes[0] == "SUCCEEDED"   # newest first


def test_recursive_copy_counts_and_never_follows_symlinks_out(world: World,
                                                               tmp_path: Path) -> None:
    tree = world.src_dir / "alice" / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("bb")
    (tree / "sub" / "deeper" / "c.txt").write_text("ccc")
    outside = tmp_path / "secret.txt"
    outside.write_text("do not copy")
    (tree / "leak.txt").symlink_to(outside)
    tc = world.tc()
    res = _submit(tc, world.src, world.dst, [("/alice/tree/", "/alice/copy/", True)])
    world.emu.wait_for_status(res["task_id"], "SUCCEEDED")
    out = world.dst_dir / "alice" / "copy"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.txt", "sub/b.txt", "sub/deeper/c.txt"]
    assert (out / "sub" / "deeper" / "c.txt").read_text() == "ccc"
    task = tc.get_task(res["task_id"])
    assert (task["files"], task["directories"], task["bytes_transferred"]) == (3, 3, 6)
    rows = list(tc.task_successful_transfers(res["task_id"]))
    assert {r["destination_path"] for r in rows} == {
        "/alice/copy/a.txt", "/alice/copy/sub/b.txt", "/alice/copy/sub/deeper/c.txt"}


def test_paths_escaping_the_collection_are_refused(world: World, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    (world.src_dir / "alice" / "link.txt").symlink_to(outside)
    tc = world.tc()
    escaping = _submit(tc, world.src, world.dst, [("/alice/../bob/x", "/alice/x")])
    linked = _submit(tc, world.src, world.dst, [("/alice/link.txt", "/alice/link.txt")])
    for res in (escaping, linked):
        _until(lambda r=res: tc.get_task(r["task_id"])["faults"] >= 1)
        task = tc.get_task(res["task_id"])
        assert task["status"] == "ACTIVE" and task["nice_status"] == "PERMISSION_DENIED"
    assert not (world.dst_dir / "alice" / "link.txt").exists()


def test_slow_rate_shows_partial_progress_then_completes(world: World) -> None:
    world.emu.set_rate(20_000)
    (world.src_dir / "alice" / "big").write_bytes(b"z" * 12_000)
    tc = world.tc()
    res = _submit(tc, world.src, world.dst, [("/alice/big", "/alice/big")])
    _until(lambda: 0 < tc.get_task(res["task_id"])["bytes_transferred"] < 12_000)
    task = tc.get_task(res["task_id"])
    assert task["status"] == "ACTIVE" and task["nice_status"] == "OK" and task["is_ok"] is True
    world.emu.wait_for_status(res["task_id"], "SUCCEEDED", timeout=5)
    done = tc.get_task(res["task_id"])
    assert done["bytes_transferred"] == 12_000 and done["effective_bytes_per_second"] > 0


def test_sync_level_skips_up_to_date_files(world: World) -> None:
    (world.src_dir / "alice" / "same").write_text("same")
    (world.dst_dir / "alice").mkdir()
    (world.dst_dir / "alice" / "same").write_text("same")
    tc = world.tc()
    res = _submit(tc, world.src, world.dst, [("/alice/same", "/alice/same")],
                  sync_level="checksum")
    world.emu.wait_for_status(res["task_id"], "SUCCEEDED")
    task = tc.get_task(res["task_id"])
    assert (task["files_skipped"], task["files_transferred"], task["sync_level"]) == (1, 0, 3)


# -- submission semantics ------------------------------------------------------------
def test_same_submission_id_is_executed_once(world: World) -> None:
    (world.src_dir / "alice" / "f").write_text("f")
    tc = world.tc()
    sid = tc.get_submission_id()["value"]
    first = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")], submission_id=sid)
    second = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")], submission_id=sid)
    assert first["code"] == "Accepted" and second["code"] == "Duplicate"
    assert first["task_id"] == second["task_id"]
    assert len(world.emu.tasks) == 1
    assert world.emu.count_calls("/v0.10/submission_id", "GET") == 1


def test_identical_paths_conflict_while_active(world: World) -> None:
    world.emu.set_rate(0)
    (world.src_dir / "alice" / "f").write_text("f")
    tc = world.tc()
    first = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/g")])
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        _submit(tc, world.src, world.dst, [("/alice/f", "/alice/g")])
    assert err.value.http_status == 409 and err.value.code == "Conflict"
    assert "identical paths" in err.value.message
    # different paths or another identity's task are no conflict
    _submit(tc, world.src, world.dst, [("/alice/f", "/alice/h")])
    world.emu.set_rate(1e9)
    world.emu.wait_for_status(first["task_id"], "SUCCEEDED")
    again = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/g")])
    assert again["code"] == "Accepted"


@pytest.mark.parametrize("label,fragment", [
    ("x" * 129, "128"), ("two\nlines", "newline"), (" padded", "whitespace")])
def test_bad_labels_are_refused(world: World, label: str, fragment: str) -> None:
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        _submit(world.tc(), world.src, world.dst, [("/alice/f", "/alice/f")], label=label)
    assert err.value.http_status == 400 and fragment in err.value.message
    assert not world.emu.tasks


def test_submit_errors(world: World) -> None:
    tc = world.tc()
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.submit_transfer(globus_sdk.TransferData(world.src, world.dst))
    assert (err.value.http_status, err.value.code) == (
        400, "ClientError.BadRequest.NoTransferItems")
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        _submit(tc, world.src, str(uuid.uuid4()), [("/alice/f", "/alice/f")])
    assert (err.value.http_status, err.value.code) == (404, "ClientError.NotFound")
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=1)
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")], deadline=past)
    assert err.value.http_status == 400 and "deadline" in err.value.message
    body = err.value.raw_json
    assert set(body) >= {"code", "message", "request_id", "resource"}
    assert body["resource"] == "/v0.10/transfer"
    assert not world.emu.tasks


# -- listing and paging ----------------------------------------------------------------
def test_task_list_filters_and_pages_past_1000(world: World) -> None:
    emu = world.emu
    done = emu.add_finished_tasks(world.alice, 1100, source_collection=world.src,
                                  destination_collection=world.dst)
    emu.add_finished_tasks(world.bob, 5, source_collection=world.src,
                           destination_collection=world.dst)
    emu.set_rate(0)
    (world.src_dir / "alice" / "f").write_text("f")
    tc = world.tc()
    active = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])["task_id"]

    default = tc.task_list()
    assert (default["limit"], default["length"], default["total"]) == (10, 10, 1101)
    first = tc.task_list(limit=1000, offset=0)
    second = tc.task_list(limit=1000, offset=1000)
    assert (first["length"], second["length"], second["total"]) == (1000, 101, 1101)
    assert second["DATA_TYPE"] == "task_list" and second["offset"] == 1000
    seen = {t["task_id"] for t in first["DATA"]} | {t["task_id"] for t in second["DATA"]}
    assert seen == set(done) | {active}
    assert first["DATA"][0]["task_id"] == active        # newest first

    picked = tc.task_list(filter={"task_id": [done[3], done[7], active]}, limit=1000)
    assert {t["task_id"] for t in picked["DATA"]} == {done[3], done[7], active}
    running = tc.task_list(filter={"status": ["ACTIVE", "INACTIVE"]}, limit=1000)
    assert [t["task_id"] for t in running["DATA"]] == [active]
    assert emu.calls[-1].query["filter"] == "status:ACTIVE,INACTIVE"
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat()
    none = tc.task_list(filter=f"request_time:{future},", limit=10)
    assert none["total"] == 0
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.task_list(limit=1001)
    assert err.value.http_status == 400
    with pytest.raises(globus_sdk.TransferAPIError):
        tc.task_list(filter="bogus:1")


# -- task control --------------------------------------------------------------------
def test_cancel_then_cancel_again(world: World) -> None:
    world.emu.set_rate(0)
    (world.src_dir / "alice" / "f").write_text("f")
    tc = world.tc()
    tid = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])["task_id"]
    res = tc.cancel_task(tid)
    assert res["code"] == "Canceled"
    task = tc.get_task(tid)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "CANCELED"
    assert task["nice_status"] is None and task["subtasks_canceled"] >= 1
    assert tc.cancel_task(tid)["code"] == "TaskComplete"


def test_missing_source_keeps_task_active_with_growing_faults(world: World) -> None:
    tc = world.tc()
    tid = _submit(tc, world.src, world.dst, [("/alice/nope", "/alice/nope")])["task_id"]
    _until(lambda: tc.get_task(tid)["faults"] >= 1)
    first = tc.get_task(tid)
    assert first["status"] == "ACTIVE" and first["nice_status"] == "FILE_NOT_FOUND"
    assert first["is_ok"] is False and first["subtasks_retrying"] == 1
    _until(lambda: tc.get_task(tid)["faults"] >= first["faults"] + 2)
    errors = list(tc.task_event_list(tid, limit=100, query_params={"filter": "is_error:1"}))
    assert len(errors) >= 3
    assert {e["code"] for e in errors} == {"FILE_NOT_FOUND"}
    assert all(e["is_error"] and e["time"] and "/alice/nope" in e["details"] for e in errors)
    # the file appears: the retry picks it up
    (world.src_dir / "alice" / "nope").write_text("late")
    world.emu.wait_for_status(tid, "SUCCEEDED")
    assert (world.dst_dir / "alice" / "nope").read_text() == "late"


def test_skip_source_errors_skips_missing_files(world: World) -> None:
    (world.src_dir / "alice" / "here").write_text("h")
    tc = world.tc()
    tid = _submit(tc, world.src, world.dst,
                  [("/alice/here", "/alice/here"), ("/alice/gone", "/alice/gone")],
                  skip_source_errors=True)["task_id"]
    world.emu.wait_for_status(tid, "SUCCEEDED")
    task = tc.get_task(tid)
    assert task["subtasks_skipped_errors"] == 1 and task["files_transferred"] == 1
    skipped = tc.get("/v0.10/task/" + tid + "/skipped_errors")["DATA"]
    assert [(s["source_path"], s["error_code"]) for s in skipped] == [
        ("/alice/gone", "FILE_NOT_FOUND")]


def test_expired_credential_makes_task_inactive_until_renewed(world: World) -> None:
    world.emu.set_rate(20_000)
    (world.src_dir / "alice" / "f").write_bytes(b"q" * 10_000)
    tc = world.tc()
    tid = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])["task_id"]
    world.emu.expire_credential(world.alice, world.dst)
    world.emu.wait_for_status(tid, "INACTIVE")
    stalled = tc.get_task(tid)["bytes_transferred"]
    time.sleep(0.15)
    task = tc.get_task(tid)
    assert task["bytes_transferred"] == stalled and task["is_ok"] is None
    assert task["nice_status"] == "NO_CREDENTIALS"
    assert tc.task_list(filter={"status": ["INACTIVE"]}, limit=10)["total"] == 1
    world.emu.renew_credential(world.alice, world.dst)
    world.emu.wait_for_status(tid, "SUCCEEDED", timeout=5)
    assert (world.dst_dir / "alice" / "f").read_bytes() == b"q" * 10_000


def test_paused_collection_holds_tasks_active(world: World) -> None:
    (world.src_dir / "alice" / "f").write_text("f")
    world.emu.pause_collection(world.src)
    tc = world.tc()
    tid = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])["task_id"]
    _until(lambda: tc.get_task(tid)["is_paused"])
    time.sleep(0.1)
    task = tc.get_task(tid)
    assert task["status"] == "ACTIVE" and task["files_transferred"] == 0
    assert tc.task_pause_info(tid)["pause_rules"]
    world.emu.resume_collection(world.src)
    world.emu.wait_for_status(tid, "SUCCEEDED")
    assert tc.get_task(tid)["is_paused"] is False


def test_deadline_expiry_fails_task(world: World) -> None:
    world.emu.set_rate(0)
    (world.src_dir / "alice" / "f").write_text("f")
    tc = world.tc()
    deadline = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    tid = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")],
                  deadline=deadline)["task_id"]
    assert tc.get_task(tid)["deadline"] == deadline.replace(microsecond=0).isoformat()
    world.emu.advance_clock(2 * 3600)
    world.emu.wait_for_status(tid, "FAILED")
    task = tc.get_task(tid)
    assert task["fatal_error"]["code"] == "EXPIRED" and task["subtasks_expired"] >= 1


def test_fail_task_injects_fatal_error(world: World) -> None:
    world.emu.set_rate(0)
    (world.src_dir / "alice" / "f").write_text("f")
    tc = world.tc()
    tid = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])["task_id"]
    world.emu.fail_task(tid, code="QUOTA_EXCEEDED", description="quota exceeded")
    task = tc.get_task(tid)
    assert task["status"] == "FAILED"
    assert task["fatal_error"] == {"code": "QUOTA_EXCEEDED", "description": "quota exceeded"}


def test_active_task_limit_queues_the_rest(world: World) -> None:
    world.emu.set_rate(0)
    tc = world.tc()
    for n in range(4):
        (world.src_dir / "alice" / f"f{n}").write_text("x")
    ids = [_submit(tc, world.src, world.dst, [(f"/alice/f{n}", f"/alice/f{n}")])["task_id"]
           for n in range(4)]
    _until(lambda: [t["nice_status"] for t in
                    tc.task_list(filter={"task_id": ids}, limit=10,
                                 orderby="request_time ASC")["DATA"]]
           == ["OK", "OK", "OK", "Queued"])
    tc.cancel_task(ids[0])
    _until(lambda: tc.get_task(ids[3])["nice_status"] == "OK")
    world.emu.set_active_limit(0)
    for n in range(4, 8):
        (world.src_dir / "alice" / f"f{n}").write_text("x")
        _submit(tc, world.src, world.dst, [(f"/alice/f{n}", f"/alice/f{n}")])
    _until(lambda: tc.task_list(filter={"status": ["ACTIVE"]}, limit=10)["total"] == 7
           and all(t["nice_status"] == "OK" for t in
                   tc.task_list(filter={"status": ["ACTIVE"]}, limit=10)["DATA"]))


# -- consent, identities ---------------------------------------------------------------
def _client_with_scope(world: World, scope) -> globus_sdk.TransferClient:
    cid, secret = world.emu.add_client(world.alice)
    auth = globus_sdk.ConfidentialAppAuthClient(cid, secret)
    return globus_sdk.TransferClient(
        authorizer=globus_sdk.ClientCredentialsAuthorizer(auth, scope),
        retry_config=_fast_retries(0))


def test_consent_required_until_the_token_carries_it(world: World) -> None:
    """Consents are the token's dependent data_access scopes (not a switch)."""
    (world.src_dir / "alice" / "f").write_text("f")
    only_src = globus_sdk.TransferClient.scopes.all.with_dependency(
        GCSCollectionScopes(world.src).data_access)
    tc = _client_with_scope(world, only_src)
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])
    scope = data_access_scope(world.dst)
    assert err.value.http_status == 403 and err.value.code == "ConsentRequired"
    assert err.value.info.consent_required.required_scopes == [scope]
    assert scope == ("urn:globus:auth:scope:transfer.api.globus.org:all"
                     f"[*https://auth.globus.org/scopes/{world.dst}/data_access]")
    gare = to_gare(err.value)
    assert gare is not None and gare.authorization_parameters.required_scopes == [scope]
    assert err.value.raw_json["authorization_parameters"]["required_scopes"] == [scope]
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.operation_ls(world.dst, path="/alice")
    assert err.value.code == "ConsentRequired"
    assert tc.operation_ls(world.src, path="/alice")["DATA_TYPE"] == "file_list"
    assert not world.emu.tasks
    # bob's token carries both consents; alice's missing one does not touch him
    (world.src_dir / "bob" / "f").write_text("f")
    _submit(world.tc("bob"), world.src, world.dst, [("/bob/f", "/bob/f")])
    tc = world.tc()          # a token asked with both data_access scopes
    assert _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")])["code"] == "Accepted"


def test_only_mapped_non_high_assurance_collections_have_data_access(world: World) -> None:
    emu = world.emu
    guest = emu.add_collection("guest", entity_type="GCSv5_guest_collection")
    ha = emu.add_collection("ha", high_assurance=True)
    for coll in (guest, ha):
        emu.grant(world.alice, coll, "/")
    plain = _client_with_scope(world, globus_sdk.TransferClient.scopes.all)
    docs = {c: plain.get_endpoint(c) for c in (world.src, guest, ha)}
    assert [(d["entity_type"], d["high_assurance"]) for d in docs.values()] == [
        ("GCSv5_mapped_collection", False), ("GCSv5_guest_collection", False),
        ("GCSv5_mapped_collection", True)]
    for coll in (guest, ha):      # no consent needed
        assert plain.operation_ls(coll, path="/")["DATA_TYPE"] == "file_list"
    # asking data_access of a collection that has none: an unknown scope, even
    # optional (globus-sdk's add_app_data_access_scope warns so)
    for coll, optional in ((guest, False), (ha, True)):
        with pytest.raises(globus_sdk.AuthAPIError) as err:
            _client_with_scope(world, globus_sdk.TransferClient.scopes.all.with_dependency(
                GCSCollectionScopes(coll).data_access.with_optional(optional))).task_list()
        assert err.value.http_status == 400 and err.value.raw_json["error"] == "invalid_scope"


def test_auth_policy_failed_in_globus_shape(world: World) -> None:
    policy = str(uuid.uuid4())
    world.emu.require_policy(world.dst, policy)
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        world.tc().operation_ls(world.dst, path="/alice")
    assert (err.value.http_status, err.value.code) == (403, "AuthPolicyFailed")
    params = err.value.info.authorization_parameters
    assert params and params.session_required_policies == [policy]
    assert not err.value.info.consent_required
    assert err.value.raw_json["authorization_parameters"] == {
        "session_message": "Failing collection authentication policy",
        "session_required_policies": policy}
    assert world.tc().operation_ls(world.src, path="/alice")["DATA_TYPE"] == "file_list"


def test_identities_are_isolated(world: World) -> None:
    (world.src_dir / "alice" / "secret").write_text("alice only")
    alice, bob = world.tc("alice"), world.tc("bob")
    tid = _submit(alice, world.src, world.dst, [("/alice/secret", "/alice/secret")])["task_id"]
    for call in (lambda: bob.get_task(tid), lambda: bob.cancel_task(tid),
                 lambda: bob.task_event_list(tid),
                 lambda: bob.task_successful_transfers(tid)):
        with pytest.raises(globus_sdk.TransferAPIError) as err:
            call()
        assert (err.value.http_status, err.value.code) == (404, "ClientError.NotFound")
    assert tid not in {t["task_id"] for t in bob.task_list(limit=100)}
    # bob may submit against alice's path, but the task only collects faults
    stolen = _submit(bob, world.src, world.dst, [("/alice/secret", "/bob/stolen")])["task_id"]
    _until(lambda: bob.get_task(stolen)["faults"] >= 2)
    task = bob.get_task(stolen)
    assert task["status"] == "ACTIVE" and task["nice_status"] == "PERMISSION_DENIED"
    assert not (world.dst_dir / "bob" / "stolen").exists()
    lonely = world.emu.add_collection("lonely")
    assert alice.get_endpoint(world.src)["display_name"] == "site"
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        alice.get_endpoint(lonely)
    assert err.value.http_status == 404


def test_read_only_grant_refuses_writes(world: World) -> None:
    world.emu.grant(world.bob, world.src, "/shared", write=False)
    (world.src_dir / "shared").mkdir()
    (world.src_dir / "shared" / "ref").write_text("r")
    bob = world.tc("bob")
    ok = _submit(bob, world.src, world.dst, [("/shared/ref", "/bob/ref")])["task_id"]
    bad = _submit(bob, world.dst, world.src, [("/bob/x", "/shared/x")])["task_id"]
    world.emu.wait_for_status(ok, "SUCCEEDED")
    _until(lambda: bob.get_task(bad)["nice_status"] == "PERMISSION_DENIED")


# -- transport faults ---------------------------------------------------------------------
def test_429_retry_after_is_honoured(world: World) -> None:
    tc = world.tc()
    tc.task_list(limit=1)                      # get a token first
    world.emu.reset_calls()
    world.emu.fail_requests(429, count=1, path_prefix="/v0.10/task_list", retry_after=1)
    started = time.monotonic()
    assert tc.task_list(limit=1)["DATA_TYPE"] == "task_list"
    assert time.monotonic() - started >= 0.95
    assert [c.status for c in world.emu.calls] == [429, 200]


def test_request_rate_limit(world: World) -> None:
    tc = world.tc(retry_config=_fast_retries(max_retries=0))
    tc.task_list(limit=1)
    world.emu.set_request_rate(2)
    statuses = []
    for _ in range(6):
        try:
            tc.task_list(limit=1)
            statuses.append(200)
        except globus_sdk.TransferAPIError as err:
            statuses.append(err.http_status)
            assert int(err.headers["Retry-After"]) >= 1
    assert 200 in statuses and 429 in statuses


def test_5xx_retried_by_sdk_and_outage(world: World) -> None:
    tc = world.tc()
    tc.task_list(limit=1)
    world.emu.fail_requests(503, count=2, method="GET")
    assert tc.task_list(limit=1)["DATA_TYPE"] == "task_list"
    assert world.emu.count_calls("/v0.10/task_list") == 4
    no_retry = world.tc(retry_config=_fast_retries(max_retries=0))
    world.emu.fail_requests(502, count=1, code="ExternalError.DirListingFailed")
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        no_retry.task_list(limit=1)
    assert (err.value.http_status, err.value.code) == (502, "ExternalError.DirListingFailed")
    world.emu.set_outage(True)
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        no_retry.task_list(limit=1)
    assert err.value.http_status == 503
    with pytest.raises(globus_sdk.GlobusAPIError):
        no_retry.get_submission_id()
    world.emu.set_outage(False)
    assert no_retry.task_list(limit=1)["DATA_TYPE"] == "task_list"


# -- auth ------------------------------------------------------------------------------------
def test_refresh_tokens_and_revocation(world: World) -> None:
    emu = world.emu
    native = emu.add_native_client()
    tokens = emu.issue_tokens(world.alice, client_id=native)
    auth = globus_sdk.NativeAppAuthClient(native)
    refreshed: List[dict] = []
    authorizer = globus_sdk.RefreshTokenAuthorizer(
        tokens["refresh_token"], auth, access_token=tokens["access_token"],
        expires_at=tokens["expires_at_seconds"],
        on_refresh=lambda resp: refreshed.append(resp.by_resource_server))
    tc = globus_sdk.TransferClient(authorizer=authorizer, retry_config=_fast_retries())
    assert tc.task_list(limit=1)["total"] == 0
    emu.expire_access_tokens()
    assert tc.task_list(limit=1)["total"] == 0       # 401, refresh, retry
    assert len(refreshed) == 1
    assert refreshed[0]["transfer.api.globus.org"]["refresh_token"] == tokens["refresh_token"]
    assert [c.status for c in emu.calls[-3:]] == [401, 200, 200]

    userinfo = globus_sdk.AuthClient(
        authorizer=globus_sdk.AccessTokenAuthorizer(authorizer.access_token)).userinfo()
    assert (userinfo["sub"], userinfo["preferred_username"]) == (world.alice, "alice")

    emu.revoke_refresh_token(tokens["refresh_token"])
    emu.expire_access_tokens()
    with pytest.raises(globus_sdk.GlobusAPIError) as err:
        tc.task_list(limit=1)
    assert err.value.http_status == 400 and err.value.raw_json == {"error": "invalid_grant"}


def test_client_credentials_and_token_endpoints(world: World) -> None:
    emu = world.emu
    cid, secret = emu.add_client(world.alice)
    auth = globus_sdk.ConfidentialAppAuthClient(cid, secret)
    resp = auth.oauth2_client_credentials_tokens(
        requested_scopes=f"{globus_sdk.TransferClient.scopes.all} openid")
    by_rs = resp.by_resource_server
    assert set(by_rs) == {"transfer.api.globus.org", "auth.globus.org"}
    token = by_rs["transfer.api.globus.org"]["access_token"]
    info = auth.oauth2_token_introspect(token)
    assert info["active"] is True and info["sub"] == world.alice
    auth.oauth2_revoke_token(token)
    assert auth.oauth2_token_introspect(token)["active"] is False
    tc = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(token),
                                   retry_config=_fast_retries(0))
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.task_list()
    assert (err.value.http_status, err.value.code) == (401, "AuthenticationFailed")
    bad = globus_sdk.ConfidentialAppAuthClient(cid, "wrong")
    with pytest.raises(globus_sdk.AuthAPIError) as err:
        bad.oauth2_client_credentials_tokens(globus_sdk.TransferClient.scopes.all)
    assert err.value.http_status == 401
    # an Auth token is not a Transfer token
    auth_token = by_rs["auth.globus.org"]["access_token"]
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(auth_token),
                                  retry_config=_fast_retries(0)).task_list()
    assert err.value.http_status == 401


def test_calls_are_recorded_with_identity(world: World) -> None:
    tc = world.tc()
    world.emu.reset_calls()
    tc.task_list(limit=5, filter={"status": ["ACTIVE"]})
    call = world.emu.calls[-1]
    assert (call.method, call.path, call.identity_id, call.status) == (
        "GET", "/v0.10/task_list", world.alice, 200)
    assert call.query == {"limit": "5", "filter": "status:ACTIVE"}
    assert world.emu.count_calls("/v0.10/", "GET") == 1
    assert world.emu.count_calls("/v2/") == 0


def test_update_task_and_ls(world: World) -> None:
    world.emu.set_rate(0)
    (world.src_dir / "alice" / "sub").mkdir()
    (world.src_dir / "alice" / "f").write_text("four")
    tc = world.tc()
    listing = tc.operation_ls(world.src, path="/alice/")
    assert {(e["name"], e["type"]) for e in listing} == {("f", "file"), ("sub", "dir")}
    assert next(e for e in listing if e["name"] == "f")["size"] == 4
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.operation_ls(world.src, path="/bob/")
    assert err.value.http_status == 403
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.operation_ls(world.src, path="/alice/missing/")
    assert err.value.http_status == 404

    tid = _submit(tc, world.src, world.dst, [("/alice/f", "/alice/f")], label="old")["task_id"]
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    tc.update_task(tid, {"DATA_TYPE": "task", "label": "new", "deadline": later.isoformat()})
    task = tc.get_task(tid)
    assert task["label"] == "new"
    assert task["deadline"] == later.replace(microsecond=0).isoformat()
    with pytest.raises(globus_sdk.TransferAPIError) as err:
        tc.update_task(tid, {"label": "bad\nlabel"})
    assert err.value.http_status == 400 and world.emu.tasks[tid].label == "new"


def test_wait_for_status_fails_fast_on_other_final_status(world: World) -> None:
    world.emu.set_rate(0)
    (world.src_dir / "alice" / "f").write_text("f")
    tid = _submit(world.tc(), world.src, world.dst, [("/alice/f", "/alice/f")])["task_id"]
    with pytest.raises(TimeoutError):
        world.emu.wait_for_status(tid, "SUCCEEDED", timeout=0.1)
    world.emu.fail_task(tid)
    started = time.monotonic()
    with pytest.raises(AssertionError, match="ENDPOINT_ERROR"):
        world.emu.wait_for_status(tid, "SUCCEEDED", timeout=5)
    assert time.monotonic() - started < 1
