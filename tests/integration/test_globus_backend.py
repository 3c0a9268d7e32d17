"""GlobusBackend through the real globus-sdk over HTTP against the emulator.

One test per outcome class (done, running, waiting for user, transient,
fatal), idempotency of submission, and the batched poll.
"""
from __future__ import annotations

import datetime as dt
import socket
import time
import uuid

import pytest

from pbs_globus_staging.backend import Outcome, TransferItem
from pbs_globus_staging.credentials import ClientCredentialsProvider, login_scope
from pbs_globus_staging.errors import FatalError, RetryableError, WaitingForUser
from pbs_globus_staging.globus_backend import GlobusBackend, sanitize_label

from globus_setup import USER, Site, site  # noqa: F401  (fixture)

ME = "alice"  # the agent's identity key (PBS user name)


@pytest.fixture
def cc(site: Site):
    """Backend in client-credentials mode."""
    backend = site.backend(site.client_provider())
    yield backend
    backend.close()


def _poll_until(backend, task_id, pred, *, timeout=10.0, identity=ME):
    end = time.monotonic() + timeout
    while True:
        report = backend.poll(identity, [task_id])[task_id]
        if pred(report):
            return report
        if time.monotonic() > end:
            raise AssertionError(f"condition not reached; last report {report}")
        time.sleep(0.05)


# -- done -------------------------------------------------------------------------------


def test_done_with_progress_and_successful_paths(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat", 3000)
    site.write_src("in/sub/b.dat", 5000)
    sid = cc.new_submission_id(ME)
    res = cc.submit(ME, site.spec(sid, sync_level="checksum", verify_checksum=True))
    assert not res.duplicate and not res.adopted
    site.emu.wait_for_status(res.task_id, "SUCCEEDED")
    report = cc.poll(ME, [res.task_id])[res.task_id]
    assert report.outcome is Outcome.DONE and report.status == "SUCCEEDED"
    assert report.files_transferred == 2 and report.bytes_transferred == 8000
    assert report.label == "job 1.server stage-in" and report.fatal_code is None
    assert (site.dst_dir / "out/sub/b.dat").read_bytes() == (site.src_dir / "in/sub/b.dat").read_bytes()
    assert sorted(cc.successful_paths(ME, res.task_id)) == [
        ("/in/a.dat", "/out/a.dat"), ("/in/sub/b.dat", "/out/sub/b.dat")]
    assert cc.get_task(ME, res.task_id).outcome is Outcome.DONE


def test_submit_document_on_the_wire(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat")
    deadline = dt.datetime(2031, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    label = "  job 7\nline two\t" + "x" * 300
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME), label=label, deadline=deadline,
                                  sync_level="size", skip_source_errors=True))
    doc = site.emu.task_doc(res.task_id)
    assert doc["label"] == sanitize_label(label)
    assert len(doc["label"]) == 128 and "\n" not in doc["label"]
    assert doc["label"].startswith("job 7 line two x")
    assert doc["deadline"].startswith("2031-01-02T03:04:05")
    assert doc["sync_level"] == 1 and doc["skip_source_errors"] is True


def test_sanitize_label():
    assert sanitize_label(" a\r\nb  c ") == "a b c"
    assert sanitize_label("y" * 127 + " z") == "y" * 127
    assert sanitize_label("") == ""


# -- running --------------------------------------------------------------------------------


def test_running_reports_progress(site: Site, cc: GlobusBackend):
    site.emu.set_rate(200_000)
    site.write_src("in/big.dat", 2_000_000)
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME)))
    report = _poll_until(cc, res.task_id, lambda r: r.bytes_transferred > 0)
    assert report.outcome is Outcome.RUNNING and report.status == "ACTIVE"
    assert report.nice_status in (None, "OK", "Queued") and report.fatal_code is None
    assert 0 < report.bytes_transferred < 2_000_000
    cc.cancel(ME, res.task_id)


