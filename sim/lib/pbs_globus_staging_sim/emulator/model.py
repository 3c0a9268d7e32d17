"""The emulator's state objects and the JSON documents Globus would render from them.

Field names and value semantics follow the Transfer API task document
(``reference/globus-transfer.md``, "Fields clients use") and globus-sdk's canned
payloads, so that code tested here behaves the same against Globus.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import secrets
import string
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ACTIVE = "ACTIVE"
INACTIVE = "INACTIVE"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
FINAL_STATUSES = frozenset({SUCCEEDED, FAILED})

TRANSFER_RS = "transfer.api.globus.org"
AUTH_RS = "auth.globus.org"
TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"

SYNC_LEVELS = {"exists": 0, "size": 1, "mtime": 2, "checksum": 3}

# Short descriptions Globus shows next to nice_status codes.
NICE_DESCRIPTIONS = {
    "OK": "OK",
    "Queued": "Queued",
    "FILE_NOT_FOUND": "No such file or directory",
    "PERMISSION_DENIED": "Permission denied",
    "NO_CREDENTIALS": "No credentials",
    "AUTH": "Authentication failed",
    "IS_A_DIRECTORY": "Path is a directory",
    "NOT_A_DIRECTORY": "Path is not a directory",
    "NO_SPACE_LEFT": "No space left on device",
    "QUOTA_EXCEEDED": "Quota exceeded",
    "ENDPOINT_ERROR": "Endpoint error",
    "CONNECT_FAILED": "Could not connect to server",
}


def data_access_scope(collection_id: str) -> str:
    return (f"{TRANSFER_SCOPE}[*https://auth.globus.org/scopes/"
            f"{collection_id}/data_access]")


def new_request_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(9))


def iso(ts: Optional[float]) -> Optional[str]:
    """Globus's timestamp form: ``2021-09-02T18:04:49+00:00``."""
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(int(ts), _dt.timezone.utc).isoformat()


@dataclasses.dataclass
class Collection:
    collection_id: str
    name: str
    directory: Path
    paused: bool = False
    # What the Transfer endpoint document says (globus-cli endpointish/entity_type.py
    # lists the values).  Consent and policy checks follow from them: see auth.py.
    entity_type: str = "GCSv5_mapped_collection"
    high_assurance: bool = False
    # Globus Auth policy ids the collection's authentication policy names.
    required_policies: Tuple[str, ...] = ()


@dataclasses.dataclass
class Identity:
    identity_id: str
    username: str


@dataclasses.dataclass(frozen=True)
class Grant:
    collection_id: str
    path_prefix: str
    write: bool


@dataclasses.dataclass
class Client:
    client_id: str
    secret: Optional[str]            # None: a public (native) client
    identity_id: Optional[str]       # the identity a confidential client acts as


@dataclasses.dataclass
class AccessToken:
    token: str
    identity_id: str
    client_id: str
    scope: str
    resource_server: str
    expires_at: float
    revoked: bool = False
    # Auth policies the login session behind this token satisfied (see auth.py).
    session_policies: Tuple[str, ...] = ()


@dataclasses.dataclass
class RefreshToken:
    token: str
    identity_id: str
    client_id: str
    scope: str
    resource_server: str
    revoked: bool = False
    session_policies: Tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: Dict[str, str]
    identity_id: Optional[str]
    status: int


@dataclasses.dataclass
class FileJob:
    """One file of an item, copied in chunks so a slow rate shows progress."""

    src: Path
    dst: Path
    src_display: str
    dst_display: str
    size: int
    offset: int = 0
    started: bool = False
    done: bool = False
    skipped: bool = False            # a source error skipped under skip_source_errors


@dataclasses.dataclass
class Item:
    source_path: str
    destination_path: str
    recursive: bool
    state: str = "pending"          # pending -> expanded -> done | skipped
    files: List[FileJob] = dataclasses.field(default_factory=list)
    retry_at: float = 0.0
    fault_code: Optional[str] = None   # set while the item is backing off from an error
    fault_time: float = 0.0


