"""How the Globus backend starts and stops tasks: submission ids, the submit
document, Duplicate and 409 Conflict (adopt the task already moving the same
data), cancel."""
from __future__ import annotations

import datetime as _dt
import logging
import re
import typing as t

import globus_sdk
from globus_sdk import TransferData

from .backend import SubmitConflict, SubmitResult, TransferSpec
from .errors import FatalError, RetryableError
from .globus_errors import TransferErrors
from .globus_poll import Call
from .states import GLOBUS_LIVE

_CONTENT_TAG = re.compile(r"\[c:[0-9a-f]{12}\]")
MAX_LABEL = 128

log = logging.getLogger("pbs_globus_staging.globus_backend")


def sanitize_label(label: str) -> str:
    """Globus labels: at most 128 characters, no newlines, no outer spaces."""
    text = " ".join("".join(" " if not c.isprintable() else c for c in label or "").split())
    return text[:MAX_LABEL].strip()


def _deadline_text(deadline: _dt.datetime) -> str:
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=_dt.timezone.utc)
    return deadline.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


class Submitter:
    """Submits and cancels through the backend's ``call``; ``task_list`` finds
    the active task a 409 Conflict is about."""

    def __init__(self, call: Call, *, errors: TransferErrors,
                 task_list: t.Callable[[str, dict], t.Iterator[dict]]) -> None:
        self._call = call
        self.errors = errors
        self.task_list = task_list

    def new_submission_id(self, identity: str) -> str:
        res = self._call(identity, "get_submission_id", lambda c: c.get_submission_id())
        value = res.get("value")
        if not isinstance(value, str) or not value:
            raise RetryableError("Globus get_submission_id: answer had no value; will retry")
        return value

    def transfer_data(self, spec: TransferSpec) -> TransferData:
        """The submit document for ``spec`` (public for tests and dry runs)."""
        if not spec.items:
            raise FatalError("transfer has no items")
        if not spec.submission_id:
            # Letting the SDK fetch one here would defeat idempotency.
            raise FatalError("transfer has no submission id (persist one first)")
        kwargs: dict[str, t.Any] = {
            "submission_id": spec.submission_id,
            "verify_checksum": bool(spec.verify_checksum),
            "skip_source_errors": bool(spec.skip_source_errors),
            "preserve_timestamp": bool(spec.preserve_timestamp),
            # The agent reports through job comments and alerts; a Globus mail
            # per finished stage-in would be noise.  INACTIVE still mails: the
            # user must act on it.
            "notify_on_succeeded": False,
            "notify_on_failed": False,
        }
        label = sanitize_label(spec.label)
        if label:
            kwargs["label"] = label
        if spec.sync_level:
            if spec.sync_level not in ("exists", "size", "mtime", "checksum"):
                raise FatalError(
                    f"sync level {spec.sync_level!r}: expected exists, size, mtime or checksum"
                )
            kwargs["sync_level"] = spec.sync_level
        if spec.deadline is not None:
            kwargs["deadline"] = _deadline_text(spec.deadline)
        data = TransferData(spec.source_collection, spec.destination_collection, **kwargs)
        for item in spec.items:
            data.add_item(item.source_path, item.destination_path, recursive=item.recursive)
        return data

    def submit(self, identity: str, spec: TransferSpec) -> SubmitResult:
        data = self.transfer_data(spec)
        collections = [spec.source_collection, spec.destination_collection]

        def conflict_or_duplicate(err: globus_sdk.GlobusAPIError) -> bool:
            return err.http_status == 409 or err.code == "Duplicate"

        try:
            res = self._call(
                identity, "submit_transfer", lambda c: c.submit_transfer(data),
                collections=collections, passthrough=conflict_or_duplicate,
            )
        except globus_sdk.GlobusAPIError as err:
            raw = err.raw_json if isinstance(err.raw_json, dict) else {}
            if err.code == "Duplicate" and isinstance(raw.get("task_id"), str):
                return SubmitResult(task_id=raw["task_id"], duplicate=True)
            if err.http_status == 409 and err.code in ("Conflict", "ClientError.Conflict"):
                task_id = self.find_active_task(identity, spec)
                if task_id:
                    log.info("submit for %s: Conflict; adopting active task %s", identity, task_id)
                    return SubmitResult(task_id=task_id, adopted=True)
                # Globus refuses identical paths only among the submitter's own
                # active tasks: if exactly one active task of this identity runs
                # between these two collections, it is the one moving these paths.
                foreign = self.active_between(identity, spec)
                if len(foreign) == 1:
                    log.info("submit for %s: Conflict; adopting task %s started elsewhere",
                             identity, foreign[0])
                    return SubmitResult(task_id=foreign[0], adopted=True, foreign=True)
                raise SubmitConflict(
                    "Globus refused the transfer: a transfer with identical paths, started "
                    "outside PBS (web app, CLI or an older agent), is still active"
                    + (f" (one of tasks {', '.join(foreign[:5])})" if foreign else "")
                    + "; this request waits until it ends") from None
            self.errors.raise_transfer(identity, "submit_transfer", err, collections)
        task_id = res.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise RetryableError("Globus submit_transfer: answer had no task_id; will retry")
        return SubmitResult(task_id=task_id, duplicate=res.get("code") == "Duplicate")

    def active_between(self, identity: str, spec: TransferSpec) -> list[str]:
        src, dst = spec.source_collection.lower(), spec.destination_collection.lower()
        return [str(doc.get("task_id")) for doc in self.task_list(
            identity, {"type": ["TRANSFER"], "status": list(GLOBUS_LIVE)})
            if str(doc.get("source_endpoint_id") or "").lower() == src
            and str(doc.get("destination_endpoint_id") or "").lower() == dst]

    def cancel(self, identity: str, task_id: str) -> None:
        def done_already(err: globus_sdk.GlobusAPIError) -> bool:
            return err.code == "TaskComplete"

        try:
            res = self._call(identity, "cancel_task", lambda c: c.cancel_task(task_id),
                             passthrough=done_already)
        except globus_sdk.GlobusAPIError:
            return  # TaskComplete: nothing left to cancel
        log.info("cancel %s for %s: %s", task_id, identity, res.get("code"))

    def find_active_task(self, identity: str, spec: TransferSpec) -> t.Optional[str]:
        """An ACTIVE/INACTIVE transfer of this identity with the same collections
        and label -- what a 409 Conflict means (Globus does not list a task's
        items, so the label, which the agent makes unique per request, stands in
        for the paths).  The newest wins if several match."""
        label = sanitize_label(spec.label)
        # The agent tags each label with a hash of the task's items ("[c:...]"):
        # the same data requested again by another job has another job id in
        # its label but the same tag, and that is what 409 Conflict is about.
        tag = _CONTENT_TAG.search(label)
        src, dst = spec.source_collection.lower(), spec.destination_collection.lower()
        best: tuple[str, str] | None = None
        for doc in self.task_list(
            identity, {"type": ["TRANSFER"], "status": list(GLOBUS_LIVE)}
        ):
            if (
                str(doc.get("source_endpoint_id") or "").lower() == src
                and str(doc.get("destination_endpoint_id") or "").lower() == dst
                and (tag.group(0) in str(doc.get("label") or "") if tag
                     else str(doc.get("label") or "") == label)
                and doc.get("status") in GLOBUS_LIVE
            ):
                key = (str(doc.get("request_time") or ""), str(doc.get("task_id")))
                if best is None or key > best:
                    best = key
        return best[1] if best else None
