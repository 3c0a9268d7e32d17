"""What the Globus backend reads about tasks: batched polls, task documents
classified into ``TaskReport`` (the table in ``globus_backend``'s docstring),
event lists, skipped errors and successful paths."""
from __future__ import annotations

import collections
import typing as t

import globus_sdk
from globus_sdk import TransferClient

from .backend import SkippedError, TaskReport
from .credentials import CredentialProvider
from .globus_errors import _one_line, todo
from .states import GlobusStatus, Outcome

# Event codes as Globus names them (docs.globus.org/api/transfer/task_events,
# and Globus's list of event codes: INVALID_PATH_NAME, not INVALID_PATH).
DEFAULT_FATAL_FAULTS: frozenset[str] = frozenset({
    "FILE_NOT_FOUND",
    "PERMISSION_DENIED",
    "QUOTA_EXCEEDED",
    "NO_SPACE_LEFT",
    "FILE_SIZE_CHANGED",
    "INVALID_PATH_NAME",
    "IS_A_DIRECTORY",
    "NOT_A_DIRECTORY",
})
EVENT_PAGE = 100
_HEALTHY = frozenset({"OK", "QUEUED"})
POLL_CHUNK = 1000

Call = t.Callable[..., t.Any]   # GlobusBackend._call: (identity, what, fn, **kw) -> answer


