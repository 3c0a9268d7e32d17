"""``GlobusEmulator``: the state, the control methods tests use, and the threads."""
from __future__ import annotations

import dataclasses
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Set, Tuple

from .engine import Engine, normalize, PathRefused
from .fsaccess import SELF, AccountMap, AccountRefused, Files, RefusedFiles
from .model import (ACTIVE, FAILED, INACTIVE, SUCCEEDED, TRANSFER_RS, TRANSFER_SCOPE,
                    AccessToken, Call, Client, Collection, Grant, Identity, Item,
                    RefreshToken, Task)

TICK = 0.02


@dataclasses.dataclass
class _FailureRule:
    status: int
    count: int
    path_prefix: str
    method: Optional[str]
    retry_after: Optional[int]
    code: Optional[str]


class GlobusEmulator:
    """A Globus Transfer + Auth service on loopback, backed by local directories.

    Point globus-sdk at it with ``env()``; drive faults with the methods below.
    All methods are thread-safe.
    """

    def __init__(self, root: Path, *, bytes_per_second: float = 50e6,
                 active_tasks_per_identity: int = 3,
                 requests_per_second: Optional[float] = None,
                 access_token_lifetime: int = 172800,
                 fault_retry_interval: float = 0.2,
                 host: str = "127.0.0.1", port: int = 0, accounts: str = SELF) -> None:
        """``accounts``: which local account does an identity's file work
        (see ``fsaccess``): ``"username"`` maps each identity to the local
        account of its username, as GCSv5 does by default (the standalone
        emulator's default); ``"self"`` does it all as this process (for tests
        whose identities are not local accounts)."""
        if bytes_per_second < 0:
            raise ValueError("bytes_per_second must be >= 0 (0 stalls all copying)")
        if active_tasks_per_identity < 0:
            raise ValueError("active_tasks_per_identity must be >= 0 (0 = unlimited)")
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 or None (no limit)")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._bytes_per_second = float(bytes_per_second)
        self._active_limit = int(active_tasks_per_identity)
        self._requests_per_second = requests_per_second
        self._token_lifetime = int(access_token_lifetime)
        self._fault_retry_interval = float(fault_retry_interval)
        self._nice_window = 900.0
        self._ambiguous: Set[Tuple[str, str]] = set()
        self._host = host
        self._port = port

        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._clock_offset = 0.0
        self._collections: Dict[str, Collection] = {}
        self._identities: Dict[str, Identity] = {}
        self._grants: Dict[str, List[Grant]] = {}
        self._clients: Dict[str, Client] = {}
        self._access_tokens: Dict[str, AccessToken] = {}
        self._refresh_tokens: Dict[str, RefreshToken] = {}
        self._tasks: Dict[str, Task] = {}
        self._submissions: Dict[Tuple[str, str], str] = {}
        self._auth_codes: Dict[str, Any] = {}         # auth.PendingCode by code
        self._request_token: Optional[AccessToken] = None  # set per request, under _lock
        self._expired_credentials: Set[Tuple[str, str]] = set()
        self._failures: List[_FailureRule] = []
        self._outage = False
        self._buckets: Dict[str, Tuple[float, float]] = {}
        self._calls: List[Call] = []
        self.internal_errors: List[BaseException] = []
        self.accounts = AccountMap(accounts)
        self._engine = Engine(self)
        self._server: Any = None
        self._threads: List[threading.Thread] = []
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> "GlobusEmulator":
        from .server import make_server

        if self._server is not None:
            raise RuntimeError("emulator already started")
        self._stopping.clear()
        self._server = make_server(self, self._host, self._port)
        serve = threading.Thread(target=self._server.serve_forever,
                                 kwargs={"poll_interval": 0.05},
                                 name="globus-emulator-http", daemon=True)
        engine = threading.Thread(target=self._run_engine, name="globus-emulator-engine",
                                  daemon=True)
        self._threads = [serve, engine]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        self._server.shutdown()
        self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._server = None
        self._threads = []
        self.accounts.close()

    def __enter__(self) -> "GlobusEmulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def env(self) -> Dict[str, str]:
        return {
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": self.url + "/",
            "GLOBUS_SDK_SERVICE_URL_AUTH": self.url + "/",
        }

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the emulator's clock forward (deadlines, token expiry, timestamps)."""
        with self._wake:
            self._clock_offset += seconds
            self._wake.notify_all()

    def _run_engine(self) -> None:
        last = self.now()
        while not self._stopping.is_set():
            with self._wake:
                self._wake.wait(TICK)
                if self._stopping.is_set():
                    return
                now = self.now()
                dt = min(max(now - last, 0.0), 0.5)
                last = now
                try:
                    self._engine.tick(now, dt)
                except Exception as exc:  # keep serving; tests assert on internal_errors
                    self.internal_errors.append(exc)

    # -- setup ----------------------------------------------------------------
    def add_collection(self, name: str, *, collection_id: Optional[str] = None,
                       directory: Optional[Path] = None,
                       entity_type: str = "GCSv5_mapped_collection",
                       high_assurance: bool = False) -> str:
        """A collection; by default a GCSv5 mapped, non-high-assurance one, which
        (as on Globus) needs its data_access consent in the token (auth.py)."""
        cid = str(uuid.UUID(collection_id)) if collection_id else str(uuid.uuid4())
        d = Path(directory) if directory is not None else self.root / name
        d.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if cid in self._collections:
                raise ValueError(f"collection {cid} already exists")
            self._collections[cid] = Collection(cid, name, d, entity_type=entity_type,
                                                high_assurance=bool(high_assurance))
        return cid

    def add_identity(self, username: str, *, identity_id: Optional[str] = None,
                     local_account: Optional[str] = None) -> str:
        """``local_account``: the account this identity's files are touched as,
        instead of the mapping's choice (ValueError if the emulator cannot act
        as it)."""
        iid = str(uuid.UUID(identity_id)) if identity_id else str(uuid.uuid4())
        if local_account is not None:
            try:
                self.accounts.assign(username, local_account)
            except AccountRefused as exc:
                raise ValueError(f"identity {username}: {exc.strerror}") from None
        with self._lock:
            if iid in self._identities:
                raise ValueError(f"identity {iid} already exists")
            self._identities[iid] = Identity(iid, username)
            self._grants.setdefault(iid, [])
        return iid

    def grant(self, identity_id: str, collection_id: str, path_prefix: str, *,
              write: bool = True) -> None:
        """Let an identity read (and with ``write`` also write) below a path."""
        with self._lock:
            self._need_identity(identity_id)
            self._need_collection(collection_id)
            try:
                prefix = normalize(path_prefix)
            except PathRefused:
                raise ValueError(f"path_prefix {path_prefix!r} may not contain '..'") from None
            self._grants[identity_id].append(Grant(collection_id, prefix, write))

    def add_client(self, identity_id: str, *, client_id: Optional[str] = None,
                   client_secret: Optional[str] = None) -> Tuple[str, str]:
        """A confidential client whose client_credentials tokens act as ``identity_id``."""
        cid = client_id or str(uuid.uuid4())
        secret = client_secret or secrets.token_urlsafe(24)
        with self._lock:
            self._need_identity(identity_id)
            self._clients[cid] = Client(cid, secret, identity_id)
        return cid, secret

    def add_native_client(self, *, client_id: Optional[str] = None) -> str:
        cid = client_id or str(uuid.uuid4())
        with self._lock:
            self._clients[cid] = Client(cid, None, None)
        return cid

    def issue_tokens(self, identity_id: str, *, client_id: str,
                     scope: Optional[str] = None,
                     session_policies: Tuple[str, ...] = ()) -> Dict[str, Any]:
        """Tokens as a finished login would leave them (one resource server's entry
        of ``OAuthTokenResponse.by_resource_server``).  ``scope`` None: Transfer
        with the data_access consent of every collection existing now that needs
        one (a login that named them all); pass ``TRANSFER_SCOPE`` for a login
        that named none."""
        from .auth import full_login_scope, grant_scope

        with self._lock:
            self._need_identity(identity_id)
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id}")
            scope = grant_scope(self, full_login_scope(self) if scope is None else scope)
            rs = TRANSFER_RS
            rt = RefreshToken(_token("Rt"), identity_id, client_id, scope, rs,
                              session_policies=tuple(session_policies))
            self._refresh_tokens[rt.token] = rt
            at = self._new_access_token(identity_id, client_id, scope, rs)
            at.session_policies = tuple(session_policies)
            return {
                "access_token": at.token,
                "refresh_token": rt.token,
                "expires_at_seconds": int(at.expires_at),
                "scope": scope,
                "resource_server": rs,
                "token_type": "Bearer",
            }

    def revoke_refresh_token(self, refresh_token: str) -> None:
        with self._lock:
            rt = self._refresh_tokens.get(refresh_token)
            if rt is None:
                raise KeyError("unknown refresh token")
            rt.revoked = True

    def expire_access_tokens(self) -> None:
        with self._lock:
            past = self.now() - 1
            for at in self._access_tokens.values():
                at.expires_at = min(at.expires_at, past)

    # -- faults ---------------------------------------------------------------
    def fail_requests(self, status: int, *, count: int = 1, path_prefix: str = "",
                      method: Optional[str] = None, retry_after: Optional[int] = None,
                      code: Optional[str] = None) -> None:
        """The next ``count`` requests matching path prefix and method answer ``status``."""
        if count < 1:
            raise ValueError("count must be >= 1")
        with self._lock:
            self._failures.append(_FailureRule(status, count, path_prefix,
                                               method.upper() if method else None,
                                               retry_after, code))

    def set_outage(self, on: bool) -> None:
        with self._lock:
            self._outage = bool(on)

    def require_policy(self, collection_id: str, policy_id: str) -> None:
        """The collection's authentication policy: tokens from a login session
        that did not satisfy ``policy_id`` get 403 AuthPolicyFailed (auth.py)."""
        with self._lock:
            coll = self._need_collection(collection_id)
            coll.required_policies = tuple(dict.fromkeys(coll.required_policies
                                                          + (str(policy_id),)))

    def expire_credential(self, identity_id: str, collection_id: str) -> None:
        with self._wake:
            self._expired_credentials.add((identity_id, collection_id))
            self._wake.notify_all()

    def renew_credential(self, identity_id: str, collection_id: str) -> None:
        with self._wake:
            self._expired_credentials.discard((identity_id, collection_id))
            self._wake.notify_all()

    def pause_collection(self, collection_id: str) -> None:
        with self._lock:
            self._need_collection(collection_id).paused = True

    def resume_collection(self, collection_id: str) -> None:
        with self._lock:
            self._need_collection(collection_id).paused = False

    def fail_task(self, task_id: str, *, code: str = "ENDPOINT_ERROR",
                  description: str = "an unrecoverable error occurred on the endpoint") -> None:
        with self._lock:
            task = self._need_task(task_id)
            if task.finished:
                raise ValueError(f"task {task_id} already {task.status}")
            self._engine.finish(task, self.now(), FAILED, code, description,
                                counter="subtasks_failed")

    def admin_cancel(self, task_id: str, message: str, *, side: str = "SOURCE") -> None:
        """An activity manager of a collection cancels the task (advanced endpoint
        management, "Cancel tasks as admin"): FAILED/CANCELED with the task
        document's canceled_by_admin and canceled_by_admin_message set.  The
        values SOURCE/DESTINATION/BOTH are unverified."""
        if side not in ("SOURCE", "DESTINATION", "BOTH"):
            raise ValueError("side must be SOURCE, DESTINATION or BOTH")
        with self._lock:
            task = self._need_task(task_id)
            if task.finished:
                raise ValueError(f"task {task_id} already {task.status}")
            task.canceled_by_admin = side
            task.canceled_by_admin_message = message
            self._engine.finish(task, self.now(), FAILED, "CANCELED", "canceled",
                                counter="subtasks_canceled")

    def make_ambiguous(self, collection_id: str, path: str) -> None:
        """Reading ``path`` on the collection answers AMBIGUOUS_PATH (Globus: a
        path the storage cannot resolve to one object); skippable."""
        with self._lock:
            self._need_collection(collection_id)
            self._ambiguous.add((collection_id, normalize(path)))

    def set_fault_retry_interval(self, seconds: float) -> None:
        with self._lock:
            self._fault_retry_interval = float(seconds)

    def set_nice_status_window(self, seconds: float) -> None:
        """How long nice_status shows an error after it happened (Globus: about
        15 minutes for a queued task; nice_status_expires_in counts it down)."""
        with self._lock:
            self._nice_window = float(seconds)
            for task in self._tasks.values():
                task.nice_window = self._nice_window

    def set_rate(self, bytes_per_second: float) -> None:
        if bytes_per_second < 0:
            raise ValueError("bytes_per_second must be >= 0")
        with self._lock:
            self._bytes_per_second = float(bytes_per_second)

    def set_active_limit(self, active_tasks_per_identity: int) -> None:
        with self._lock:
            self._active_limit = int(active_tasks_per_identity)

    def set_request_rate(self, requests_per_second: Optional[float]) -> None:
        with self._lock:
            self._requests_per_second = requests_per_second
            self._buckets.clear()

    def add_finished_tasks(self, owner_id: str, count: int, *, source_collection: str,
                           destination_collection: str, status: str = SUCCEEDED,
                           label: Optional[str] = None) -> List[str]:
        """Bulk-create finished tasks (for paging tests) without copying anything."""
        if status not in (SUCCEEDED, FAILED):
            raise ValueError("status must be SUCCEEDED or FAILED")
        ids = []
        with self._lock:
            ident = self._need_identity(owner_id)
            src = self._need_collection(source_collection)
            dst = self._need_collection(destination_collection)
            now = self.now()
            for n in range(count):
                task = self._new_task(ident, str(uuid.uuid4()), label, src, dst,
                                      [Item(f"/bulk/{n}", f"/bulk/{n}", False)], now,
                                      now + 24 * 3600, False, {})
                task.status = status
                task.completion_time = now
                task.queued = False
                task.subtasks_total = 1
                if status == SUCCEEDED:
                    task.subtasks_succeeded = 1
                else:
                    task.subtasks_failed = 1
                    task.fatal_error = {"code": "ENDPOINT_ERROR", "description": "bulk"}
                self._tasks[task.task_id] = task
                ids.append(task.task_id)
        return ids

    # -- inspection -------------------------------------------------------------
    @property
    def tasks(self) -> Dict[str, Task]:
        with self._lock:
            return dict(self._tasks)

    def task_doc(self, task_id: str) -> Dict[str, Any]:
        """The task document Globus would answer for ``GET /task/<id>``."""
        with self._lock:
            return self._need_task(task_id).to_doc(self.now())

    @property
    def calls(self) -> List[Call]:
        with self._lock:
            return list(self._calls)

    def reset_calls(self) -> None:
        with self._lock:
            self._calls.clear()

    def count_calls(self, path_prefix: str = "", method: Optional[str] = None) -> int:
        with self._lock:
            return sum(1 for c in self._calls if c.path.startswith(path_prefix)
                       and (method is None or c.method == method.upper()))

    def wait_for_status(self, task_id: str, status: str, *, timeout: float = 10) -> Task:
        """Block until the task has ``status``; fail fast if it finished otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                task = self._need_task(task_id)
                if task.status == status:
                    return task
                if task.finished:
                    raise AssertionError(
                        f"task {task_id} finished {task.status} "
                        f"({task.fatal_error}) while waiting for {status}")
                current = task.status
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} still {current} after {timeout}s "
                                   f"(wanted {status})")
            time.sleep(0.01)

    def map_accounts(self, mapping: str) -> None:
        """Switch the identity -> local account mapping (``"username"`` or
        ``"self"``); later file operations use it."""
        with self._lock:
            self.accounts.set_mapping(mapping)

    # -- internals shared with the API -----------------------------------------
    def _files(self, identity_id: str) -> Files:
        """File operations as the local account ``identity_id`` maps to."""
        try:
            return self.accounts.files(self._need_identity(identity_id).username)
        except AccountRefused as exc:
            return RefusedFiles(exc)

    def _need_identity(self, identity_id: str) -> Identity:
        try:
            return self._identities[identity_id]
        except KeyError:
            raise KeyError(f"unknown identity {identity_id}") from None

    def _need_collection(self, collection_id: str) -> Collection:
        try:
            return self._collections[collection_id]
        except KeyError:
            raise KeyError(f"unknown collection {collection_id}") from None

    def _need_task(self, task_id: str) -> Task:
        try:
            return self._tasks[task_id]
        except KeyError:
            raise KeyError(f"unknown task {task_id}") from None

    def _allowed(self, identity_id: str, collection_id: str, norm_path: str, *,
                 write: bool) -> bool:
        for g in self._grants.get(identity_id, ()):
            if g.collection_id != collection_id or (write and not g.write):
                continue
            if g.path_prefix == "/" or norm_path == g.path_prefix \
                    or norm_path.startswith(g.path_prefix + "/"):
                return True
        return False

    def _is_ambiguous(self, collection_id: str, norm_path: str) -> bool:
        return (collection_id, norm_path) in self._ambiguous

    def _can_see_collection(self, identity_id: str, collection_id: str) -> bool:
        return any(g.collection_id == collection_id
                   for g in self._grants.get(identity_id, ()))

    def _new_access_token(self, identity_id: str, client_id: str, scope: str,
                          resource_server: str) -> AccessToken:
        at = AccessToken(_token("At"), identity_id, client_id, scope, resource_server,
                         self.now() + self._token_lifetime)
        self._access_tokens[at.token] = at
        return at

    def _new_task(self, ident: Identity, submission_id: str, label: Optional[str],
                  src: Collection, dst: Collection, items: List[Item], now: float,
                  deadline: float, explicit_deadline: bool,
                  options: Dict[str, Any]) -> Task:
        task = Task(
            task_id=str(uuid.uuid4()), owner_id=ident.identity_id,
            owner_username=ident.username, submission_id=submission_id, label=label,
            source_endpoint_id=src.collection_id, destination_endpoint_id=dst.collection_id,
            source_display_name=src.name, destination_display_name=dst.name,
            request_time=now, deadline=deadline, explicit_deadline=explicit_deadline,
            items=items, subtasks_total=len(items), nice_window=self._nice_window, **options)
        return task

    def _record_internal_error(self, exc: BaseException) -> None:
        with self._lock:
            self.internal_errors.append(exc)

    def _kick(self) -> None:
        with self._wake:
            self._wake.notify_all()


def _token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


__all__ = ["GlobusEmulator", "ACTIVE", "INACTIVE", "SUCCEEDED", "FAILED"]
