"""Globus authorizers per identity, for the staging agent (which runs as root).

Two modes:

``ClientCredentialsProvider``
    The site's own service identity (a confidential Globus client).  Every
    PBS user maps to that one client; tasks are owned by the client, so this
    is only safe together with a site policy that limits which paths each user
    may name.  The secret is read from a root-only file; access tokens are
    cached in a root-only ``SQLiteTokenStorage`` so an agent cycle does not ask
    Globus Auth for a new token each time.  GCSv5 mapped collections (not high
    assurance) accept the client only with their dependent ``data_access``
    scope in its Transfer token, as globus-sdk's
    ``TransferClient.add_app_data_access_scope`` builds it: the token asks for
    those of ``collections.data_access`` and of every collection Transfer has
    answered ConsentRequired for (``add_data_access``; kept in the cached
    token's scope, so a new agent process asks for them at once).

``UserTokenProvider``
    Each user logged in once with ``globus-staging login`` (``login_flow`` +
    ``write_user_tokens`` below, run as the user).  That left a refresh token in
    ``~user/.globus-staging/tokens.json``.  The agent, as root, reads that file
    race-free (every path component opened with ``O_NOFOLLOW`` relative to the
    previous directory's fd, then ``fstat`` checks on the open descriptors) and
    builds a ``RefreshTokenAuthorizer``.  Access tokens it gets by refreshing
    are kept in a root-only cache under the agent's state directory; nothing is
    ever written into the user's directory by root.

Nothing here puts a token into an exception message, a log line or a repr.

Failures the user can fix raise ``errors.WaitingForUser`` whose ``action``
says what to run; network trouble raises ``errors.RetryableError``; a broken
site setup found at start-up raises ``errors.ConfigError``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import pwd
import re
import socket
import stat
import threading
import time
import typing as t

import globus_sdk
from globus_sdk.authorizers import (
    ClientCredentialsAuthorizer,
    GlobusAuthorizer,
    RefreshTokenAuthorizer,
)
from globus_sdk.gare import GlobusAuthorizationParameters
from globus_sdk.login_flows import CommandLineLoginFlowManager, LoginFlowManager
from globus_sdk.scopes import GCSCollectionScopes, Scope, TransferScopes
from globus_sdk.token_storage import SQLiteTokenStorage, TokenStorage, TokenStorageData
from globus_sdk.transport import RetryConfig

from . import userfiles
from .errors import ConfigError, RetryableError, StagingError, WaitingForUser
from .userfiles import UserFileError, read_user_file

log = logging.getLogger(__name__)

TRANSFER_RESOURCE_SERVER = "transfer.api.globus.org"
TOKEN_FILE_NAME = "tokens.json"
TOKEN_FILE_FORMAT = "pbs-globus-staging/user-tokens"
TOKEN_FILE_VERSION = 1
MAX_TOKEN_FILE_BYTES = 64 * 1024
MAX_SECRET_FILE_BYTES = 4 * 1024
LOGIN_ACTION = "globus-staging login"
DEFAULT_TOKEN_DIR_TEMPLATE = "~{user}/.globus-staging"
# An access token with less life than this is refreshed before use (the SDK
# itself refreshes 60 s before expiry; a cached token closer than that is useless).
_MIN_CACHED_TOKEN_LIFE = 120

_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_DATA_ACCESS_IN_SCOPE = re.compile(
    r"scopes/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"/data_access"
)


class CredentialProvider(t.Protocol):
    """Where the Globus backend gets an authorizer for an identity.

    ``authorizer`` may raise ``WaitingForUser`` (the user must act) or
    ``RetryableError`` (Globus Auth unreachable).  ``login_action`` is the
    command a person must run when Globus says the credentials no longer work
    (INACTIVE task, 401, invalid_grant, ConsentRequired); ``forget`` drops any
    in-memory authorizer after such a failure so the next call starts afresh.
    """

    def authorizer(self, identity: str) -> GlobusAuthorizer: ...

    def describe(self, identity: str) -> str: ...

    def login_action(self, identity: str, *, collections: t.Sequence[str] = (),
                     session: t.Mapping[str, t.Any] | None = None) -> str: ...

    def forget(self, identity: str) -> None: ...


# ---------------------------------------------------------------------------
# helpers shared by both modes


def _small_retry_config(max_retries: int, max_sleep: float) -> RetryConfig:
    # Globus Auth calls happen inside an agent cycle with a time budget; the
    # SDK default (5 retries, up to 10 s each) would blow it.
    return RetryConfig(max_retries=max_retries, max_sleep=max_sleep)


_SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def session_flags(
    *,
    policies: t.Iterable[str] = (),
    identities: t.Iterable[str] = (),
    domains: t.Iterable[str] = (),
    mfa: bool = False,
) -> str:
    """`` --policy P --identity I --domain D --mfa``: what ``globus-staging login``
    needs to meet a Globus session requirement (``authorization_parameters``
    of an AuthPolicyFailed-style 403).  Values that are not plain ids/domains
    are left out: they end up in a job comment and a shell command."""
    out = []
    for flag, values in (("--policy", policies), ("--identity", identities),
                         ("--domain", domains)):
        for value in dict.fromkeys(str(v).strip() for v in values or ()):
            if _SAFE_VALUE.match(value):
                out.append(f" {flag} {value}")
    if mfa:
        out.append(" --mfa")
    return "".join(out)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def auth_error_to_staging(
    err: globus_sdk.GlobusAPIError, *, who: str, action: str
) -> StagingError:
    """Classify an error from Globus Auth's token endpoint.

    4xx (invalid_grant: revoked/expired refresh token, invalid_client, ...)
    needs a person; 429/5xx is Globus having a bad moment.
    """
    code = _auth_error_code(err)
    if err.http_status in (429,) or err.http_status >= 500:
        return RetryableError(
            f"Globus Auth unavailable while getting a token for {who} "
            f"(HTTP {err.http_status} {code})"
        )
    todo = f"run `{action}`" if action.startswith(LOGIN_ACTION) else action
    return WaitingForUser(
        f"Globus Auth refused the credentials of {who} ({code}); {todo}",
        action=action,
        code=code,
    )


def _auth_error_code(err: globus_sdk.GlobusAPIError) -> str:
    # OAuth errors carry {"error": "invalid_grant"}; Globus's own carry "code".
    raw = err.raw_json if isinstance(err.raw_json, dict) else {}
    code = raw.get("error") if isinstance(raw.get("error"), str) else None
    code = code or err.code or f"HTTP {err.http_status}"
    return re.sub(r"[^A-Za-z0-9_.\-]", "", str(code))[:64] or "error"


def _secure_state_dir(path: pathlib.Path) -> None:
    """Create the parent of a root-only state file (0700) if needed."""
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(parent)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{parent}: expected a directory for the token cache")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"{parent}: token cache directory must be owned by uid {os.geteuid()} "
            f"and not group/world-writable (chmod 700 {parent})"
        )


def _open_token_cache(path: pathlib.Path, namespace: str) -> SQLiteTokenStorage:
    """A root-only SQLite token store (the SDK creates it 0600; we keep it so)."""
    path = pathlib.Path(path)
    _secure_state_dir(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: token cache must be a regular file (not a symlink)")
        if st.st_uid != os.geteuid():
            raise ConfigError(f"{path}: token cache must be owned by uid {os.geteuid()}")
        if st.st_mode & 0o077:
            # Our own state file; tighten rather than refuse to start.
            os.chmod(path, 0o600)
            log.warning("token cache %s had group/other permissions; set to 0600", path)
    try:
        return SQLiteTokenStorage(
            path,
            namespace=namespace,
            # The agent may poll from a worker thread; every use is under our lock.
            connect_params={"check_same_thread": False, "timeout": 10},
        )
    except Exception as err:  # sqlite3 errors, ValueError from the SDK
        raise ConfigError(f"{path}: cannot open the token cache ({type(err).__name__}: {err})")


class _Namespaced(TokenStorage):
    """One namespace of a shared SQLiteTokenStorage.

    One SQLite connection serves every user (thousands of users must not mean
    thousands of open files); the SDK's storage keys rows by its ``namespace``
    attribute, which we set under a lock for each operation.
    """

    def __init__(self, shared: SQLiteTokenStorage, lock: threading.Lock, namespace: str):
        super().__init__(namespace=namespace)
        self._shared = shared
        self._lock = lock

    def store_token_data_by_resource_server(
        self, token_data_by_resource_server: t.Mapping[str, TokenStorageData]
    ) -> None:
        with self._lock:
            self._shared.namespace = self.namespace
            self._shared.store_token_data_by_resource_server(token_data_by_resource_server)

    def get_token_data_by_resource_server(self) -> dict[str, TokenStorageData]:
        with self._lock:
            self._shared.namespace = self.namespace
            return self._shared.get_token_data_by_resource_server()

    def remove_token_data(self, resource_server: str) -> bool:
        with self._lock:
            self._shared.namespace = self.namespace
            return self._shared.remove_token_data(resource_server)


def _usable_cached(data: TokenStorageData | None, *, scope: str | None = None) -> bool:
    if data is None or not data.access_token:
        return False
    if scope is not None and set(data.scope.split()) != set(scope.split()):
        return False
    return data.expires_at_seconds > time.time() + _MIN_CACHED_TOKEN_LIFE


# ---------------------------------------------------------------------------
# client credentials (site service identity)


def read_secret_file(path: pathlib.Path) -> str:
    """Read a client secret from a root-only regular file.

    Refuses symlinks, non-regular files, files not owned by the agent's uid
    and files any group/other may read, with a message saying how to fix it.
    The file's directory is the admin's (its symlinks are resolved, root's
    view); the file itself is read with ``userfiles.read_user_file``.
    """
    path = pathlib.Path(path)
    full = os.path.abspath(str(path))
    try:
        data = read_user_file(full, owner=os.geteuid(), max_bytes=MAX_SECRET_FILE_BYTES,
                              forbid_mode=0o077, base=os.path.dirname(full))
    except UserFileError as err:
        problem = {
            userfiles.MISSING: "client secret file does not exist",
            userfiles.SYMLINK: "client secret file is a symlink; point the config at the "
                               "real file",
            userfiles.NOT_REGULAR: "client secret file must be a regular file",
            userfiles.CHANGED: "client secret file must be a regular file",
            userfiles.OWNER: f"client secret file must be owned by uid {os.geteuid()} "
                             f"(chown root {path})",
            userfiles.TOO_BIG: "client secret file is too large to be a secret",
        }.get(err.reason)
        if err.reason == userfiles.MODE:
            assert err.st is not None
            problem = (f"client secret file is readable by group/other "
                       f"(mode {stat.S_IMODE(err.st.st_mode):04o}); run: chmod 600 {path}")
        if problem is None or (err.directory and err.reason != userfiles.MISSING):
            problem = f"cannot open client secret file ({err})"
        raise ConfigError(f"{path}: {problem}") from None
    try:
        secret = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: client secret file is not UTF-8 text") from None
    if not secret or any(c.isspace() for c in secret):
        raise ConfigError(f"{path}: expected exactly one client secret on one line")
    return secret


class ClientCredentialsProvider:
    """Every identity maps to the site's confidential client."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret_file: pathlib.Path,
        token_storage_path: pathlib.Path,
        auth_url: str | None = None,
        max_retries: int = 2,
        max_retry_sleep: float = 5.0,
        data_access_collections: t.Iterable[str] = (),
    ) -> None:
        if not _UUID_RE.match(str(client_id)):
            raise ConfigError(f"client_id: expected a Globus client UUID, got {client_id!r}")
        self.client_id = str(client_id)
        self.client_secret_file = pathlib.Path(client_secret_file)
        for cid in data_access_collections:
            if not _UUID_RE.match(str(cid)):
                raise ConfigError(f"data_access: expected a collection UUID, got {cid!r}")
        # Collections whose data_access scope the token asks for (order kept:
        # the scope string is compared with the cached token's).
        self._data_access: list[str] = list(dict.fromkeys(
            str(c).lower() for c in data_access_collections))
        self._secret = read_secret_file(self.client_secret_file)
        self._auth_client = globus_sdk.ConfidentialAppAuthClient(
            self.client_id,
            self._secret,
            base_url=auth_url,
            app_name="pbs-globus-staging",
            retry_config=_small_retry_config(max_retries, max_retry_sleep),
        )
        self._storage = _open_token_cache(
            pathlib.Path(token_storage_path), namespace=f"client/{self.client_id}"
        )
        self._lock = threading.Lock()
        self._authorizer: ClientCredentialsAuthorizer | None = None
        cached = self._storage.get_token_data(TRANSFER_RESOURCE_SERVER)
        if cached is not None:
            # What earlier agent runs learned from ConsentRequired answers.
            for cid in _DATA_ACCESS_IN_SCOPE.findall(cached.scope or ""):
                if cid.lower() not in self._data_access:
                    self._data_access.append(cid.lower())

    @property
    def _scope(self) -> str:
        return str(login_scope(self._data_access))

    @property
    def data_access_collections(self) -> tuple[str, ...]:
        return tuple(self._data_access)

    def add_data_access(self, collection_ids: t.Iterable[str]) -> bool:
        """Ask for these collections' data_access scopes from now on.

        True if any was new (the next ``authorizer`` call gets a new token);
        False if the token asked for all of them already -- then Globus's
        ConsentRequired is not about a missing scope and needs a person.
        """
        new = [str(c).lower() for c in collection_ids
               if _UUID_RE.match(str(c)) and str(c).lower() not in self._data_access]
        if not new:
            return False
        with self._lock:
            self._data_access.extend(dict.fromkeys(new))
            self._authorizer = None
        log.info("staging client %s: asking for data_access on %s from now on",
                 self.client_id, ", ".join(new))
        return True

    def _store_token(self, response: globus_sdk.OAuthTokenResponse, scope: str) -> None:
        data = response.by_resource_server.get(TRANSFER_RESOURCE_SERVER)
        if not data:
            return
        # The scope we asked for, dependencies included (a token response need
        # not echo them): the next run compares it and learns from it.
        self._storage.store_token_data_by_resource_server({
            TRANSFER_RESOURCE_SERVER: TokenStorageData(
                resource_server=TRANSFER_RESOURCE_SERVER, identity_id=None, scope=scope,
                access_token=data["access_token"], refresh_token=None,
                expires_at_seconds=int(data["expires_at_seconds"]),
                token_type=data.get("token_type"),
            )
        })

    def __repr__(self) -> str:  # never the secret
        return f"ClientCredentialsProvider(client_id={self.client_id!r})"

    def authorizer(self, identity: str) -> GlobusAuthorizer:
        with self._lock:
            if self._authorizer is not None:
                return self._authorizer
            cached = self._storage.get_token_data(TRANSFER_RESOURCE_SERVER)
            kwargs: dict[str, t.Any] = {}
            scope = self._scope
            if _usable_cached(cached, scope=scope):
                assert cached is not None
                kwargs = {"access_token": cached.access_token,
                          "expires_at": cached.expires_at_seconds}
            try:
                # Without a cached token the SDK asks Globus Auth right here.
                self._authorizer = ClientCredentialsAuthorizer(
                    self._auth_client,
                    scope,
                    on_refresh=lambda resp, scope=scope: self._store_token(resp, scope),
                    **kwargs,
                )
            except globus_sdk.GlobusAPIError as err:
                raise auth_error_to_staging(
                    err, who=self.describe(identity), action=self.login_action(identity)
                ) from None
            except globus_sdk.NetworkError as err:
                raise RetryableError(
                    f"cannot reach Globus Auth for {self.describe(identity)} "
                    f"({type(err).__name__})"
                ) from None
            return self._authorizer

    def describe(self, identity: str) -> str:
        return f"site client {self.client_id} (acting for {identity})"

    def login_action(self, identity: str, *, collections: t.Sequence[str] = (),
                     session: t.Mapping[str, t.Any] | None = None) -> str:
        if session:
            # A client has no login session to add identities or policies to.
            return (
                f"ask the site admin: collection(s) {', '.join(collections) or '?'} "
                "require a Globus login session the staging client "
                f"{self.client_id} cannot have (Globus asks for:{session_flags(**session)})"
            )
        if collections:
            return (
                "ask the site admin to grant the staging client "
                f"{self.client_id} access to collection(s) {', '.join(collections)}"
            )
        return (
            "ask the site admin to check the staging agent's Globus client "
            f"credentials ({self.client_secret_file})"
        )

    def forget(self, identity: str) -> None:
        with self._lock:
            self._authorizer = None
            self._storage.remove_token_data(TRANSFER_RESOURCE_SERVER)