# -- waiting for the user ------------------------------------------------------------------


def test_inactive_task_is_waiting_for_user(site: Site):
    provider, _ = site.user_provider()
    backend = site.backend(provider)
    site.emu.set_rate(100_000)
    site.write_src("in/big.dat", 1_000_000)
    res = backend.submit(USER, site.spec(backend.new_submission_id(USER)))
    site.emu.expire_credential(site.identity_id, site.src_id)
    site.emu.wait_for_status(res.task_id, "INACTIVE")
    report = backend.poll(USER, [res.task_id])[res.task_id]
    assert report.outcome is Outcome.WAITING_FOR_USER
    assert report.action == "globus-staging login" and "globus-staging login" in report.message
    site.emu.renew_credential(site.identity_id, site.src_id)
    site.emu.set_rate(50e6)
    site.emu.wait_for_status(res.task_id, "SUCCEEDED")
    assert backend.poll(USER, [res.task_id])[res.task_id].outcome is Outcome.DONE
    backend.close()


def test_consent_required_at_submit(site: Site):
    # The login consented to the source collection only.
    provider, _ = site.user_provider(scope=str(login_scope([site.src_id])))
    backend = site.backend(provider)
    site.write_src("in/a.dat")
    with pytest.raises(WaitingForUser) as err:
        backend.submit(USER, site.spec(backend.new_submission_id(USER)))
    assert err.value.code == "ConsentRequired"
    assert err.value.action == f"globus-staging login --collection {site.dst_id.lower()}"
    assert site.emu.tasks == {}
    provider, _ = site.user_provider(cache="again.db")     # logged in again, with both
    backend = site.backend(provider)
    assert backend.submit(USER, site.spec(backend.new_submission_id(USER))).task_id
    backend.close()


def test_revoked_login_mid_use_is_waiting_for_user(site: Site):
    provider, rt = site.user_provider()
    backend = site.backend(provider)
    assert backend.poll(USER, []) == {}
    sid = backend.new_submission_id(USER)  # works: access token in hand
    site.emu.revoke_refresh_token(rt)
    site.emu.expire_access_tokens()
    with pytest.raises(WaitingForUser) as err:
        backend.submit(USER, site.spec(sid))
    assert err.value.action == "globus-staging login"
    assert rt not in str(err.value)
    # The user logs in again: the next call works without restarting the agent.
    site.user_provider(native_client=provider.client_id)
    site.write_src("in/a.dat")
    assert backend.submit(USER, site.spec(sid)).task_id
    backend.close()


def test_authentication_failed_is_waiting_for_user(site: Site, cc: GlobusBackend):
    cc.new_submission_id(ME)
    # Both the first try and the SDK's one retry after a token refresh fail.
    site.emu.fail_requests(401, count=2, path_prefix="/v0.10/task_list",
                           code="AuthenticationFailed")
    with pytest.raises(WaitingForUser) as err:
        cc.poll(ME, [str(uuid.uuid4())])
    assert err.value.code == "AuthenticationFailed"


# -- transient --------------------------------------------------------------------------------


def test_429_with_retry_after_waits_then_succeeds(site: Site, cc: GlobusBackend):
    ids = site.emu.add_finished_tasks(site.identity_id, 2, source_collection=site.src_id,
                                      destination_collection=site.dst_id)
    cc.poll(ME, ids)  # token fetched, client built
    site.emu.fail_requests(429, count=1, path_prefix="/v0.10/task_list", retry_after=1)
    before = cc.http_requests[ME], cc.calls[ME]
    t0 = time.monotonic()
    reports = cc.poll(ME, ids)
    elapsed = time.monotonic() - t0
    assert set(reports) == set(ids)
    assert 1.0 <= elapsed < 3.0
    assert cc.http_requests[ME] - before[0] == 2 and cc.calls[ME] - before[1] == 1


