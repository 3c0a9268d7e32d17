"""Globus Auth as the emulator plays it: consents, sessions and the browser login.

Consents come from the token, as on the real service: a GCSv5 *mapped*
collection that is not high assurance accepts a Transfer request only when the
token's Transfer scope carries the collection's dependent ``data_access`` scope
(``urn:globus:auth:scope:transfer.api.globus.org:all[*https://auth.globus.org/
scopes/<C>/data_access]``).  The rule is globus-cli's
``Endpointish.requires_data_access_scope`` (``entity_type ==
"GCSv5_mapped_collection" and high_assurance is False``); the scope shape is
globus-sdk's ``TransferClient.add_app_data_access_scope``, which also warns that
asking it for any other kind of collection is an "Unknown Scope" at login.

A collection may name authentication policies (``required_policies``); a token
whose login session did not satisfy them is refused with the
``AuthPolicyFailed`` shape globus-cli's tests record
(tests/functional/exception_handling/test_session_hooks.py).

The authorize page is an emulator-only identity picker standing in for the
identity provider: whoever follows the URL picks one of the emulator's
identities; that login satisfies the ``session_required_policies`` the URL asked
for.  The code goes back through ``redirect_uri`` (by default
``<auth base>/v2/web/auth-code``, which shows it to paste, as globus-sdk's
``CommandLineLoginFlowManager`` expects).  PKCE (S256) is checked at the token
endpoint as for any native app.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import re
import secrets
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urlencode, urlsplit

from .model import TRANSFER_SCOPE, AccessToken, RefreshToken, TRANSFER_RS, data_access_scope

if TYPE_CHECKING:  # pragma: no cover
    from .core import GlobusEmulator

DATA_ACCESS_RE = re.compile(
    r"^https://auth\.globus\.org/scopes/([0-9a-fA-F-]{36})/data_access$")
CODE_LIFETIME = 600
MAPPED = "GCSv5_mapped_collection"
POLICY_MESSAGE = "Failing collection authentication policy"
CONSENT_MESSAGE = "Missing required data_access consent"


@dataclasses.dataclass
class PendingCode:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    identity_id: str
    code_challenge: str
    offline: bool
    session_policies: Tuple[str, ...]
    expires_at: float


# -- scopes ---------------------------------------------------------------------
def split_scopes(text: str) -> List[str]:
    """A scope string's top-level scopes (spaces inside [...] belong to a dependency)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == " " and depth == 0:
            if cur:
                out.append(cur)
            cur = ""
        else:
            cur += ch
    if cur:
        out.append(cur)
    return out


def parse_scope(scope: str) -> List[Tuple[str, List[Tuple[str, bool]]]]:
    """``"a[*b c] d"`` -> ``[("a", [("b", True), ("c", False)]), ("d", [])]``
    (one level of dependencies is all the emulator needs)."""
    out: List[Tuple[str, List[Tuple[str, bool]]]] = []
    for top in split_scopes(scope):
        base, _, rest = top.partition("[")
        deps = []
        for dep in split_scopes(rest[:-1] if rest.endswith("]") else rest):
            optional = dep.startswith("*")
            deps.append((dep.lstrip("*").split("[", 1)[0], optional))
        out.append((base.lstrip("*"), deps))
    return out


def needs_data_access(coll: Any) -> bool:
    return coll.entity_type == MAPPED and not coll.high_assurance


def consented_collections(scope: str) -> set:
    found = set()
    for base, deps in parse_scope(scope):
        if base != TRANSFER_SCOPE:
            continue
        for dep, _optional in deps:
            m = DATA_ACCESS_RE.match(dep)
            if m:
                found.add(m.group(1).lower())
    return found


def grant_scope(emu: "GlobusEmulator", scope: str) -> str:
    """The scope Globus Auth would grant for ``scope``: a dependent data_access
    scope of a collection that has none (unknown, guest, high assurance) is an
    unknown scope, optional ("*") or not -- globus-sdk's
    ``add_app_data_access_scope`` marks them optional and still warns of
    "Unknown Scope" errors for such collections.  ("*" lets the user decline
    the consent; the emulator's picker always grants.)"""
    from .api import OAuthError

    granted = []
    for top in split_scopes(scope):
        base, deps = parse_scope(top)[0]
        if base != TRANSFER_SCOPE or not deps:
            granted.append(top)
            continue
        keep = []
        for dep, optional in deps:
            m = DATA_ACCESS_RE.match(dep)
            coll = emu._collections.get(m.group(1).lower()) if m else None
            if m and (coll is None or not needs_data_access(coll)):
                raise OAuthError(400, "invalid_scope", f"Unknown scope: {dep}")
            keep.append(("*" if optional else "") + dep)
        granted.append(f"{base}[{' '.join(keep)}]" if keep else base)
    return " ".join(granted)