def _int(value: t.Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _float(value: t.Any) -> float:
    try:
        return float(value or 0.0)
    except (TypeError, ValueError):
        return 0.0


class TaskReader:
    """Reads tasks through the backend's ``call`` (which counts and maps errors)."""

    def __init__(self, call: Call, *, calls: collections.Counter[str],
                 credentials: CredentialProvider, fault_codes_fatal: t.AbstractSet[str],
                 poll_chunk_size: int) -> None:
        self._call = call
        self.calls = calls
        self.credentials = credentials
        self.fault_codes_fatal = fault_codes_fatal
        self.poll_chunk_size = poll_chunk_size

    def poll(self, identity: str, task_ids: t.Sequence[str]) -> t.Mapping[str, TaskReport]:
        wanted = list(dict.fromkeys(str(tid) for tid in task_ids))
        result: dict[str, TaskReport] = {}
        for start in range(0, len(wanted), self.poll_chunk_size):
            chunk = wanted[start:start + self.poll_chunk_size]
            chunk_set = set(chunk)
            for doc in self.task_list(identity, {"task_id": chunk}):
                tid = doc.get("task_id")
                if tid in chunk_set:
                    result[tid] = self.classify(identity, doc)
        return result

    def task_list(self, identity: str, filt: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
        """All task documents matching ``filt``, paging with offset when a page is full."""
        offset = 0
        limit = POLL_CHUNK
        while True:
            page = self._call(
                identity, "task_list",
                lambda c, o=offset: c.task_list(filter=filt, limit=limit, offset=o),
            )
            docs = [d for d in (page.get("DATA") or []) if isinstance(d, dict)]
            yield from docs
            offset += len(docs)
            more = page.get("has_next_page")
            if not isinstance(more, bool):
                total = page.get("total")
                more = offset < total if isinstance(total, int) else len(docs) >= limit
            if not docs or not more:
                return

    def classify(self, identity: str, doc: t.Mapping[str, t.Any]) -> TaskReport:
        """A task document -> TaskReport (see the table in the module docstring)."""
        status = str(doc.get("status") or "")
        nice = doc.get("nice_status")
        nice = str(nice) if nice else None
        common = dict(
            task_id=str(doc.get("task_id") or ""),
            status=status,
            nice_status=nice,
            files=_int(doc.get("files")),
            files_transferred=_int(doc.get("files_transferred")),
            files_skipped=_int(doc.get("files_skipped")),
            bytes_transferred=_int(doc.get("bytes_transferred")),
            bytes_per_second=_float(doc.get("effective_bytes_per_second")),
            faults=_int(doc.get("faults")),
            label=str(doc.get("label") or ""),
            owner_id=str(doc.get("owner_id") or ""),
            completion_time=doc.get("completion_time") or None,
            skipped_errors=None if doc.get("subtasks_skipped_errors") is None
            else _int(doc.get("subtasks_skipped_errors")),
        )
        if status == GlobusStatus.SUCCEEDED:
            return TaskReport(outcome=Outcome.DONE, **common)
        if status == GlobusStatus.FAILED:
            fatal = doc.get("fatal_error") if isinstance(doc.get("fatal_error"), dict) else {}
            code = str(fatal.get("code") or GlobusStatus.FAILED)
            if doc.get("canceled_by_admin"):
                # An activity manager of a collection canceled it (task document
                # fields canceled_by_admin / canceled_by_admin_message).
                side = str(doc.get("canceled_by_admin")).lower()
                words = _one_line(doc.get("canceled_by_admin_message") or "no reason given")
                return TaskReport(
                    outcome=Outcome.FATAL, fatal_code="CANCELED_BY_ADMIN",
                    message=f"canceled by an administrator of the {side} collection: {words}",
                    **common,
                )
            return TaskReport(
                outcome=Outcome.FATAL, fatal_code=code,
                message=_one_line(fatal.get("description") or f"task {code.lower()}"),
                **common,
            )
        if status == GlobusStatus.INACTIVE:
            action = self.credentials.login_action(identity)
            return TaskReport(
                outcome=Outcome.WAITING_FOR_USER, action=action,
                message=("Globus suspended the task: the credentials of "
                         f"{self.credentials.describe(identity)} expired; {todo(action)}"),
                **common,
            )
        fatal_code = None
        message = ""
        if nice and nice.upper() not in _HEALTHY:
            short = _one_line(doc.get("nice_status_short_description") or nice)
            message = f"{nice}: {short}" if short != nice else nice
            if nice.upper() in self.fault_codes_fatal:
                fatal_code = nice
        if doc.get("is_paused"):
            # A paused task holds no Globus slot (task_behavior: Queuing); the
            # journal keeps PAUSED so the agent does not count it as one.
            common["nice_status"] = "PAUSED"
            fatal_code = None
            message = message or "paused by an activity manager of one of the collections"
        if status != GlobusStatus.ACTIVE and not nice:
            common["nice_status"] = status or None
        return TaskReport(outcome=Outcome.RUNNING, fatal_code=fatal_code, message=message,
                          **common)

    def get_task(self, identity: str, task_id: str) -> TaskReport:
        doc = self._call(identity, "get_task", lambda c: c.get_task(task_id))
        return self.classify(identity, doc.data if hasattr(doc, "data") else doc)

    def explain(self, identity: str, task_id: str) -> str:
        """Globus's own words for what is wrong: the latest error event, one line."""
        page = self._call(identity, "task_event_list",
                          lambda c: c.task_event_list(task_id, limit=25))
        for event in page.get("DATA") or []:  # newest first
            if isinstance(event, dict) and event.get("is_error"):
                code = str(event.get("code") or "ERROR")
                text = f"{code}: {event.get('description') or ''}".rstrip(": ")
                details = event.get("details")
                if details:
                    text += f" ({_one_line(details, 200)})"
                return _one_line(text)
        return ""

    def skipped_errors(self, identity: str, task_id: str) -> t.Sequence[SkippedError]:
        """Every path Globus skipped under skip_source_errors, all pages (the
        SDK's NullableMarkerPaginator follows ``next_marker`` until null)."""
        found: list[SkippedError] = []

        def fetch(c: TransferClient) -> None:
            for page in c.paginated.task_skipped_errors(task_id):
                self.calls[identity] += 1
                for doc in page.get("DATA") or []:
                    if isinstance(doc, dict):
                        found.append(SkippedError(
                            source_path=str(doc.get("source_path") or ""),
                            destination_path=str(doc.get("destination_path") or ""),
                            error_code=str(doc.get("error_code") or "SKIPPED"),
                            is_directory=bool(doc.get("is_directory")),
                            error_details=_one_line(doc.get("error_details"), 200)))

        self._call(identity, "task_skipped_errors", fetch)
        self.calls[identity] -= 1   # counted per page above
        return found

    def fatal_fault(self, identity: str, task_id: str) -> t.Optional[t.Tuple[str, str]]:
        """(code, text) of the task's newest error event when its code is fatal.

        Read from the event list, not nice_status: Globus shows an error in
        nice_status only for nice_status_expires_in seconds, and between retries
        it may read OK or Queued."""
        page = self._call(identity, "task_event_list",
                          lambda c: c.task_event_list(task_id, limit=EVENT_PAGE))
        for event in page.get("DATA") or []:  # newest first
            if not isinstance(event, dict) or not event.get("is_error"):
                continue
            code = str(event.get("code") or "").upper()
            if code not in self.fault_codes_fatal:
                return None
            text = f"{code}: {event.get('description') or ''}".rstrip(": ")
            details = event.get("details")
            if details:
                text += f" ({_one_line(details, 200)})"
            return code, _one_line(text)
        return None

    def successful_paths(self, identity: str, task_id: str) -> t.Sequence[t.Tuple[str, str]]:
        paths: list[tuple[str, str]] = []
        marker: t.Any = globus_sdk.MISSING
        while True:
            page = self._call(
                identity, "task_successful_transfers",
                lambda c, m=marker: c.task_successful_transfers(task_id, marker=m),
            )
            for item in page.get("DATA") or []:
                if isinstance(item, dict):
                    paths.append((str(item.get("source_path") or ""),
                                  str(item.get("destination_path") or "")))
            marker = page.get("next_marker")
            if not marker:
                return paths
