"""Globus semantics the agent relies on (issue 11, points 1 and 3), through the
real globus-sdk over HTTP against the emulator: skipped errors and their
paging, sync-skipped files, fail-fast evidence from the event list, endpoint
errors, foreign 409 conflicts, administrators' cancels.  Sources:
docs/globus-fidelity.md, "Tasks, items and errors"."""
from __future__ import annotations

import os
import time

import pytest

from pbs_globus_staging.backend import EndpointTrouble, Outcome, SubmitConflict, TransferItem
from pbs_globus_staging.errors import RetryableError
from pbs_globus_staging.globus_backend import DEFAULT_FATAL_FAULTS, GlobusBackend

from globus_setup import Site, site  # noqa: F401  (fixture)

ME = "alice"

# The keys of a skipped_error document as Globus answers it (globus-cli
# tests/files/api_fixtures/skipped_error_list.yaml).
SKIPPED_ERROR_KEYS = {"DATA_TYPE", "checksum_algorithm", "destination_path", "error_code",
                      "error_details", "error_time", "external_checksum",
                      "is_delete_destination_extra", "is_directory", "is_symlink",
                      "source_path"}


@pytest.fixture
def cc(site: Site):
    backend = site.backend(site.client_provider())
    yield backend
    backend.close()


def _submit(cc: GlobusBackend, site: Site, **kw):
    return cc.submit(ME, site.spec(cc.new_submission_id(ME), **kw))


def test_skipped_errors_inside_a_recursive_item_all_pages(site: Site, cc: GlobusBackend):
    """150 paths skipped inside one recursive item: every one is listed (two
    pages, following next_marker), each with Globus's document shape, and the
    task says so with a SKIPPED_ERRORS event; the readable file arrives."""
    site.write_src("in/ok.dat", 100)
    for n in range(150):
        site.write_src(f"in/bad/f{n:03}.dat", 10)
        site.emu.make_ambiguous(site.src_id, f"/in/bad/f{n:03}.dat")
    res = _submit(cc, site, skip_source_errors=True)
    site.emu.wait_for_status(res.task_id, "SUCCEEDED")
    skipped = cc.skipped_errors(ME, res.task_id)
    assert len(skipped) == 150
    assert {s.error_code for s in skipped} == {"AMBIGUOUS_PATH"}
    assert sorted(s.source_path for s in skipped)[0] == "/in/bad/f000.dat"
    assert site.emu.count_calls(f"/v0.10/task/{res.task_id}/skipped_errors") == 2
    raw = site.emu.tasks[res.task_id].skipped_errors[0]
    assert set(raw) == SKIPPED_ERROR_KEYS
    events = [e["code"] for e in site.emu.tasks[res.task_id].events]
    assert "SKIPPED_ERRORS" in events
    assert (site.dst_dir / "out/ok.dat").exists()
    assert not (site.dst_dir / "out/bad/f000.dat").exists()
    doc = site.emu.task_doc(res.task_id)
    assert doc["subtasks_skipped_errors"] == 150 and doc["files_transferred"] == 1


