"""Client credentials: the site's own service identity (a confidential Globus client)."""
from __future__ import annotations

import logging
import os
import pathlib
import stat
import threading
import typing as t

import globus_sdk
from globus_sdk.authorizers import ClientCredentialsAuthorizer, GlobusAuthorizer
from globus_sdk.token_storage import TokenStorageData

from .. import userfiles
from ..errors import ConfigError, RetryableError
from ..userfiles import UserFileError, read_user_file
from .common import (_DATA_ACCESS_IN_SCOPE, _UUID_RE, MAX_SECRET_FILE_BYTES,
                     TRANSFER_RESOURCE_SERVER, _small_retry_config, auth_error_to_staging,
                     login_scope, session_flags)
from .storage import _open_token_cache, _usable_cached

log = logging.getLogger("pbs_globus_staging.credentials")

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