# ---------------------------------------------------------------------------
# per-user refresh tokens


@dataclasses.dataclass(frozen=True)
class UserTokens:
    """What ``globus-staging login`` leaves in the user's token file."""

    client_id: str
    refresh_token: str = dataclasses.field(repr=False)
    scope: str = ""
    collections: t.Tuple[str, ...] = ()
    created_at: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": TOKEN_FILE_FORMAT,
                "version": TOKEN_FILE_VERSION,
                "client_id": self.client_id,
                "refresh_token": self.refresh_token,
                "scope": self.scope,
                "collections": list(self.collections),
                "created_at": self.created_at,
            },
            indent=1,
        ) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "UserTokens":
        """Parse a token file; ValueError names what is wrong (never the token)."""
        try:
            doc = json.loads(text)
        except ValueError:
            raise ValueError("not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != TOKEN_FILE_FORMAT:
            raise ValueError(f"not a {TOKEN_FILE_FORMAT} file")
        if doc.get("version") != TOKEN_FILE_VERSION:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        rt = doc.get("refresh_token")
        cid = doc.get("client_id")
        if not isinstance(rt, str) or not rt or any(c.isspace() for c in rt):
            raise ValueError("no refresh token in it")
        if not isinstance(cid, str) or not cid:
            raise ValueError("no client_id in it")
        cols = doc.get("collections") or []
        if not isinstance(cols, list) or not all(isinstance(c, str) for c in cols):
            raise ValueError("'collections' must be a list of collection ids")
        scope = doc.get("scope") or ""
        created = doc.get("created_at") or 0
        return cls(
            client_id=cid,
            refresh_token=rt,
            scope=scope if isinstance(scope, str) else "",
            collections=tuple(cols),
            created_at=created if isinstance(created, int) else 0,
        )


def login_scope(collection_ids: t.Iterable[str] = ()) -> Scope:
    """The Transfer scope plus optional ``data_access`` consents.

    ``urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/scopes/<C>/data_access ...]``
    -- what GCSv5 mapped collections need (Transfer answers ConsentRequired
    without it).  Marked optional as globus-sdk's
    ``TransferClient.add_app_data_access_scope`` does; only for mapped, non
    high-assurance collections (any other is an "Unknown Scope" to Globus Auth).
    """
    ids = []
    for cid in collection_ids:
        cid = str(cid).strip()
        if not _UUID_RE.match(cid):
            raise ValueError(f"collection {cid!r}: expected a collection UUID")
        if cid.lower() not in ids:
            ids.append(cid.lower())
    scope = TransferScopes.all
    if ids:
        scope = scope.with_dependencies(
            GCSCollectionScopes(cid).data_access.with_optional(True) for cid in ids
        )
    return scope


def login_flow(
    *,
    client_id: str,
    collection_ids: t.Iterable[str] = (),
    auth_url: str | None = None,
    flow_manager: LoginFlowManager | None = None,
    session_required_policies: t.Sequence[str] = (),
    session_required_identities: t.Sequence[str] = (),
    session_required_single_domain: t.Sequence[str] = (),
    session_required_mfa: bool = False,
) -> UserTokens:
    """Interactive login (run as the user): returns the tokens to store.

    Uses the SDK's native-app flow (``NativeAppAuthClient`` +
    ``CommandLineLoginFlowManager``: prints a URL, reads the code back) and
    asks for refresh tokens, the Transfer scope and the ``data_access``
    consents of ``collection_ids``.  ``flow_manager`` replaces the
    command-line prompt (e.g. the SDK's local-server flow, or tests).  The
    ``session_required_*`` parameters go into the authorize URL as globus-sdk's
    ``GlobusAuthorizationParameters`` (what a 403 AuthPolicyFailed asks for).
    """
    ids = tuple(dict.fromkeys(str(c).strip().lower() for c in collection_ids))
    scope = login_scope(ids)
    if flow_manager is None:
        login_client = globus_sdk.NativeAppAuthClient(
            client_id, base_url=auth_url, app_name="pbs-globus-staging"
        )
        host = socket.gethostname().split(".")[0]
        flow_manager = CommandLineLoginFlowManager(
            login_client,
            request_refresh_tokens=True,
            native_prefill_named_grant=f"pbs-globus-staging on {host}",
        )
    session = dict(
        session_required_policies=list(session_required_policies) or None,
        session_required_identities=list(session_required_identities) or None,
        session_required_single_domain=list(session_required_single_domain) or None,
        session_required_mfa=True if session_required_mfa else None,
    )
    response = flow_manager.run_login_flow(
        GlobusAuthorizationParameters(
            required_scopes=[str(scope)],
            # A new session, so the requirements are met now, not by an old login.
            prompt="login" if any(session.values()) else None,
            **session,
        )
    )
    by_rs = response.by_resource_server
    token = by_rs.get(TRANSFER_RESOURCE_SERVER)
    if not token or not token.get("refresh_token"):
        raise StagingError(
            "Globus Auth did not return a Transfer refresh token; try the login again"
        )
    return UserTokens(
        client_id=str(client_id),
        refresh_token=token["refresh_token"],
        scope=str(token.get("scope") or scope),
        collections=ids,
        created_at=int(time.time()),
    )


def write_user_tokens(tokens: UserTokens, *, token_dir: pathlib.Path) -> pathlib.Path:
    """Write ``tokens`` to ``token_dir/tokens.json`` as the calling user.

    The directory is created 0700; the file is written 0600 to a temporary
    name with O_EXCL|O_NOFOLLOW, fsynced and renamed over the old one, so a
    reader never sees half a file and nothing is written through a symlink.
    """
    token_dir = pathlib.Path(token_dir)
    uid = os.geteuid()
    try:
        os.mkdir(token_dir, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(token_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise StagingError(f"{token_dir}: expected a directory (is it a symlink?); remove it")
    if st.st_uid != uid:
        raise StagingError(f"{token_dir}: owned by uid {st.st_uid}, not by you (uid {uid})")
    if st.st_mode & 0o077:
        os.chmod(token_dir, 0o700)
    dfd = os.open(token_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    tmp = f".{TOKEN_FILE_NAME}.{os.getpid()}.tmp"
    try:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except FileNotFoundError:
            pass
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
            dir_fd=dfd,
        )
        try:
            os.fchmod(fd, 0o600)  # umask may have removed bits; never added any
            os.write(fd, tokens.to_json().encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, TOKEN_FILE_NAME, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return token_dir / TOKEN_FILE_NAME


def expand_token_dir(template: str, user: str, home: str) -> tuple[str, str]:
    """Expand a token-dir template for ``user``.

    Returns ``(trusted_base, rest)``: ``trusted_base`` is a path whose
    components only root controls (the user's home as resolved by root, or
    ``/``); ``rest`` is relative to it and is checked component by component.
    """
    if template.startswith("~{user}") or template.startswith("{home}"):
        head = "~{user}" if template.startswith("~{user}") else "{home}"
        rest = template[len(head):].format(user=user, home=home)
        base = os.path.realpath(home)
    else:
        expanded = template.format(user=user, home=home)
        if not expanded.startswith("/"):
            raise ConfigError(
                f"token_dir_template {template!r}: expected '~{{user}}/...', "
                "'{home}/...' or an absolute path containing {user}"
            )
        base, rest = "/", expanded
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"token_dir_template {template!r}: '..' is not allowed")
    return base, "/".join(parts)


def _token_file_refusal(err: UserFileError, identity: str, shown: str,
                        refuse: t.Callable[..., WaitingForUser]) -> StagingError:
    """What ``read_user_file`` found wrong with a token file, as the user's fix."""
    shown_dir = os.path.dirname(shown)
    uf = userfiles
    st = err.st
    if err.reason == uf.MISSING:
        return refuse(f"{shown} does not exist (never logged in?)", LOGIN_ACTION,
                      code="NotLoggedIn")
    if err.directory:
        if err.reason in (uf.SYMLINK, uf.NOT_DIR):
            return refuse(
                f"{shown_dir} (component {err.name!r}) is a symlink or not a directory",
                "ask the site admin" if err.trusted else f"rm {shown_dir} && {LOGIN_ACTION}",
            )
        if err.reason == uf.DENIED:
            return refuse(
                f"the staging agent (root) may not read {shown_dir} "
                "(root-squashed home directory?)",
                "ask the site admin to set a token_dir_template root can read",
                code="TokenDirUnreadable",
            )
        if err.reason == uf.DIR_OWNER and st is not None:
            return refuse(f"{shown_dir} is owned by uid {st.st_uid}, not by {identity}",
                          f"rm -r {shown_dir} && {LOGIN_ACTION}")
        if err.reason == uf.DIR_WRITABLE:
            return refuse(f"{shown_dir} is writable by group or others",
                          f"chmod 700 {shown_dir}")
        return RetryableError(f"cannot open {shown_dir} for {identity}: {err.detail}")
    if err.reason == uf.SYMLINK:
        return refuse(f"{shown} is a symlink", f"rm {shown} && {LOGIN_ACTION}")
    if err.reason in (uf.NOT_REGULAR, uf.CHANGED):
        return refuse(f"{shown} is not a regular file", f"rm {shown} && {LOGIN_ACTION}")
    if err.reason == uf.OWNER and st is not None:
        return refuse(f"{shown} is owned by uid {st.st_uid}, not by {identity}",
                      f"rm {shown} && {LOGIN_ACTION}")
    if err.reason == uf.MODE and st is not None:
        return refuse(f"{shown} may be read by group or others "
                      f"(mode {stat.S_IMODE(st.st_mode):04o})", f"chmod 600 {shown}")
    if err.reason == uf.TOO_BIG:
        return refuse(f"{shown} is larger than {MAX_TOKEN_FILE_BYTES} bytes",
                      f"rm {shown} && {LOGIN_ACTION}")
    return refuse(f"cannot open {shown} ({err.detail or err.reason})", LOGIN_ACTION)


class UserTokenProvider:
    """Per-user refresh tokens, read by root from each user's own directory."""

    def __init__(
        self,
        *,
        client_id: str,
        token_dir_template: str = DEFAULT_TOKEN_DIR_TEMPLATE,
        cache_path: pathlib.Path,
        auth_url: str | None = None,
        max_retries: int = 2,
        max_retry_sleep: float = 5.0,
    ) -> None:
        if not _UUID_RE.match(str(client_id)):
            raise ConfigError(f"client_id: expected a Globus client UUID, got {client_id!r}")
        if "{user}" not in token_dir_template and not token_dir_template.startswith("{home}"):
            raise ConfigError(
                f"token_dir_template {token_dir_template!r}: must contain {{user}} or start "
                "with {home} (each user needs their own directory)"
            )
        # Validate the template's shape once, with a dummy user.
        expand_token_dir(token_dir_template, "user", "/home/user")
        self.client_id = str(client_id)
        self.token_dir_template = token_dir_template
        self._login_client = globus_sdk.NativeAppAuthClient(
            self.client_id,
            base_url=auth_url,
            app_name="pbs-globus-staging",
            retry_config=_small_retry_config(max_retries, max_retry_sleep),
        )
        self._shared = _open_token_cache(pathlib.Path(cache_path), namespace="DEFAULT")
        self._db_lock = threading.Lock()
        self._lock = threading.RLock()
        # identity -> (sha256 of the file's refresh token, authorizer)
        self._authorizers: dict[str, tuple[str, RefreshTokenAuthorizer]] = {}

    def __repr__(self) -> str:
        return (
            f"UserTokenProvider(client_id={self.client_id!r}, "
            f"token_dir_template={self.token_dir_template!r})"
        )

    # -- paths -----------------------------------------------------------------

    def _passwd(self, identity: str) -> pwd.struct_passwd:
        if not identity or "/" in identity or identity.startswith(".") or "\0" in identity:
            raise WaitingForUser(
                f"{identity!r} is not a valid user name", action="ask the site admin"
            )
        try:
            return pwd.getpwnam(identity)
        except KeyError:
            raise WaitingForUser(
                f"user {identity!r} has no account on the PBS server host, so the staging "
                "agent cannot find their Globus login",
                action="ask the site admin",
                code="NoSuchUser",
            ) from None

    def token_path(self, identity: str) -> str:
        """Where ``identity``'s token file is (for messages and the CLI)."""
        pw = self._passwd(identity)
        base, rest = expand_token_dir(self.token_dir_template, identity, pw.pw_dir)
        return os.path.join(base, rest, TOKEN_FILE_NAME)

    def _display_path(self, identity: str) -> str:
        if self.token_dir_template.startswith("~{user}"):
            rest = self.token_dir_template[len("~{user}"):].format(user=identity, home="")
            return f"~{identity}{rest.rstrip('/')}/{TOKEN_FILE_NAME}"
        try:
            return self.token_path(identity)
        except StagingError:
            return TOKEN_FILE_NAME

    # -- race-free read as root ----------------------------------------------------

    def read_tokens(self, identity: str) -> UserTokens:
        """Read and validate ``identity``'s token file; WaitingForUser if unusable."""
        pw = self._passwd(identity)
        base, rest = expand_token_dir(self.token_dir_template, identity, pw.pw_dir)
        shown = self._display_path(identity)

        def refuse(problem: str, action: str, code: str = "TokenFileUnsafe") -> WaitingForUser:
            return WaitingForUser(
                f"cannot use the Globus login of {identity}: {problem}; run `{action}`",
                action=action,
                code=code,
            )

        try:
            data = read_user_file(
                os.path.join(base, rest, TOKEN_FILE_NAME), owner=pw.pw_uid,
                max_bytes=MAX_TOKEN_FILE_BYTES, forbid_mode=0o077, base=base,
                # the user's directories: theirs or root's, the token dir theirs
                dir_owners=(pw.pw_uid, 0), parent_owners=(pw.pw_uid,), private_dirs=True,
            )
        except UserFileError as err:
            raise _token_file_refusal(err, identity, shown, refuse) from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse(f"{shown} is unusable (not UTF-8 text)", LOGIN_ACTION,
                         code="TokenFileInvalid") from None
        try:
            tokens = UserTokens.from_json(text)
        except ValueError as err:  # from_json's messages never contain the token
            raise refuse(f"{shown} is unusable ({err})", LOGIN_ACTION,
                         code="TokenFileInvalid") from None
        if tokens.client_id != self.client_id:
            raise refuse(
                f"{shown} was written for another Globus client ({tokens.client_id})",
                LOGIN_ACTION, code="TokenFileInvalid",
            )
        return tokens

    # -- the provider protocol ------------------------------------------------------

    def authorizer(self, identity: str) -> GlobusAuthorizer:
        # The file is re-read on every call (a few syscalls): a user who logs in
        # again, or deletes the file to withdraw consent, takes effect at once.
        tokens = self.read_tokens(identity)
        rt_hash = _sha256(tokens.refresh_token)
        with self._lock:
            hit = self._authorizers.get(identity)
            if hit is not None and hit[0] == rt_hash:
                return hit[1]
            # The cache is keyed by user *and* login (a hash of the refresh
            # token in the user's file), so a new login never picks up an access
            # token minted from an older one.
            namespace = f"user/{identity}/{rt_hash[:32]}"
            self._purge(identity, keep=namespace)
            storage = _Namespaced(self._shared, self._db_lock, namespace)
            cached = storage.get_token_data(TRANSFER_RESOURCE_SERVER)
            refresh_token = tokens.refresh_token
            kwargs: dict[str, t.Any] = {}
            if cached is not None:
                # Globus may rotate refresh tokens; the newest one lives only in
                # our root-only cache (never written back into the user's dir).
                if cached.refresh_token:
                    refresh_token = cached.refresh_token
                if _usable_cached(cached):
                    kwargs = {"access_token": cached.access_token,
                              "expires_at": cached.expires_at_seconds}

            def on_refresh(response: globus_sdk.OAuthTokenResponse) -> None:
                data = response.by_resource_server.get(TRANSFER_RESOURCE_SERVER)
                if not data:
                    return
                storage.store_token_data_by_resource_server({
                    TRANSFER_RESOURCE_SERVER: TokenStorageData(
                        resource_server=TRANSFER_RESOURCE_SERVER,
                        identity_id=None,
                        scope=str(data.get("scope") or ""),
                        access_token=data["access_token"],
                        refresh_token=data.get("refresh_token") or refresh_token,
                        expires_at_seconds=int(data["expires_at_seconds"]),
                        token_type=data.get("token_type"),
                    )
                })

            try:
                authorizer = RefreshTokenAuthorizer(
                    refresh_token, self._login_client, on_refresh=on_refresh, **kwargs
                )
            except globus_sdk.GlobusAPIError as err:
                raise auth_error_to_staging(
                    err, who=self.describe(identity), action=LOGIN_ACTION
                ) from None
            except globus_sdk.NetworkError as err:
                raise RetryableError(
                    f"cannot reach Globus Auth for {self.describe(identity)} "
                    f"({type(err).__name__})"
                ) from None
            self._authorizers[identity] = (rt_hash, authorizer)
            return authorizer

    def describe(self, identity: str) -> str:
        return f"user {identity} (Globus login in {self._display_path(identity)})"

    def login_action(self, identity: str, *, collections: t.Sequence[str] = (),
                     session: t.Mapping[str, t.Any] | None = None) -> str:
        action = LOGIN_ACTION + "".join(f" --collection {c}" for c in collections)
        return action + (session_flags(**session) if session else "")

    def forget(self, identity: str) -> None:
        with self._lock:
            self._authorizers.pop(identity, None)
            # A cached access token that Globus just refused must not come back.
            self._purge(identity, keep=None)

    def _purge(self, identity: str, *, keep: str | None) -> None:
        """Drop cached tokens of ``identity``'s other (older) logins."""
        prefix = f"user/{identity}/"
        with self._db_lock:
            for namespace in list(self._shared.iter_namespaces()):
                if namespace.startswith(prefix) and namespace != keep:
                    self._shared.namespace = namespace
                    self._shared.remove_token_data(TRANSFER_RESOURCE_SERVER)
