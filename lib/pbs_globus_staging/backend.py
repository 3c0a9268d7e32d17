"""The transfer backend interface and the outcome types the agent reasons about.

Stdlib only.  The Globus implementation is ``globus_backend.GlobusBackend``;
tests and the demo point it at the emulator, production at Globus -- the same
code with different URLs.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
from typing import Mapping, Optional, Protocol, Sequence, Tuple

from .errors import RetryableError
from .states import Outcome  # noqa: F401 -- the vocabulary lives in states


@dataclasses.dataclass(frozen=True)
class TransferItem:
    source_path: str
    destination_path: str
    recursive: bool = False


@dataclasses.dataclass(frozen=True)
class TransferSpec:
    """Everything needed to submit one Globus transfer task."""

    submission_id: str
    source_collection: str
    destination_collection: str
    items: Tuple[TransferItem, ...]
    label: str = ""
    sync_level: Optional[str] = None          # exists | size | mtime | checksum
    verify_checksum: bool = False
    deadline: Optional[_dt.datetime] = None   # aware datetime, UTC
    skip_source_errors: bool = False
    preserve_timestamp: bool = False


@dataclasses.dataclass(frozen=True)
class TaskReport:
    """One task's state, classified."""

    task_id: str
    outcome: Outcome
    status: str                      # Globus status: ACTIVE, INACTIVE, SUCCEEDED, FAILED
    nice_status: Optional[str] = None
    files: int = 0
    files_transferred: int = 0
    files_skipped: int = 0
    bytes_transferred: int = 0
    bytes_per_second: float = 0.0
    faults: int = 0
    fatal_code: Optional[str] = None     # e.g. EXPIRED, FILE_NOT_FOUND, CANCELED,
                                         # CANCELED_BY_ADMIN
    message: str = ""                    # Globus's own text, or what the user must do
    action: str = ""                     # for WAITING_FOR_USER: the command to run
    label: str = ""
    owner_id: str = ""
    completion_time: Optional[str] = None
    # subtasks_skipped_errors of the task document; None when the document has
    # no such field (then only task_skipped_errors can say what was skipped)
    skipped_errors: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class SkippedError:
    """One path Globus skipped under ``skip_source_errors`` (a ``skipped_error``
    document of ``GET /task/<id>/skipped_errors``)."""

    source_path: str
    destination_path: str
    error_code: str                  # PERMISSION_DENIED, FILE_NOT_FOUND, AMBIGUOUS_PATH
    is_directory: bool = False
    error_details: str = ""


class EndpointTrouble(RetryableError):
    """A 5xx whose code names ExternalError/EndpointError: one collection's
    trouble, reported through Transfer (globus-sdk does not retry these).  It
    concerns the requests using that collection, not Globus as a whole."""


class SubmitConflict(RetryableError):
    """409 "identical paths": an active task of the same identity moves the
    same paths, and it is not one this backend can name for sure."""


@dataclasses.dataclass(frozen=True)
class SubmitResult:
    task_id: str
    duplicate: bool = False   # Globus answered "Duplicate": the submission id was already used
    adopted: bool = False     # Globus answered 409 Conflict: this is the already-active task
                              # with identical paths (found by find_active_task)
    foreign: bool = False     # ... and it was started outside this product (web app, CLI)


class TransferBackend(Protocol):
    """What the agent needs from a transfer service.

    ``identity`` is the agent's key for whose credentials to use: the PBS user
    name in per-user mode, the site client's name in client-credentials mode.
    Methods raise ``errors.RetryableError``, ``errors.WaitingForUser`` or
    ``errors.FatalError``; nothing else escapes.
    """

    def new_submission_id(self, identity: str) -> str: ...

    def submit(self, identity: str, spec: TransferSpec) -> SubmitResult: ...

    def poll(self, identity: str, task_ids: Sequence[str]) -> Mapping[str, TaskReport]: ...

    def get_task(self, identity: str, task_id: str) -> TaskReport: ...

    def cancel(self, identity: str, task_id: str) -> None: ...

    def explain(self, identity: str, task_id: str) -> str: ...

    def find_active_task(self, identity: str, spec: TransferSpec) -> Optional[str]: ...

    def successful_paths(self, identity: str, task_id: str) -> Sequence[Tuple[str, str]]: ...

    def skipped_errors(self, identity: str, task_id: str) -> Sequence[SkippedError]: ...

    def fatal_fault(self, identity: str, task_id: str) -> Optional[Tuple[str, str]]: ...