def test_5xx_burst_is_retryable_after_small_budget(site: Site):
    backend = site.backend(site.client_provider(), max_retries=2, max_retry_sleep=0.05)
    backend.poll(ME, [])  # no ids: no call at all
    backend.new_submission_id(ME)
    site.emu.reset_calls()
    site.emu.fail_requests(503, count=10, path_prefix="/v0.10/task_list")
    t0 = time.monotonic()
    with pytest.raises(RetryableError, match="503"):
        backend.poll(ME, [str(uuid.uuid4())])
    assert time.monotonic() - t0 < 1.0
    assert site.emu.count_calls("/v0.10/task_list") == 3  # 1 + max_retries
    backend.close()


def test_network_error_is_retryable(site: Site):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    backend = GlobusBackend(credentials=site.client_provider(),
                            transfer_url=f"http://127.0.0.1:{port}/", max_retry_sleep=0.01)
    with pytest.raises(RetryableError, match="network"):
        backend.new_submission_id(ME)


# -- fatal --------------------------------------------------------------------------------


def test_failed_task_is_fatal_with_globus_code(site: Site, cc: GlobusBackend):
    site.emu.set_rate(10_000)
    site.write_src("in/big.dat", 1_000_000)
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME)))
    site.emu.fail_task(res.task_id, code="ENDPOINT_ERROR", description="disk on fire")
    report = cc.poll(ME, [res.task_id])[res.task_id]
    assert report.outcome is Outcome.FATAL and report.status == "FAILED"
    assert report.fatal_code == "ENDPOINT_ERROR" and "disk on fire" in report.message


def test_canceled_task_is_fatal_and_second_cancel_is_quiet(site: Site, cc: GlobusBackend):
    site.emu.set_rate(10_000)
    site.write_src("in/big.dat", 1_000_000)
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME)))
    cc.cancel(ME, res.task_id)
    site.emu.wait_for_status(res.task_id, "FAILED")
    report = cc.poll(ME, [res.task_id])[res.task_id]
    assert report.outcome is Outcome.FATAL and report.fatal_code == "CANCELED"
    cc.cancel(ME, res.task_id)  # TaskComplete: no error


def test_deadline_expired_is_fatal(site: Site, cc: GlobusBackend):
    site.emu.set_rate(10_000)
    site.write_src("in/big.dat", 1_000_000)
    deadline = dt.datetime.fromtimestamp(site.emu.now() + 60, tz=dt.timezone.utc)
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME), deadline=deadline))
    site.emu.advance_clock(120)
    site.emu.wait_for_status(res.task_id, "FAILED")
    report = cc.poll(ME, [res.task_id])[res.task_id]
    assert report.outcome is Outcome.FATAL and report.fatal_code == "EXPIRED"


def test_missing_source_reports_fatal_code_while_running(site: Site, cc: GlobusBackend):
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME),
                                  items=[TransferItem("/nope/x.dat", "/out/x.dat")]))
    report = _poll_until(cc, res.task_id, lambda r: r.faults >= 2)
    assert report.outcome is Outcome.RUNNING and report.status == "ACTIVE"
    assert report.fatal_code == "FILE_NOT_FOUND" and report.nice_status == "FILE_NOT_FOUND"
    assert "FILE_NOT_FOUND" in cc.explain(ME, res.task_id)
    assert "\n" not in cc.explain(ME, res.task_id)
    cc.cancel(ME, res.task_id)


def test_transient_fault_stays_running_without_fatal_code(site: Site, cc: GlobusBackend):
    backend = site.backend(cc.credentials, fault_codes_fatal=frozenset())
    res = backend.submit(ME, site.spec(backend.new_submission_id(ME),
                                       items=[TransferItem("/nope/x.dat", "/out/x.dat")]))
    report = _poll_until(backend, res.task_id, lambda r: r.faults >= 1)
    assert report.outcome is Outcome.RUNNING and report.fatal_code is None
    assert report.nice_status == "FILE_NOT_FOUND"
    backend.cancel(ME, res.task_id)


