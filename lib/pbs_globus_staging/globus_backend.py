"""The Globus backend: ``backend.TransferBackend`` on globus-sdk v4.

One ``TransferClient`` per identity (cached), each with its own small
``RetryConfig``: the SDK retries 429/5xx/network errors itself, honouring
``Retry-After``, but only ``max_retries`` times with sleeps capped at
``max_retry_sleep`` -- an agent cycle has a time budget and the SDK default
(5 retries of up to 10 s) would blow it.  What is still failing after that is
``RetryableError``: nothing changed, try next cycle.

Errors
======

=====================================================  ==========================================
Globus answer (after the SDK's own retries)            raised
=====================================================  ==========================================
401 AuthenticationFailed; token refresh invalid_grant  ``WaitingForUser`` (action: login)
403 ConsentRequired                                     ``WaitingForUser`` (code ConsentRequired,
                                                        action ``globus-staging login --collection C``);
                                                        in client mode first one retry with the
                                                        collections' data_access scopes added
403 with other ``authorization_parameters``             ``WaitingForUser`` (code e.g. AuthPolicyFailed,
(AuthPolicyFailed: session_required_policies,           action ``globus-staging login --policy P
identities, single_domain, mfa)                         --identity I --domain D --mfa``)
5xx whose code contains ExternalError/EndpointError    ``EndpointTrouble`` (one collection's
                                                        endpoint; the SDK does not retry these)
429, other 5xx, network errors, timeouts                ``RetryableError``
409 Conflict at submit                                  adopt the active task with the same paths
                                                        (by content tag, else the only active
                                                        task between the two collections);
                                                        otherwise ``SubmitConflict``
any other 4xx                                           ``FatalError`` with Globus's code and message
=====================================================  ==========================================

Task classification (``poll`` / ``get_task``)
==============================================

=========  =======================================  ===================  ============================
status     nice_status / fatal_error                outcome              fields
=========  =======================================  ===================  ============================
SUCCEEDED  --                                       DONE
FAILED     fatal_error {code, description}          FATAL                fatal_code = code (CANCELED,
                                                                         EXPIRED, ...), message =
                                                                         description
FAILED     canceled_by_admin set                    FATAL                fatal_code CANCELED_BY_ADMIN,
                                                                         message = the admin's
                                                                         canceled_by_admin_message
INACTIVE   (credentials expired)                    WAITING_FOR_USER     action = provider's login
                                                                         command
ACTIVE     None, "OK", "Queued"                     RUNNING
ACTIVE     is_paused                                RUNNING              nice_status = PAUSED (holds
                                                                         no Globus slot)
ACTIVE     a code in ``fault_codes_fatal``          RUNNING              fatal_code = that code: a
           (FILE_NOT_FOUND, PERMISSION_DENIED,                           hint only; the agent times
           QUOTA_EXCEEDED, NO_SPACE_LEFT,                                the fault from the event list
           INVALID_PATH_NAME, IS_A_DIRECTORY, ...)                       (``fatal_fault``)
ACTIVE     any other fault (CONNECT_FAILED,         RUNNING              nice_status kept; Globus
           ENDPOINT_TOO_BUSY, GC_PAUSED, ...)                            keeps retrying by itself
other      unknown status                           RUNNING              nice_status = the status
=========  =======================================  ===================  ============================

Progress (files, files_transferred, files_skipped, bytes_transferred,
effective_bytes_per_second, faults) is copied from the task document.
Tasks not returned by ``task_list`` (not visible to this identity) are absent
from ``poll``'s result.  ``skipped_errors`` lists, all pages, what a task
skipped under ``skip_source_errors``: the agent's evidence, with SUCCEEDED,
of which items arrived.
"""
from __future__ import annotations

import collections
import datetime as _dt
import logging
import re
import threading
import typing as t

import globus_sdk
import requests.adapters
from globus_sdk import TransferClient, TransferData
from globus_sdk.transport import RequestsTransport, RetryConfig

from .backend import (EndpointTrouble, Outcome, SkippedError, SubmitConflict, SubmitResult,
                      TaskReport, TransferSpec)
from .credentials import CredentialProvider, auth_error_to_staging
from .errors import FatalError, RetryableError, StagingError, WaitingForUser

_CONTENT_TAG = re.compile(r"\[c:[0-9a-f]{12}\]")

log = logging.getLogger(__name__)

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
# Not an error of Globus as a whole: globus-sdk's transfer retry check
# (services/transfer/transport.py) does not retry a 5xx whose code contains these.
ENDPOINT_ERROR_CODES = ("ExternalError", "EndpointError")
EVENT_PAGE = 100
_HEALTHY = frozenset({"OK", "QUEUED"})
MAX_LABEL = 128
MAX_EXPLAIN = 300
POLL_CHUNK = 1000
_UUID_IN_SCOPE = re.compile(
    r"scopes/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"/data_access"
)


