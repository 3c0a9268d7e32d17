"""How the Globus backend maps what Globus answers to the staging errors.

The table is in ``globus_backend``'s docstring.  ``TransferErrors`` knows the
credential provider (for the login command a person must run) and nothing of
submission or polling.
"""
from __future__ import annotations

import re
import typing as t

import globus_sdk

from .backend import EndpointTrouble
from .credentials import CredentialProvider, auth_error_to_staging
from .errors import FatalError, RetryableError, WaitingForUser

# Not an error of Globus as a whole: globus-sdk's transfer retry check
# (services/transfer/transport.py) does not retry a 5xx whose code contains these.
ENDPOINT_ERROR_CODES = ("ExternalError", "EndpointError")
MAX_EXPLAIN = 300
_UUID_IN_SCOPE = re.compile(
    r"scopes/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"/data_access"
)


def _one_line(text: t.Any, limit: int = MAX_EXPLAIN) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def todo(action: str) -> str:
    """``run `CMD``` for one of our commands, else the words as they are."""
    return f"run `{action}`" if action.startswith("globus-staging") else action


class TransferErrors:
    """Globus API errors -> ``WaitingForUser`` / ``RetryableError`` /
    ``EndpointTrouble`` / ``FatalError``, with the fix a person must make."""

    def __init__(self, credentials: CredentialProvider) -> None:
        self.credentials = credentials

    def raise_auth(self, identity: str, what: str, err: globus_sdk.GlobusAPIError) -> t.NoReturn:
        exc = auth_error_to_staging(
            err,
            who=self.credentials.describe(identity),
            action=self.credentials.login_action(identity),
        )
        if isinstance(exc, WaitingForUser):
            self.credentials.forget(identity)
        raise exc from None

    def raise_transfer(
        self,
        identity: str,
        what: str,
        err: globus_sdk.GlobusAPIError,
        collections: t.Sequence[str],
    ) -> t.NoReturn:
        status = err.http_status
        code = err.code or f"HTTP{status}"
        text = _one_line(err.message or err.http_reason)
        session = None if self.is_consent_required(err) else (
            self.session_needs(err) if status == 403 else None)
        if session is not None:
            # A login that meets the collection's policy fixes it: wait for it.
            # Decided by authorization_parameters, whatever the code (as
            # globus-cli's session_hook); ConsentRequired has its own branch.
            short = re.sub(r"[^A-Za-z0-9_.]", "", code)[:64] or "AuthorizationRequired"
            why = _one_line(err.info.authorization_parameters.session_message or text, 160)
            # No --collection flags: a login keeps the consents of the one it
            # replaces (commands/login.py), and the comment stays short.
            action = self.credentials.login_action(
                identity, collections=list(collections) if self.is_client() else (),
                session=session)
            raise WaitingForUser(
                f"Globus {what}: {short}: {why}; a new Globus login of "
                f"{self.credentials.describe(identity)} is needed; {todo(action)}",
                action=action,
                code=short,
            ) from None
        if status == 401 or code.endswith("AuthenticationFailed"):
            self.credentials.forget(identity)
            action = self.credentials.login_action(identity)
            raise WaitingForUser(
                f"Globus refused the credentials of {self.credentials.describe(identity)} "
                f"({code}); {todo(action)}",
                action=action,
                code="AuthenticationFailed",
            ) from None
        if self.is_consent_required(err):
            needed = self.consent_collections(err) or list(collections)
            action = self.credentials.login_action(identity, collections=needed)
            raise WaitingForUser(
                f"Globus needs consent for collection(s) {', '.join(needed) or '?'} "
                f"from {self.credentials.describe(identity)}; {todo(action)}",
                action=action,
                code="ConsentRequired",
            ) from None
        if status >= 500 and any(c in code for c in ENDPOINT_ERROR_CODES):
            raise EndpointTrouble(f"Globus {what}: a collection's endpoint answered "
                                  f"{code}: {text}") from None
        if status == 429 or status >= 500 or status in (408,):
            raise RetryableError(f"Globus {what}: HTTP {status} {code}: {text}") from None
        raise FatalError(f"Globus {what}: {code}: {text}") from None

    def learn_data_access(self, identity: str, err: globus_sdk.GlobusAPIError) -> bool:
        """A client (client-credentials mode) consents to a mapped collection's
        data_access by asking for the scope; only a person can for a user."""
        learn = getattr(self.credentials, "add_data_access", None)
        if learn is None or not self.is_consent_required(err):
            return False
        return bool(learn(self.consent_collections(err)))

    @staticmethod
    def is_consent_required(err: globus_sdk.GlobusAPIError) -> bool:
        code = err.code or ""
        return code == "ConsentRequired" or code.endswith(".ConsentRequired")

    @staticmethod
    def session_needs(err: globus_sdk.GlobusAPIError) -> dict[str, t.Any] | None:
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

    def is_client(self) -> bool:
        return hasattr(self.credentials, "add_data_access")

    @staticmethod
    def consent_collections(err: globus_sdk.GlobusAPIError) -> list[str]:
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