def full_login_scope(emu: "GlobusEmulator") -> str:
    """Transfer with the data_access consent of every collection that needs one:
    what a login naming all of them leaves (a test convenience)."""
    deps = [f"*https://auth.globus.org/scopes/{cid}/data_access"
            for cid, coll in emu._collections.items() if needs_data_access(coll)]
    return f"{TRANSFER_SCOPE}[{' '.join(deps)}]" if deps else TRANSFER_SCOPE


def check_access(emu: "GlobusEmulator", token: Optional[AccessToken],
                 collection_ids: Iterable[str]) -> None:
    """Refuse a Transfer call on ``collection_ids`` as Globus would: 403
    ConsentRequired for a missing data_access consent, then 403 AuthPolicyFailed
    for a session that does not satisfy a collection's policies."""
    from .api import ApiError

    if token is None:
        return
    ids = [c for c in dict.fromkeys(collection_ids) if c in emu._collections]
    consented = consented_collections(token.scope)
    scopes = [data_access_scope(c) for c in ids
              if needs_data_access(emu._collections[c]) and c.lower() not in consented]
    if scopes:
        raise ApiError(403, "ConsentRequired", CONSENT_MESSAGE, required_scopes=scopes,
                       authorization_parameters={"session_message": CONSENT_MESSAGE,
                                                 "required_scopes": scopes})
    missing = [p for c in ids for p in emu._collections[c].required_policies
               if p not in token.session_policies]
    if missing:
        raise ApiError(403, "AuthPolicyFailed", POLICY_MESSAGE,
                       authorization_parameters={
                           "session_message": POLICY_MESSAGE,
                           "session_required_policies": ",".join(dict.fromkeys(missing))})


def stamp_session(emu: "GlobusEmulator", doc: Dict[str, Any],
                  policies: Tuple[str, ...]) -> Dict[str, Any]:
    """Record the login session's policies on the access tokens of ``doc``."""
    for entry in [doc, *doc.get("other_tokens", [])]:
        at = emu._access_tokens.get(entry.get("access_token", ""))
        if at is not None:
            at.session_policies = tuple(policies)
    return doc


# -- the browser login (authorization code + PKCE) -------------------------------
def _csv(value: str) -> List[str]:
    return [v for v in (value or "").split(",") if v]


def _page(title: str, body: str) -> str:
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def _redirect_ok(emu: "GlobusEmulator", uri: str) -> bool:
    # What a native app may register: Globus's code-display page or loopback.
    parts = urlsplit(uri)
    if uri.split("?", 1)[0].rstrip("/") == emu.url + "/v2/web/auth-code":
        return True
    return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")