@dataclasses.dataclass
class Task:
    task_id: str
    owner_id: str
    owner_username: str
    submission_id: str
    label: Optional[str]
    source_endpoint_id: str
    destination_endpoint_id: str
    source_display_name: str
    destination_display_name: str
    request_time: float
    deadline: float
    explicit_deadline: bool
    items: List[Item]
    sync_level: Optional[int] = None
    verify_checksum: bool = False
    preserve_timestamp: bool = False
    encrypt_data: bool = False
    skip_source_errors: bool = False
    fail_on_quota_errors: bool = False
    delete_destination_extra: bool = False
    filter_rules: Optional[List[Dict[str, Any]]] = None
    status: str = ACTIVE
    completion_time: Optional[float] = None
    fatal_error: Optional[Dict[str, str]] = None
    is_paused: bool = False
    queued: bool = True
    started: bool = False
    faults: int = 0
    files: int = 0
    directories: int = 0
    files_transferred: int = 0
    files_skipped: int = 0
    bytes_transferred: int = 0
    bytes_checksummed: int = 0
    subtasks_total: int = 0
    subtasks_succeeded: int = 0
    subtasks_failed: int = 0
    subtasks_canceled: int = 0
    subtasks_expired: int = 0
    subtasks_skipped_errors: int = 0
    inactive_reason: Optional[str] = None
    carry: float = 0.0               # fractional byte budget left from the last tick
    events: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    successful: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    skipped_errors: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    # Files a sync_level found up to date (not in successful_transfers, as
    # Globus): kept for the invariant checker's evidence of arrival.
    sync_skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    canceled_by_admin: Optional[str] = None          # SOURCE | DESTINATION | BOTH
    canceled_by_admin_message: Optional[str] = None
    nice_window: float = 900.0       # seconds nice_status shows an error after it happened

    # -- derived values ---------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    def included(self, name: str, *, is_dir: bool) -> bool:
        """``filter_rules`` for an entry found in a recursive item: the first
        rule whose pattern and type match decides; none matching includes it
        (globus-sdk ``TransferData.add_filter_rule``)."""
        import fnmatch
        for rule in self.filter_rules or ():
            if rule["type"] not in (None, "dir" if is_dir else "file"):
                continue
            if fnmatch.fnmatchcase(name, rule["name"]):
                return rule["method"] == "include"
        return True

    @property
    def item_paths(self) -> Tuple[Tuple[str, str], ...]:
        return tuple(sorted((i.source_path, i.destination_path) for i in self.items))

    def retrying_items(self) -> List[Item]:
        return [i for i in self.items if i.fault_code is not None
                and i.state not in ("done", "skipped")]

    def _shown_fault(self, now: float) -> Optional[Item]:
        """The newest fault nice_status still shows: Globus shows an error only
        for a while (nice_status_expires_in; a queued task shows "Queued" unless
        it hit an error in the past 15 minutes -- task_behavior, Queuing)."""
        recent = [i for i in self.retrying_items() if now - i.fault_time < self.nice_window]
        return max(recent, key=lambda i: i.fault_time) if recent else None

    def nice_status(self, now: Optional[float] = None) -> Optional[str]:
        if self.finished:
            return None
        if self.status == INACTIVE:
            return self.inactive_reason or "NO_CREDENTIALS"
        if now is None:
            retrying = self.retrying_items()
            shown = max(retrying, key=lambda i: i.fault_time) if retrying else None
        else:
            shown = self._shown_fault(now)
        if shown is not None:
            return shown.fault_code
        return "Queued" if self.queued else "OK"

    def subtasks_pending(self) -> int:
        if self.finished:
            return 0
        done = (self.subtasks_succeeded + self.subtasks_failed + self.subtasks_canceled
                + self.subtasks_expired + self.subtasks_skipped_errors)
        return max(0, self.subtasks_total - done - len(self.retrying_items()))

    def add_event(self, now: float, code: str, description: str, details: str = "",
                  *, is_error: bool = False) -> None:
        self.events.append({
            "DATA_TYPE": "event",
            "code": code,
            "description": description,
            "details": details,
            "is_error": is_error,
            "time": iso(now),
        })

    def to_doc(self, now: float) -> Dict[str, Any]:
        nice = self.nice_status(now)
        shown = None if self.finished or self.status == INACTIVE else self._shown_fault(now)
        expires_in = int(max(0.0, shown.fault_time + self.nice_window - now)) if shown else -1
        if self.finished or self.status == INACTIVE:
            is_ok = None
        else:
            is_ok = not self.retrying_items()
        end = self.completion_time if self.completion_time is not None else now
        elapsed = max(end - self.request_time, 1e-9)
        return {
            "DATA_TYPE": "task",
            "task_id": self.task_id,
            "type": "TRANSFER",
            "status": self.status,
            "label": self.label,
            "username": self.owner_username,
            "owner_id": self.owner_id,
            "command": "API 0.10",
            "request_time": iso(self.request_time),
            "completion_time": iso(self.completion_time),
            "deadline": iso(self.deadline),
            "history_deleted": False,
            "is_ok": is_ok,
            "is_paused": self.is_paused,
            "fatal_error": dict(self.fatal_error) if self.fatal_error else None,
            "faults": self.faults,
            "files": self.files,
            "directories": self.directories,
            "symlinks": 0,
            "files_transferred": self.files_transferred,
            "files_skipped": self.files_skipped,
            "bytes_transferred": self.bytes_transferred,
            "bytes_checksummed": self.bytes_checksummed,
            "effective_bytes_per_second": int(self.bytes_transferred / elapsed),
            "subtasks_total": self.subtasks_total,
            "subtasks_pending": self.subtasks_pending(),
            "subtasks_retrying": 0 if self.finished else len(self.retrying_items()),
            "subtasks_succeeded": self.subtasks_succeeded,
            "subtasks_failed": self.subtasks_failed,
            "subtasks_canceled": self.subtasks_canceled,
            "subtasks_expired": self.subtasks_expired,
            "subtasks_skipped_errors": self.subtasks_skipped_errors,
            "nice_status": nice,
            "nice_status_short_description": (
                None if nice is None else NICE_DESCRIPTIONS.get(nice, nice)),
            "nice_status_details": self._nice_details(nice),
            "nice_status_expires_in": expires_in,
            "canceled_by_admin": self.canceled_by_admin,
            "canceled_by_admin_message": self.canceled_by_admin_message,
            "source_endpoint": self.source_endpoint_id,
            "source_endpoint_id": self.source_endpoint_id,
            "source_endpoint_display_name": self.source_display_name,
            "destination_endpoint": self.destination_endpoint_id,
            "destination_endpoint_id": self.destination_endpoint_id,
            "destination_endpoint_display_name": self.destination_display_name,
            "source_base_path": None,
            "destination_base_path": None,
            "source_local_user": None,
            "source_local_user_status": None,
            "destination_local_user": None,
            "destination_local_user_status": None,
            "sync_level": self.sync_level,
            "verify_checksum": self.verify_checksum,
            "preserve_timestamp": self.preserve_timestamp,
            "encrypt_data": self.encrypt_data,
            "skip_source_errors": self.skip_source_errors,
            "fail_on_quota_errors": self.fail_on_quota_errors,
            "delete_destination_extra": self.delete_destination_extra,
            "recursive_symlinks": "ignore",
            "filter_rules": [dict(r) for r in self.filter_rules] if self.filter_rules else None,
        }

    def _nice_details(self, nice: Optional[str]) -> Optional[str]:
        if nice is None or nice in ("OK", "Queued"):
            return None
        for event in reversed(self.events):
            if event["code"] == nice:
                return event["details"] or event["description"]
        return None
