"""What both credential modes share: constants, the provider protocol, the
Transfer scope, Globus Auth error classification, the login command's flags."""
from __future__ import annotations

import hashlib
import re
import typing as t

import globus_sdk
from globus_sdk.authorizers import GlobusAuthorizer
from globus_sdk.scopes import GCSCollectionScopes, Scope, TransferScopes
from globus_sdk.transport import RetryConfig

from ..errors import RetryableError, StagingError, WaitingForUser

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
