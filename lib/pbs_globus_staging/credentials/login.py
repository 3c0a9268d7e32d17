"""``globus-staging login`` (run as the user): the login flow and the token file write."""
from __future__ import annotations

import os
import pathlib
import socket
import stat
import time
import typing as t

import globus_sdk
from globus_sdk.gare import GlobusAuthorizationParameters
from globus_sdk.login_flows import CommandLineLoginFlowManager, LoginFlowManager

from ..errors import StagingError
from .common import TOKEN_FILE_NAME, TRANSFER_RESOURCE_SERVER, login_scope
from .tokenfile import UserTokens

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
