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
import logging
import threading
import typing as t

import globus_sdk
import requests.adapters
from globus_sdk import TransferClient, TransferData
from globus_sdk.transport import RequestsTransport, RetryConfig

from .backend import SkippedError, SubmitResult, TaskReport, TransferSpec
from .credentials import CredentialProvider
from .errors import RetryableError, StagingError
from .globus_errors import ENDPOINT_ERROR_CODES, MAX_EXPLAIN, TransferErrors, _one_line
from .globus_poll import DEFAULT_FATAL_FAULTS, EVENT_PAGE, POLL_CHUNK, TaskReader
from .globus_submit import MAX_LABEL, Submitter, sanitize_label

__all__ = ["GlobusBackend", "DEFAULT_FATAL_FAULTS", "ENDPOINT_ERROR_CODES", "EVENT_PAGE",
           "MAX_EXPLAIN", "MAX_LABEL", "POLL_CHUNK", "sanitize_label"]

log = logging.getLogger(__name__)


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

    It owns the clients (one per identity) and ``_call``, the one place an SDK
    call is made, counted and its errors mapped (``globus_errors``); reading
    tasks (``globus_poll.TaskReader``) and submitting them
    (``globus_submit.Submitter``) are collaborators that call through it.

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
        # The collaborators: error mapping, reading tasks, submitting them.
        self.errors = TransferErrors(credentials)
        self.tasks = TaskReader(self._call, calls=self.calls, credentials=credentials,
                                fault_codes_fatal=self.fault_codes_fatal,
                                poll_chunk_size=poll_chunk_size)
        self.submitter = Submitter(self._call, errors=self.errors,
                                   task_list=self.tasks.task_list)

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
            return self.errors.raise_auth(identity, what, err)
        except globus_sdk.GlobusAPIError as err:
            if self.errors.learn_data_access(identity, err):
                # Same call (same submission id) with a token that carries the
                # collections' data_access scopes; learns only new ones, so once.
                return self._call(identity, what, fn, collections=collections,
                                  passthrough=passthrough)
            if passthrough is not None and passthrough(err):
                raise
            return self.errors.raise_transfer(identity, what, err, collections)
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

    def _raise_transfer(self, identity: str, what: str, err: globus_sdk.GlobusAPIError,
                        collections: t.Sequence[str]) -> t.NoReturn:
        self.errors.raise_transfer(identity, what, err, collections)

    # -- TransferBackend ----------------------------------------------------------------

    def new_submission_id(self, identity: str) -> str:
        return self.submitter.new_submission_id(identity)

    def transfer_data(self, spec: TransferSpec) -> TransferData:
        """The submit document for ``spec`` (public for tests and dry runs)."""
        return self.submitter.transfer_data(spec)

    def submit(self, identity: str, spec: TransferSpec) -> SubmitResult:
        return self.submitter.submit(identity, spec)

    def cancel(self, identity: str, task_id: str) -> None:
        self.submitter.cancel(identity, task_id)

    def find_active_task(self, identity: str, spec: TransferSpec) -> t.Optional[str]:
        return self.submitter.find_active_task(identity, spec)

    def poll(self, identity: str, task_ids: t.Sequence[str]) -> t.Mapping[str, TaskReport]:
        return self.tasks.poll(identity, task_ids)

    def classify(self, identity: str, doc: t.Mapping[str, t.Any]) -> TaskReport:
        return self.tasks.classify(identity, doc)

    def get_task(self, identity: str, task_id: str) -> TaskReport:
        return self.tasks.get_task(identity, task_id)

    def explain(self, identity: str, task_id: str) -> str:
        return self.tasks.explain(identity, task_id)

    def skipped_errors(self, identity: str, task_id: str) -> t.Sequence[SkippedError]:
        return self.tasks.skipped_errors(identity, task_id)

    def fatal_fault(self, identity: str, task_id: str) -> t.Optional[t.Tuple[str, str]]:
        return self.tasks.fatal_fault(identity, task_id)

    def successful_paths(self, identity: str, task_id: str) -> t.Sequence[t.Tuple[str, str]]:
        return self.tasks.successful_paths(identity, task_id)