def authorize(emu: "GlobusEmulator", query: Dict[str, str]) -> Tuple[int, Dict[str, str], str]:
    """GET /v2/oauth2/authorize: the identity picker, then the redirect with a code."""
    client = emu._clients.get(query.get("client_id", ""))
    problem = None
    if client is None:
        problem = "unknown client_id"
    elif query.get("response_type") != "code":
        problem = "response_type must be 'code'"
    elif not _redirect_ok(emu, query.get("redirect_uri", "")):
        problem = "redirect_uri is not registered for this client"
    elif client.secret is None and (not query.get("code_challenge")
                                    or query.get("code_challenge_method") != "S256"):
        problem = "a native app must send a PKCE code_challenge (S256)"
    elif not query.get("scope"):
        problem = "scope is required"
    if problem:
        return 400, {}, _page("Globus Auth (emulator): bad request",
                              f"<p class=\"error\">{html.escape(problem)}</p>")
    try:
        scope = grant_scope(emu, query["scope"])
    except Exception as exc:  # OAuthError: unknown scope
        return 400, {}, _page("Globus Auth (emulator): bad request",
                              f"<p class=\"error\">{html.escape(str(getattr(exc, 'description', exc)))}</p>")
    wanted = [i.lower() for i in _csv(query.get("session_required_identities", ""))]
    choices = [ident for ident in emu._identities.values()
               if not wanted or ident.identity_id.lower() in wanted]
    chosen = query.get("emulator_identity")
    if not chosen:
        items = []
        for ident in choices:
            href = "/v2/oauth2/authorize?" + urlencode({**query,
                                                       "emulator_identity": ident.identity_id})
            items.append(f"<li><a class=\"identity\" data-username=\"{html.escape(ident.username)}\""
                         f" href=\"{html.escape(href)}\">{html.escape(ident.username)}"
                         f" ({ident.identity_id})</a></li>")
        message = query.get("session_message")
        body = (f"<p class=\"session-message\">{html.escape(message)}</p>\n" if message else "")
        body += (f"<p>Requested access: <code>{html.escape(scope)}</code></p>\n"
                 "<p>Choose the identity to log in with (emulator only):</p>\n"
                 f"<ul>\n{''.join(items)}\n</ul>")
        return 200, {}, _page("Log in to Globus (emulator)", body)
    if chosen not in {i.identity_id for i in choices}:
        return 400, {}, _page("Globus Auth (emulator): bad request",
                              "<p class=\"error\">that identity may not be used here</p>")
    pending = PendingCode(
        code=secrets.token_urlsafe(24), client_id=client.client_id,  # type: ignore[union-attr]
        redirect_uri=query["redirect_uri"], scope=scope, identity_id=chosen,
        code_challenge=query.get("code_challenge", ""),
        offline=query.get("access_type") == "offline",
        session_policies=tuple(_csv(query.get("session_required_policies", ""))),
        expires_at=emu.now() + CODE_LIFETIME)
    emu._auth_codes[pending.code] = pending
    sep = "&" if "?" in pending.redirect_uri else "?"
    params = {"code": pending.code}
    if query.get("state"):
        params["state"] = query["state"]
    return 302, {"Location": pending.redirect_uri + sep + urlencode(params)}, _page(
        "Redirecting", "<p>Redirecting back to the application.</p>")


def auth_code_page(query: Dict[str, str]) -> Tuple[int, Dict[str, str], str]:
    """GET /v2/web/auth-code: Globus's page that shows a native app's code."""
    code = query.get("code", "")
    if not code:
        return 400, {}, _page("Globus Auth (emulator)", "<p class=\"error\">no code</p>")
    return 200, {}, _page("Native App Authorization Code",
                          "<p>Copy this code and paste it where the application asks:</p>\n"
                          f"<code id=\"auth-code\">{html.escape(code)}</code>")


def exchange_code(emu: "GlobusEmulator", form: Dict[str, str], client_id: str,
                  confidential: bool) -> Dict[str, Any]:
    """grant_type=authorization_code at /v2/oauth2/token."""
    from .api import OAuthError, _token_doc

    pending = emu._auth_codes.pop(form.get("code", ""), None)
    if pending is None or pending.expires_at <= emu.now() or pending.client_id != client_id:
        raise OAuthError(400, "invalid_grant", "the authorization code is not valid")
    if form.get("redirect_uri") != pending.redirect_uri:
        raise OAuthError(400, "invalid_grant", "redirect_uri does not match the authorize call")
    if not confidential or pending.code_challenge:
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
        if digest.rstrip(b"=").decode() != pending.code_challenge:
            raise OAuthError(400, "invalid_grant", "code_verifier does not match")
    refresh = None
    if pending.offline:
        rt = RefreshToken("Rt" + secrets.token_urlsafe(32), pending.identity_id, client_id,
                          pending.scope, TRANSFER_RS, session_policies=pending.session_policies)
        emu._refresh_tokens[rt.token] = rt
        refresh = rt.token
    doc = _token_doc(emu, pending.identity_id, client_id, pending.scope, refresh)
    return stamp_session(emu, doc, pending.session_policies)


__all__ = ["authorize", "auth_code_page", "exchange_code", "check_access", "grant_scope",
           "full_login_scope", "needs_data_access", "parse_scope", "stamp_session"]
