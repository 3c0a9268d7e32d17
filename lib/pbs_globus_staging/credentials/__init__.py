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

import os  # noqa: F401  (tests patch credentials.os.open: the reads go through os)

from .client import ClientCredentialsProvider, read_secret_file
from .common import (DEFAULT_TOKEN_DIR_TEMPLATE, LOGIN_ACTION, MAX_SECRET_FILE_BYTES,
                     MAX_TOKEN_FILE_BYTES, TOKEN_FILE_FORMAT, TOKEN_FILE_NAME,
                     TOKEN_FILE_VERSION, TRANSFER_RESOURCE_SERVER, CredentialProvider,
                     auth_error_to_staging, login_scope, session_flags)
from .login import login_flow, write_user_tokens
from .tokenfile import UserTokens, expand_token_dir
from .user import UserTokenProvider

__all__ = [
    "ClientCredentialsProvider", "CredentialProvider", "UserTokenProvider", "UserTokens",
    "auth_error_to_staging", "expand_token_dir", "login_flow", "login_scope",
    "read_secret_file", "session_flags", "write_user_tokens",
    "DEFAULT_TOKEN_DIR_TEMPLATE", "LOGIN_ACTION", "MAX_SECRET_FILE_BYTES",
    "MAX_TOKEN_FILE_BYTES", "TOKEN_FILE_FORMAT", "TOKEN_FILE_NAME", "TOKEN_FILE_VERSION",
    "TRANSFER_RESOURCE_SERVER",
]