def test_ambiguous_subdirectory_is_skipped_and_listed(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat", 10)
    site.write_src("in/sub/b.dat", 10)
    site.emu.make_ambiguous(site.src_id, "/in/sub")
    res = _submit(cc, site, skip_source_errors=True)
    site.emu.wait_for_status(res.task_id, "SUCCEEDED")
    (err,) = cc.skipped_errors(ME, res.task_id)
    assert (err.source_path, err.error_code, err.is_directory) == ("/in/sub", "AMBIGUOUS_PATH",
                                                                   True)


def test_without_skip_source_errors_an_unreadable_path_inside_retries(site: Site,
                                                                      cc: GlobusBackend):
    """Never dropped silently: without skip_source_errors the item retries
    (faults grow), the task does not succeed without it."""
    site.write_src("in/a.dat", 10)
    site.write_src("in/sub/b.dat", 10)
    site.emu.make_ambiguous(site.src_id, "/in/sub/b.dat")
    res = _submit(cc, site)
    end = time.monotonic() + 5
    while site.emu.task_doc(res.task_id)["faults"] < 2:
        assert time.monotonic() < end, "no retries seen"
        time.sleep(0.05)
    assert site.emu.tasks[res.task_id].status == "ACTIVE"
    assert cc.fatal_fault(ME, res.task_id) is None          # AMBIGUOUS_PATH: not fatal-kind


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 directory anyway")
def test_unreadable_subdirectory_is_a_skipped_error(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat", 10)
    site.write_src("in/locked/b.dat", 10)
    (site.src_dir / "in/locked").chmod(0)
    try:
        res = _submit(cc, site, skip_source_errors=True)
        site.emu.wait_for_status(res.task_id, "SUCCEEDED")
        (err,) = cc.skipped_errors(ME, res.task_id)
        assert (err.source_path, err.error_code) == ("/in/locked", "PERMISSION_DENIED")
    finally:
        (site.src_dir / "in/locked").chmod(0o755)


def test_sync_skipped_files_are_not_successful_transfers(site: Site, cc: GlobusBackend):
    """globus-sdk's task_successful_transfers docstring: files skipped by a
    sync are not listed -- which is why the agent cannot use that list."""
    src = site.write_src("in/a.dat", 100)
    (site.dst_dir / "out").mkdir()
    (site.dst_dir / "out/a.dat").write_bytes(src.read_bytes())
    res = _submit(cc, site, sync_level="checksum", skip_source_errors=True)
    site.emu.wait_for_status(res.task_id, "SUCCEEDED")
    assert cc.successful_paths(ME, res.task_id) == []
    assert cc.skipped_errors(ME, res.task_id) == []
    assert site.emu.task_doc(res.task_id)["files_skipped"] == 1


def test_fatal_fault_is_read_from_events_when_nice_status_expired(site: Site,
                                                                  cc: GlobusBackend):
    site.emu.set_nice_status_window(0.0)
    res = _submit(cc, site, items=(TransferItem("/nope.dat", "/out/nope.dat"),))
    end = time.monotonic() + 5
    while site.emu.task_doc(res.task_id)["faults"] < 1:
        assert time.monotonic() < end
        time.sleep(0.05)
    report = cc.poll(ME, [res.task_id])[res.task_id]
    assert report.nice_status in ("OK", "Queued") and report.fatal_code is None
    assert site.emu.task_doc(res.task_id)["nice_status_expires_in"] == -1
    code, text = cc.fatal_fault(ME, res.task_id)
    assert code == "FILE_NOT_FOUND" and "/nope.dat" in text


def test_fatal_fault_codes_as_globus_names_them():
    assert {"INVALID_PATH_NAME", "IS_A_DIRECTORY", "NOT_A_DIRECTORY"} <= DEFAULT_FATAL_FAULTS
    assert "INVALID_PATH" not in DEFAULT_FATAL_FAULTS


def test_invalid_path_name_fault(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat", 10)
    res = _submit(cc, site, items=(TransferItem("/in/a.dat", "/out/" + "x" * 300),))
    end = time.monotonic() + 5
    while True:
        found = cc.fatal_fault(ME, res.task_id)
        if found:
            break
        assert time.monotonic() < end
        time.sleep(0.05)
    assert found[0] == "INVALID_PATH_NAME"


def test_endpoint_error_5xx_is_not_retried_and_not_an_outage(site: Site, cc: GlobusBackend):
    site.write_src("in/a.dat", 10)
    sid = cc.new_submission_id(ME)
    site.emu.fail_requests(502, path_prefix="/v0.10/transfer", method="POST",
                           code="ExternalError.DirListingFailed.Connect", count=5)
    with pytest.raises(EndpointTrouble, match="ExternalError"):
        cc.submit(ME, site.spec(sid))
    assert site.emu.count_calls("/v0.10/transfer", "POST") == 1      # the SDK did not retry
    site.emu.reset_calls()
    site.emu._failures.clear()
    site.emu.fail_requests(502, path_prefix="/v0.10/transfer", method="POST", count=5)
    with pytest.raises(RetryableError) as info:
        cc.submit(ME, site.spec(sid))
    assert not isinstance(info.value, EndpointTrouble)
    assert site.emu.count_calls("/v0.10/transfer", "POST") == 1 + cc.max_retries  # retried


def test_conflict_with_one_foreign_task_adopts_it(site: Site, cc: GlobusBackend):
    site.emu.set_rate(0)
    site.write_src("in/a.dat", 10)
    web = _submit(cc, site, label="moved from the web app")
    mine = _submit(cc, site, label="PBS 1.srv stage-in [c:0123456789ab]")
    assert mine.adopted and mine.foreign and mine.task_id == web.task_id


def test_conflict_with_several_foreign_tasks_is_a_submit_conflict(site: Site,
                                                                  cc: GlobusBackend):
    site.emu.set_rate(0)
    site.write_src("in/a.dat", 10)
    site.write_src("other/b.dat", 10)
    _submit(cc, site, label="web app 1")
    _submit(cc, site, label="web app 2",
            items=(TransferItem("/other/", "/elsewhere/", recursive=True),))
    with pytest.raises(SubmitConflict, match="identical paths"):
        _submit(cc, site, label="PBS 1.srv stage-in [c:0123456789ab]")


def test_canceled_by_admin_carries_the_admins_message(site: Site, cc: GlobusBackend):
    site.emu.set_rate(0)
    site.write_src("in/a.dat", 10)
    res = _submit(cc, site)
    site.emu.admin_cancel(res.task_id, "storage maintenance until Monday",
                          side="DESTINATION")
    doc = site.emu.task_doc(res.task_id)
    assert doc["canceled_by_admin"] == "DESTINATION" and doc["fatal_error"]["code"] == "CANCELED"
    report = cc.get_task(ME, res.task_id)
    assert report.outcome is Outcome.FATAL and report.fatal_code == "CANCELED_BY_ADMIN"
    assert "storage maintenance until Monday" in report.message
    assert "destination" in report.message


def test_paused_task_reads_paused(site: Site, cc: GlobusBackend):
    site.emu.set_rate(0)
    site.write_src("in/a.dat", 10)
    res = _submit(cc, site)
    site.emu.pause_collection(site.src_id)
    end = time.monotonic() + 5
    while not site.emu.task_doc(res.task_id)["is_paused"]:
        assert time.monotonic() < end
        time.sleep(0.05)
    assert cc.get_task(ME, res.task_id).nice_status == "PAUSED"