def sanitize_label(label: str) -> str:
    """Globus labels: at most 128 characters, no newlines, no outer spaces."""
    text = " ".join("".join(" " if not c.isprintable() else c for c in label or "").split())
    return text[:MAX_LABEL].strip()


def _one_line(text: t.Any, limit: int = MAX_EXPLAIN) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


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


def _deadline_text(deadline: _dt.datetime) -> str:
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=_dt.timezone.utc)
    return deadline.astimezone(_dt.timezone.utc).isoformat(timespec="seconds")


class _CountingAdapter(requests.adapters.HTTPAdapter):
    """Counts HTTP attempts (the SDK's retries included) for the benches."""

    def __init__(self, counter: collections.Counter[str], identity: str) -> None:
        super().__init__()
        self._counter, self._identity = counter, identity

    def send(self, request: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self._counter[self._identity] += 1
        return super().send(request, *args, **kwargs)


class GlobusBackend:
    """``TransferBackend`` talking to Globus Transfer through globus-sdk.

    ``calls[identity]`` counts logical API calls (one per request the backend
    makes, pages included); ``http_requests[identity]`` counts HTTP attempts
    to Transfer, the SDK's retries included.
    """

    def __init__(
        self,
        *,
        credentials: CredentialProvider,
        transfer_url: str | None = None,
        max_retries: int = 2,
        max_retry_sleep: float = 5.0,
        http_timeout: float = 30,
        app_name: str = "pbs-globus-staging",
        fault_codes_fatal: t.AbstractSet[str] = DEFAULT_FATAL_FAULTS,
        poll_chunk_size: int = POLL_CHUNK,
    ) -> None:
        if max_retries < 0 or max_retry_sleep < 0 or http_timeout <= 0:
            raise ValueError("max_retries, max_retry_sleep >= 0 and http_timeout > 0 expected")
        if not 1 <= poll_chunk_size <= POLL_CHUNK:
            raise ValueError(f"poll_chunk_size must be 1..{POLL_CHUNK}")
        self.credentials = credentials
        self.transfer_url = transfer_url
        self.max_retries = max_retries
        self.max_retry_sleep = max_retry_sleep
        self.http_timeout = http_timeout
        self.app_name = app_name
        self.fault_codes_fatal = frozenset(c.upper() for c in fault_codes_fatal)
        self.poll_chunk_size = poll_chunk_size
        self.calls: collections.Counter[str] = collections.Counter()
        self.http_requests: collections.Counter[str] = collections.Counter()
        self._clients: dict[str, TransferClient] = {}
        self._lock = threading.Lock()

    # -- clients ------------------------------------------------------------------

    def _client(self, identity: str) -> TransferClient:
        with self._lock:
            client = self._clients.get(identity)
            if client is None:
                transport = RequestsTransport(http_timeout=self.http_timeout)
                adapter = _CountingAdapter(self.http_requests, identity)
                transport.session.mount("https://", adapter)
                transport.session.mount("http://", adapter)
                client = TransferClient(
                    base_url=self.transfer_url,
                    app_name=self.app_name,
                    transport=transport,
                    # a fresh RetryConfig per client: the client registers its
                    # retry checks on the object it is given
                    retry_config=RetryConfig(
                        max_retries=self.max_retries, max_sleep=self.max_retry_sleep
                    ),
                )
                self._clients[identity] = client
        # Asked on every call: the provider notices a new login or a removed
        # token file, and caches the authorizer itself.
        client.authorizer = self.credentials.authorizer(identity)
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.transport.close()

    # -- error mapping ------------------------------------------------------------------

    def _call(
        self,
        identity: str,
        what: str,
        fn: t.Callable[[TransferClient], t.Any],
        *,
        collections: t.Sequence[str] = (),
        passthrough: t.Callable[[globus_sdk.GlobusAPIError], bool] | None = None,
    ) -> t.Any:
        """Run one SDK call for ``identity`` and translate whatever it raises."""
        client = self._client(identity)
        self.calls[identity] += 1
        try:
            return fn(client)
        except globus_sdk.AuthAPIError as err:
            # The authorizer's token refresh failed inside the Transfer call.
            return self._raise_auth(identity, what, err)
        except globus_sdk.GlobusAPIError as err:
            if self._learn_data_access(identity, err):
                # Same call (same submission id) with a token that carries the
                # collections' data_access scopes; learns only new ones, so once.
                return self._call(identity, what, fn, collections=collections,
                                  passthrough=passthrough)
            if passthrough is not None and passthrough(err):
                raise
            return self._raise_transfer(identity, what, err, collections)
        except globus_sdk.NetworkError as err:
            raise RetryableError(
                f"Globus {what}: network error ({type(err).__name__}); will retry"
            ) from None
        except StagingError:
            raise
        except globus_sdk.GlobusError as err:
            raise RetryableError(f"Globus {what}: {type(err).__name__}: {_one_line(err)}") from None
        except (ValueError, KeyError, TypeError, OSError) as err:
            # Malformed answers (e.g. non-JSON from a proxy) must not escape as
            # tracebacks; the agent tries again next cycle.
            log.warning("Globus %s for %s: unexpected %s", what, identity, type(err).__name__,
                        exc_info=True)
            raise RetryableError(
                f"Globus {what}: unexpected answer ({type(err).__name__}); will retry"
            ) from None

    def _raise_auth(self, identity: str, what: str, err: globus_sdk.GlobusAPIError) -> t.NoReturn:
        exc = auth_error_to_staging(
            err,
            who=self.credentials.describe(identity),
            action=self.credentials.login_action(identity),
        )
        if isinstance(exc, WaitingForUser):
            self.credentials.forget(identity)
        raise exc from None

    def _raise_transfer(
        self,
        identity: str,
        what: str,
        err: globus_sdk.GlobusAPIError,
        collections: t.Sequence[str],
    ) -> t.NoReturn:
        status = err.http_status
        code = err.code or f"HTTP{status}"
        text = _one_line(err.message or err.http_reason)
        session = None if self._is_consent_required(err) else (
            self._session_needs(err) if status == 403 else None)
        if session is not None:
            # A login that meets the collection's policy fixes it: wait for it.
            # Decided by authorization_parameters, whatever the code (as
            # globus-cli's session_hook); ConsentRequired has its own branch.
            short = re.sub(r"[^A-Za-z0-9_.]", "", code)[:64] or "AuthorizationRequired"
            why = _one_line(err.info.authorization_parameters.session_message or text, 160)
            # No --collection flags: a login keeps the consents of the one it
            # replaces (commands/login.py), and the comment stays short.
            action = self.credentials.login_action(
                identity, collections=list(collections) if self._is_client() else (),
                session=session)
            raise WaitingForUser(
                f"Globus {what}: {short}: {why}; a new Globus login of "
                f"{self.credentials.describe(identity)} is needed; {self._todo(action)}",
                action=action,
                code=short,
            ) from None
        if status == 401 or code.endswith("AuthenticationFailed"):
            self.credentials.forget(identity)
            action = self.credentials.login_action(identity)
            raise WaitingForUser(
                f"Globus refused the credentials of {self.credentials.describe(identity)} "
                f"({code}); {self._todo(action)}",
                action=action,
                code="AuthenticationFailed",
            ) from None
        if self._is_consent_required(err):
            needed = self._consent_collections(err) or list(collections)
            action = self.credentials.login_action(identity, collections=needed)
            raise WaitingForUser(
                f"Globus needs consent for collection(s) {', '.join(needed) or '?'} "
                f"from {self.credentials.describe(identity)}; {self._todo(action)}",
                action=action,
                code="ConsentRequired",
            ) from None
        if status >= 500 and any(c in code for c in ENDPOINT_ERROR_CODES):
            raise EndpointTrouble(f"Globus {what}: a collection's endpoint answered "
                                  f"{code}: {text}") from None
        if status == 429 or status >= 500 or status in (408,):
            raise RetryableError(f"Globus {what}: HTTP {status} {code}: {text}") from None
        raise FatalError(f"Globus {what}: {code}: {text}") from None

    def _learn_data_access(self, identity: str, err: globus_sdk.GlobusAPIError) -> bool:
        """A client (client-credentials mode) consents to a mapped collection's
        data_access by asking for the scope; only a person can for a user."""
        learn = getattr(self.credentials, "add_data_access", None)
        if learn is None or not self._is_consent_required(err):
            return False
        return bool(learn(self._consent_collections(err)))

    @staticmethod
    def _is_consent_required(err: globus_sdk.GlobusAPIError) -> bool:
        code = err.code or ""
        return code == "ConsentRequired" or code.endswith(".ConsentRequired")

    @staticmethod
    def _session_needs(err: globus_sdk.GlobusAPIError) -> dict[str, t.Any] | None:
        """What a 403 with ``authorization_parameters`` asks of the login session
        (globus-sdk ``err.info.authorization_parameters``; globus-cli's
        session_hook turns the same fields into ``globus session update``)."""
        params = err.info.authorization_parameters
        if not params:
            return None
        needs = {
            "policies": params.session_required_policies or [],
            "identities": params.session_required_identities or [],
            "domains": params.session_required_single_domain or [],
            "mfa": bool(params.session_required_mfa),
        }
        return needs if any(needs.values()) else None

    def _is_client(self) -> bool:
        return hasattr(self.credentials, "add_data_access")

    @staticmethod
    def _todo(action: str) -> str:
        return f"run `{action}`" if action.startswith("globus-staging") else action

    @staticmethod
    def _consent_collections(err: globus_sdk.GlobusAPIError) -> list[str]:
        scopes: list[str] = []
        info = err.info.consent_required
        if info:
            scopes.extend(info.required_scopes or [])
        raw = err.raw_json if isinstance(err.raw_json, dict) else {}
        params = raw.get("authorization_parameters")
        if isinstance(params, dict) and isinstance(params.get("required_scopes"), list):
            scopes.extend(s for s in params["required_scopes"] if isinstance(s, str))
        found: list[str] = []
        for scope in scopes:
            for cid in _UUID_IN_SCOPE.findall(scope):
                if cid.lower() not in found:
                    found.append(cid.lower())
        return found

    # -- TransferBackend ----------------------------------------------------------------

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
                foreign = self._active_between(identity, spec)
                if len(foreign) == 1:
                    log.info("submit for %s: Conflict; adopting task %s started elsewhere",
                             identity, foreign[0])
                    return SubmitResult(task_id=foreign[0], adopted=True, foreign=True)
                raise SubmitConflict(
                    "Globus refused the transfer: a transfer with identical paths, started "
                    "outside PBS (web app, CLI or an older agent), is still active"
                    + (f" (one of tasks {', '.join(foreign[:5])})" if foreign else "")
                    + "; this request waits until it ends") from None
            self._raise_transfer(identity, "submit_transfer", err, collections)
        task_id = res.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise RetryableError("Globus submit_transfer: answer had no task_id; will retry")
        return SubmitResult(task_id=task_id, duplicate=res.get("code") == "Duplicate")

    def poll(self, identity: str, task_ids: t.Sequence[str]) -> t.Mapping[str, TaskReport]:
        wanted = list(dict.fromkeys(str(tid) for tid in task_ids))
        result: dict[str, TaskReport] = {}
        for start in range(0, len(wanted), self.poll_chunk_size):
            chunk = wanted[start:start + self.poll_chunk_size]
            chunk_set = set(chunk)
            for doc in self._task_list(identity, {"task_id": chunk}):
                tid = doc.get("task_id")
                if tid in chunk_set:
                    result[tid] = self.classify(identity, doc)
        return result

    def _task_list(self, identity: str, filt: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
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

    def _active_between(self, identity: str, spec: TransferSpec) -> list[str]:
        src, dst = spec.source_collection.lower(), spec.destination_collection.lower()
        return [str(doc.get("task_id")) for doc in self._task_list(
            identity, {"type": ["TRANSFER"], "status": ["ACTIVE", "INACTIVE"]})
            if str(doc.get("source_endpoint_id") or "").lower() == src
            and str(doc.get("destination_endpoint_id") or "").lower() == dst]

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
        if status == "SUCCEEDED":
            return TaskReport(outcome=Outcome.DONE, **common)
        if status == "FAILED":
            fatal = doc.get("fatal_error") if isinstance(doc.get("fatal_error"), dict) else {}
            code = str(fatal.get("code") or "FAILED")
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
        if status == "INACTIVE":
            action = self.credentials.login_action(identity)
            return TaskReport(
                outcome=Outcome.WAITING_FOR_USER, action=action,
                message=("Globus suspended the task: the credentials of "
                         f"{self.credentials.describe(identity)} expired; {self._todo(action)}"),
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
        if status != "ACTIVE" and not nice:
            common["nice_status"] = status or None
        return TaskReport(outcome=Outcome.RUNNING, fatal_code=fatal_code, message=message,
                          **common)

    def get_task(self, identity: str, task_id: str) -> TaskReport:
        doc = self._call(identity, "get_task", lambda c: c.get_task(task_id))
        return self.classify(identity, doc.data if hasattr(doc, "data") else doc)

    def cancel(self, identity: str, task_id: str) -> None:
        def done_already(err: globus_sdk.GlobusAPIError) -> bool:
            return err.code == "TaskComplete"

        try:
            res = self._call(identity, "cancel_task", lambda c: c.cancel_task(task_id),
                             passthrough=done_already)
        except globus_sdk.GlobusAPIError:
            return  # TaskComplete: nothing left to cancel
        log.info("cancel %s for %s: %s", task_id, identity, res.get("code"))

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
        for doc in self._task_list(
            identity, {"type": ["TRANSFER"], "status": ["ACTIVE", "INACTIVE"]}
        ):
            if (
                str(doc.get("source_endpoint_id") or "").lower() == src
                and str(doc.get("destination_endpoint_id") or "").lower() == dst
                and (tag.group(0) in str(doc.get("label") or "") if tag
                     else str(doc.get("label") or "") == label)
                and doc.get("status") in ("ACTIVE", "INACTIVE")
            ):
                key = (str(doc.get("request_time") or ""), str(doc.get("task_id")))
                if best is None or key > best:
                    best = key
        return best[1] if best else None

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