def test_paused_collection_keeps_task_running(site: Site, cc: GlobusBackend):
    site.emu.set_rate(10_000)
    site.write_src("in/big.dat", 1_000_000)
    site.emu.pause_collection(site.src_id)
    res = cc.submit(ME, site.spec(cc.new_submission_id(ME)))
    report = _poll_until(cc, res.task_id, lambda r: "paused" in r.message)
    assert report.outcome is Outcome.RUNNING and report.fatal_code is None
    assert report.bytes_transferred == 0
    cc.cancel(ME, res.task_id)


def test_other_4xx_is_fatal_with_globus_message(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat")
    spec = site.spec(cc.new_submission_id(ME))
    site.emu.fail_requests(400, count=1, path_prefix="/v0.10/transfer", method="POST",
                           code="ClientError.BadRequest")
    with pytest.raises(FatalError, match="ClientError.BadRequest"):
        cc.submit(ME, spec)
    with pytest.raises(FatalError, match="NotFound|not found"):
        cc.get_task(ME, str(uuid.uuid4()))


def test_spec_without_items_or_submission_id_is_fatal_without_a_call(site: Site, cc):
    spec = site.spec("", items=[TransferItem("/a", "/b")])
    with pytest.raises(FatalError, match="submission id"):
        cc.submit(ME, spec)
    assert site.emu.count_calls("/v0.10/transfer") == 0


# -- idempotency ------------------------------------------------------------------------------


def test_lost_answer_resubmit_same_id_gives_one_task(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat")
    sid = cc.new_submission_id(ME)          # persisted by the caller ...
    first = cc.submit(ME, site.spec(sid))   # ... crash before the task id is recorded
    again = cc.submit(ME, site.spec(sid))   # next cycle resubmits the same id
    assert again.task_id == first.task_id and again.duplicate
    assert len(site.emu.tasks) == 1


def test_conflict_adopts_the_active_task(site: Site, cc: GlobusBackend):
    site.emu.set_rate(10_000)
    site.write_src("in/big.dat", 1_000_000)
    first = cc.submit(ME, site.spec(cc.new_submission_id(ME)))
    other = cc.submit(ME, site.spec(cc.new_submission_id(ME)))
    assert other.adopted and other.task_id == first.task_id and not other.duplicate
    assert len(site.emu.tasks) == 1
    assert cc.find_active_task(ME, site.spec("x", label="another label")) is None
    cc.cancel(ME, first.task_id)


# -- batched poll ---------------------------------------------------------------------------------


def test_poll_1100_tasks_uses_two_task_list_calls(site: Site, cc: GlobusBackend):
    ids = site.emu.add_finished_tasks(site.identity_id, 1100, source_collection=site.src_id,
                                      destination_collection=site.dst_id)
    cc.new_submission_id(ME)
    site.emu.reset_calls()
    calls_before = cc.calls[ME]
    invisible = str(uuid.uuid4())
    reports = cc.poll(ME, ids + [invisible])
    assert site.emu.count_calls("/v0.10/task_list") == 2
    assert cc.calls[ME] - calls_before == 2
    assert set(reports) == set(ids)  # the unknown id is absent, not an error
    assert all(r.outcome is Outcome.DONE for r in reports.values())


def test_poll_does_not_see_other_identities_tasks(site: Site, cc: GlobusBackend):
    bob = site.emu.add_identity("bob@example.org")
    theirs = site.emu.add_finished_tasks(bob, 3, source_collection=site.src_id,
                                         destination_collection=site.dst_id)
    assert cc.poll(ME, theirs) == {}


def test_client_credentials_provider_is_a_credential_provider(site: Site):
    provider = site.client_provider()
    assert isinstance(provider, ClientCredentialsProvider)
    assert "globus-staging" not in provider.login_action(ME)
