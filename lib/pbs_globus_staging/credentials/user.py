"""Per-user refresh tokens, read by root from each user's own directory."""
from __future__ import annotations

import os
import pathlib
import pwd
import threading
import typing as t

import globus_sdk
from globus_sdk.authorizers import GlobusAuthorizer, RefreshTokenAuthorizer
from globus_sdk.token_storage import TokenStorageData

from ..errors import ConfigError, RetryableError, StagingError, WaitingForUser
from ..userfiles import UserFileError, read_user_file
from .common import (_UUID_RE, DEFAULT_TOKEN_DIR_TEMPLATE, LOGIN_ACTION, MAX_TOKEN_FILE_BYTES,
                     TOKEN_FILE_NAME, TRANSFER_RESOURCE_SERVER, _sha256, _small_retry_config,
                     auth_error_to_staging, session_flags)
from .storage import _Namespaced, _open_token_cache, _usable_cached
from .tokenfile import UserTokens, _token_file_refusal, expand_token_dir

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
