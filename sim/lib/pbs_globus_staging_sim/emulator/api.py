"""HTTP semantics of the emulated Transfer (``/v0.10``) and Auth (``/v2``) APIs.

``handle()`` maps one request to (status, extra headers, JSON body); the HTTP
server in ``server.py`` only moves bytes.  Shapes follow
``reference/globus-transfer.md`` and globus-sdk's canned payloads.
"""
from __future__ import annotations

import base64
import binascii
import datetime as _dt
import json
import math
import re
import uuid
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from . import auth as authz
from .engine import PathRefused, local_path, normalize
from .model import (ACTIVE, AUTH_RS, FAILED, INACTIVE, SYNC_LEVELS, TRANSFER_RS,
                    TRANSFER_SCOPE, Call, Item, Task, iso,
                    new_request_id)

if TYPE_CHECKING:  # pragma: no cover
    from .core import GlobusEmulator

Result = Tuple[int, Dict[str, str], Dict[str, Any]]

DEFAULT_CODES = {
    400: "ClientError.BadRequest",
    401: "AuthenticationFailed",
    403: "PermissionDenied",
    404: "ClientError.NotFound",
    409: "Conflict",
    429: "RequestLimitExceeded",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}
TASK_LIST_DEFAULT_LIMIT = 10      # as Globus: callers must ask for more
MAX_LIMIT = 1000
SUCCESSFUL_PAGE = 100
TASK_RE = re.compile(r"^/v0\.10/task/([^/]+)(/[a-z_]+)?$")
ENDPOINT_RE = re.compile(r"^/v0\.10/endpoint/([^/]+)$")
LS_RE = re.compile(r"^/v0\.10/operation/endpoint/([^/]+)/ls$")
OP_RE = re.compile(r"^/v0\.10/operation/endpoint/([^/]+)/(stat|mkdir)$")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str = "") -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.description = description


def handle(emu: "GlobusEmulator", method: str, raw_path: str, headers: Dict[str, str],
           body: bytes) -> Result:
    parts = urlsplit(raw_path)
    path = unquote(parts.path)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    with emu._lock:
        emu._request_token = None
        identity = _peek_identity(emu, headers)
        status, extra_headers, doc = _dispatch(emu, method, path, query, headers, body,
                                               identity)
        emu._calls.append(Call(method, path, query, identity, status))
    return status, extra_headers, doc


def _error(status: int, code: str, message: str, path: str, **extra: Any) -> Dict[str, Any]:
    doc = {"code": code, "message": message, "request_id": new_request_id(),
           "resource": path}
    doc.update(extra)
    return doc


def _dispatch(emu: "GlobusEmulator", method: str, path: str, query: Dict[str, str],
              headers: Dict[str, str], body: bytes, identity: Optional[str]) -> Result:
    if emu._outage:
        return 503, {}, _error(503, "ServiceUnavailable",
                               "The service is temporarily unavailable", path)
    for rule in list(emu._failures):
        if path.startswith(rule.path_prefix) and rule.method in (None, method):
            rule.count -= 1
            if rule.count <= 0:
                emu._failures.remove(rule)
            hdrs = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else {}
            code = rule.code or DEFAULT_CODES.get(rule.status, "Error")
            return rule.status, hdrs, _error(rule.status, code,
                                             f"Injected failure ({rule.status})", path)
    try:
        if path == "/v2/oauth2/authorize" and method == "GET":
            return authz.authorize(emu, query)
        if path == "/v2/web/auth-code" and method == "GET":
            return authz.auth_code_page(query)
        if path.startswith("/v2/"):
            return 200, {}, _auth_route(emu, method, path, query, headers, body)
        if path.startswith("/v0.10/"):
            who = _authenticate(emu, headers)
            limited = _rate_limit(emu, who)
            if limited is not None:
                return 429, {"Retry-After": str(limited)}, _error(
                    429, "RequestLimitExceeded", "Rate limit exceeded", path)
            return _transfer_route(emu, method, path, query, body, who)
        raise ApiError(404, "ClientError.NotFound", f"No such resource: {path}")
    except ApiError as exc:
        return exc.status, {}, _error(exc.status, exc.code, exc.message, path, **exc.extra)
    except OAuthError as exc:
        doc = {"error": exc.error}
        if exc.description:
            doc["error_description"] = exc.description
        return exc.status, {}, doc


# -- auth -----------------------------------------------------------------------
def _peek_identity(emu: "GlobusEmulator", headers: Dict[str, str]) -> Optional[str]:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        at = emu._access_tokens.get(auth[7:].strip())
        return at.identity_id if at else None
    return None


def _authenticate(emu: "GlobusEmulator", headers: Dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise ApiError(401, "AuthenticationFailed", "No Authorization header provided")
    at = emu._access_tokens.get(auth[7:].strip())
    if at is None or at.revoked or at.expires_at <= emu.now():
        raise ApiError(401, "AuthenticationFailed", "Token is not active")
    if at.resource_server != TRANSFER_RS:
        raise ApiError(401, "AuthenticationFailed",
                       "Token is not valid for transfer.api.globus.org")
    emu._request_token = at  # for the consent checks (authz.check_access)
    return at.identity_id


def _rate_limit(emu: "GlobusEmulator", identity: str) -> Optional[int]:
    """Token bucket per identity; returns Retry-After seconds when refused."""
    rps = emu._requests_per_second
    if rps is None:
        return None
    now = emu.now()
    capacity = max(1.0, rps)
    tokens, last = emu._buckets.get(identity, (capacity, now))
    tokens = min(capacity, tokens + (now - last) * rps)
    if tokens < 1.0:
        emu._buckets[identity] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / rps))
    emu._buckets[identity] = (tokens - 1.0, now)
    return None


def _client_auth(emu: "GlobusEmulator", headers: Dict[str, str],
                 form: Dict[str, str]) -> Tuple[str, bool]:
    """(client_id, confidential) from HTTP Basic or, for public clients, the form."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("basic "):
        try:
            cid, _, secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError(401, "invalid_client", "malformed Basic credentials") from None
        client = emu._clients.get(cid)
        if client is None or client.secret is None or client.secret != secret:
            raise OAuthError(401, "invalid_client", "client authentication failed")
        return cid, True
    cid = form.get("client_id", "")
    client = emu._clients.get(cid)
    if client is None or client.secret is not None:
        raise OAuthError(401, "invalid_client", "client authentication failed")
    return cid, False


def _resource_server(scope: str) -> str:
    base = scope.split("[", 1)[0]
    if base.startswith(TRANSFER_SCOPE):
        return TRANSFER_RS
    if base in ("openid", "profile", "email") or base.startswith(
            "urn:globus:auth:scope:auth.globus.org:"):
        return AUTH_RS
    m = re.match(r"^https://auth\.globus\.org/scopes/([^/]+)/", base)
    if m:
        return m.group(1)
    m = re.match(r"^urn:globus:auth:scope:([^:]+):", base)
    if m:
        return m.group(1)
    return base


def _token_doc(emu: "GlobusEmulator", identity: str, client_id: str, scope: str,
               refresh: Optional[str]) -> Dict[str, Any]:
    groups: Dict[str, List[str]] = {}
    for s in authz.split_scopes(scope):
        groups.setdefault(_resource_server(s), []).append(s)
    docs = []
    for rs, scopes in groups.items():
        joined = " ".join(scopes)
        at = emu._new_access_token(identity, client_id, joined, rs)
        doc = {"access_token": at.token, "scope": joined, "expires_in": emu._token_lifetime,
               "token_type": "Bearer", "resource_server": rs}
        if refresh is not None:
            doc["refresh_token"] = refresh
        docs.append(doc)
    main, others = docs[0], docs[1:]
    main["other_tokens"] = others
    return main


def _form(body: bytes) -> Dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _auth_route(emu: "GlobusEmulator", method: str, path: str, query: Dict[str, str],
                headers: Dict[str, str], body: bytes) -> Dict[str, Any]:
    if path == "/v2/oauth2/token" and method == "POST":
        form = _form(body)
        grant = form.get("grant_type", "")
        client_id, confidential = _client_auth(emu, headers, form)
        if grant == "client_credentials":
            client = emu._clients[client_id]
            if not confidential or client.identity_id is None:
                raise OAuthError(400, "unauthorized_client",
                                 "client_credentials needs a confidential client")
            # A client consents to its own dependent scopes by asking for them.
            scope = authz.grant_scope(emu, form.get("scope") or TRANSFER_SCOPE)
            return _token_doc(emu, client.identity_id, client_id, scope, None)
        if grant == "refresh_token":
            rt = emu._refresh_tokens.get(form.get("refresh_token", ""))
            if rt is None or rt.revoked or rt.client_id != client_id:
                raise OAuthError(400, "invalid_grant")
            return authz.stamp_session(
                emu, _token_doc(emu, rt.identity_id, client_id, rt.scope, rt.token),
                rt.session_policies)
        if grant == "authorization_code":
            return authz.exchange_code(emu, form, client_id, confidential)
        raise OAuthError(400, "unsupported_grant_type")
    if path == "/v2/oauth2/token/revoke" and method == "POST":
        form = _form(body)
        _client_auth(emu, headers, form)
        token = form.get("token", "")
        if token in emu._access_tokens:
            emu._access_tokens[token].revoked = True
        if token in emu._refresh_tokens:
            emu._refresh_tokens[token].revoked = True
        return {"active": False}
    if path == "/v2/oauth2/token/introspect" and method == "POST":
        form = _form(body)
        client_id, confidential = _client_auth(emu, headers, form)
        if not confidential:
            raise OAuthError(401, "invalid_client", "introspection needs a confidential client")
        at = emu._access_tokens.get(form.get("token", ""))
        now = emu.now()
        if at is None or at.revoked or at.expires_at <= now:
            return {"active": False}
        ident = emu._identities[at.identity_id]
        return {"active": True, "token_type": "Bearer", "scope": at.scope,
                "client_id": at.client_id, "username": ident.username, "name": ident.username,
                "email": None, "sub": ident.identity_id, "exp": int(at.expires_at),
                "iat": int(at.expires_at - emu._token_lifetime),
                "nbf": int(at.expires_at - emu._token_lifetime),
                "aud": [at.resource_server, client_id], "iss": "https://auth.globus.org",
                "identity_set": [ident.identity_id]}
    if path == "/v2/oauth2/userinfo" and method in ("GET", "POST"):
        auth = headers.get("authorization", "")
        at = emu._access_tokens.get(auth[7:].strip()) if auth.lower().startswith(
            "bearer ") else None
        if at is None or at.revoked or at.expires_at <= emu.now():
            raise OAuthError(401, "unauthorized", "Call must be authenticated")
        ident = emu._identities[at.identity_id]
        return {"sub": ident.identity_id, "preferred_username": ident.username,
                "name": ident.username, "email": None,
                "identity_provider": "emulated-idp", "identity_provider_display_name":
                "Emulated IdP", "last_authentication": None,
                "identity_set": [{"sub": ident.identity_id, "username": ident.username,
                                  "name": ident.username, "email": None}]}
    raise OAuthError(404, "not_found", f"No such resource: {path}")


# -- transfer ---------------------------------------------------------------------
def _transfer_route(emu: "GlobusEmulator", method: str, path: str, query: Dict[str, str],
                    body: bytes, who: str) -> Result:
    if path == "/v0.10/submission_id" and method == "GET":
        return 200, {}, {"value": str(uuid.uuid4())}
    if path == "/v0.10/transfer" and method == "POST":
        return _submit(emu, path, _json_body(body), who)
    if path == "/v0.10/task_list" and method == "GET":
        return 200, {}, _task_list(emu, query, who)
    m = ENDPOINT_RE.match(path)
    if m and method == "GET":
        coll = emu._collections.get(m.group(1))
        if coll is None or not emu._can_see_collection(who, coll.collection_id):
            raise ApiError(404, "ClientError.NotFound",
                           f"Endpoint '{m.group(1)}' not found")
        return 200, {}, _endpoint_doc(coll)
    m = LS_RE.match(path)
    if m and method == "GET":
        return 200, {}, _ls(emu, m.group(1), query, who)
    m = OP_RE.match(path)
    if m and (m.group(2), method) == ("stat", "GET"):
        return 200, {}, _stat(emu, m.group(1), query.get("path", "/~/"), who)
    if m and (m.group(2), method) == ("mkdir", "POST"):
        return 200, {}, _mkdir(emu, m.group(1), _json_body(body), who, path)
    m = TASK_RE.match(path)
    if m:
        task = emu._tasks.get(m.group(1))
        if task is None or task.owner_id != who:
            raise ApiError(404, "ClientError.NotFound", f"Task '{m.group(1)}' not found")
        sub = m.group(2) or ""
        handler = _TASK_ROUTES.get((method, sub))
        if handler is not None:
            return 200, {}, handler(emu, task, query, body, path)
    raise ApiError(404, "ClientError.NotFound", f"No such resource: {method} {path}")


def _json_body(body: bytes) -> Dict[str, Any]:
    try:
        doc = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "ClientError.BadRequest", "Request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "ClientError.BadRequest", "Request body must be a JSON object")
    return doc


def _check_label(label: Any) -> Optional[str]:
    if label is None:
        return None
    if not isinstance(label, str):
        raise ApiError(400, "ClientError.BadRequest", "Invalid label: must be a string")
    if len(label) > 128:
        raise ApiError(400, "ClientError.BadRequest",
                       "Invalid label: must be at most 128 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise ApiError(400, "ClientError.BadRequest",
                       "Invalid label: may not contain newlines or control characters")
    if label != label.strip():
        raise ApiError(400, "ClientError.BadRequest",
                       "Invalid label: may not begin or end with whitespace")
    return label


def _parse_time(value: Any, what: str) -> float:
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, "ClientError.BadRequest", f"Invalid {what}: expected ISO 8601")
    text = value.strip().replace("Z", "+00:00")
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        try:
            when = _dt.datetime.strptime(text, "%Y-%m-%d")
        except ValueError:
            raise ApiError(400, "ClientError.BadRequest",
                           f"Invalid {what} {value!r}: expected ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when.timestamp()


def _bool(doc: Dict[str, Any], key: str) -> bool:
    value = doc.get(key, False)
    if not isinstance(value, bool):
        raise ApiError(400, "ClientError.BadRequest", f"Invalid {key}: must be a boolean")
    return value


def _filter_rules(value: Any) -> Optional[List[Dict[str, Any]]]:
    """``filter_rules`` as globus-sdk ``TransferData.add_filter_rule`` builds
    them: ``{"DATA_TYPE": "filter_rule", "method": include|exclude, "name":
    PATTERN, "type": file|dir (optional)}``."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ApiError(400, "ClientError.BadRequest", "Invalid filter_rules: must be a list")
    rules = []
    for rule in value:
        if not isinstance(rule, dict) or rule.get("DATA_TYPE", "filter_rule") != "filter_rule" \
                or rule.get("method", "exclude") not in ("include", "exclude") \
                or not isinstance(rule.get("name"), str) or not rule["name"] \
                or rule.get("type") not in (None, "file", "dir"):
            raise ApiError(400, "ClientError.BadRequest",
                           "Invalid filter_rule: expected method include|exclude, a name "
                           "pattern and an optional type file|dir")
        rules.append({"DATA_TYPE": "filter_rule", "method": rule.get("method", "exclude"),
                      "name": rule["name"], "type": rule.get("type")})
    return rules


def _submit(emu: "GlobusEmulator", path: str, doc: Dict[str, Any], who: str) -> Result:
    if doc.get("DATA_TYPE", "transfer") != "transfer":
        raise ApiError(400, "ClientError.BadRequest", "DATA_TYPE must be 'transfer'")
    src_id, dst_id = doc.get("source_endpoint"), doc.get("destination_endpoint")
    if not isinstance(src_id, str) or not isinstance(dst_id, str):
        raise ApiError(400, "ClientError.BadRequest",
                       "source_endpoint and destination_endpoint are required")
    submission_id = doc.get("submission_id") or str(uuid.uuid4())
    if not isinstance(submission_id, str):
        raise ApiError(400, "ClientError.BadRequest", "Invalid submission_id")
    prior = emu._submissions.get((who, submission_id))
    if prior is not None:
        return 200, {}, _submit_result(prior, submission_id, "Duplicate",
                                       f"A transfer with id '{submission_id}' was already "
                                       "submitted")
    label = _check_label(doc.get("label"))
    items_doc = doc.get("DATA")
    if not items_doc:
        raise ApiError(400, "ClientError.BadRequest.NoTransferItems",
                       "A transfer requires at least one item")
    if not isinstance(items_doc, list):
        raise ApiError(400, "ClientError.BadRequest", "DATA must be a list")
    items = []
    for entry in items_doc:
        if not isinstance(entry, dict) or entry.get("DATA_TYPE", "transfer_item") \
                != "transfer_item":
            raise ApiError(400, "ClientError.BadRequest",
                           "Each DATA entry must be a transfer_item")
        sp, dp = entry.get("source_path"), entry.get("destination_path")
        if not isinstance(sp, str) or not sp or not isinstance(dp, str) or not dp:
            raise ApiError(400, "ClientError.BadRequest",
                           "transfer_item needs source_path and destination_path")
        recursive = entry.get("recursive", False)
        if not isinstance(recursive, bool):
            raise ApiError(400, "ClientError.BadRequest", "recursive must be a boolean")
        items.append(Item(sp, dp, recursive))
    for cid in (src_id, dst_id):
        if cid not in emu._collections:
            raise ApiError(404, "ClientError.NotFound", f"Endpoint '{cid}' not found")
    authz.check_access(emu, emu._request_token, (src_id, dst_id))
    now = emu.now()
    if "deadline" in doc and doc["deadline"] is not None:
        deadline = _parse_time(doc["deadline"], "deadline")
        if deadline <= now:
            raise ApiError(400, "ClientError.BadRequest",
                           "Invalid deadline: must be in the future")
        explicit = True
    else:
        deadline, explicit = now + 24 * 3600.0, False
    sync = doc.get("sync_level")
    if isinstance(sync, str):
        sync = SYNC_LEVELS.get(sync)
        if sync is None:
            raise ApiError(400, "ClientError.BadRequest",
                           "Invalid sync_level: expected exists, size, mtime or checksum")
    elif sync is not None and (isinstance(sync, bool) or sync not in (0, 1, 2, 3)):
        raise ApiError(400, "ClientError.BadRequest", "Invalid sync_level: expected 0-3")
    options = {
        "sync_level": sync,
        "verify_checksum": _bool(doc, "verify_checksum"),
        "preserve_timestamp": _bool(doc, "preserve_timestamp"),
        "encrypt_data": _bool(doc, "encrypt_data"),
        "skip_source_errors": _bool(doc, "skip_source_errors"),
        "fail_on_quota_errors": _bool(doc, "fail_on_quota_errors"),
        "delete_destination_extra": _bool(doc, "delete_destination_extra"),
        "filter_rules": _filter_rules(doc.get("filter_rules")),
    }
    wanted = tuple(sorted((i.source_path, i.destination_path) for i in items))
    for other in emu._tasks.values():
        if other.owner_id == who and other.status in (ACTIVE, INACTIVE) \
                and other.source_endpoint_id == src_id \
                and other.destination_endpoint_id == dst_id and other.item_paths == wanted:
            raise ApiError(409, "Conflict",
                           "A transfer with identical paths has not yet completed")
    task = emu._new_task(emu._identities[who], submission_id, label,
                         emu._collections[src_id], emu._collections[dst_id], items, now,
                         deadline, explicit, options)
    task.add_event(now, "QUEUED", "queued", "task submitted")
    emu._tasks[task.task_id] = task
    emu._submissions[(who, submission_id)] = task.task_id
    emu._kick()
    return 202, {}, _submit_result(task.task_id, submission_id, "Accepted",
                                   "The transfer has been accepted and a task has been "
                                   "created and queued for execution")


def _submit_result(task_id: str, submission_id: str, code: str, message: str) -> Dict[str, Any]:
    return {
        "DATA_TYPE": "transfer_result",
        "code": code,
        "message": message,
        "request_id": new_request_id(),
        "resource": "/v0.10/transfer",
        "submission_id": submission_id,
        "task_id": task_id,
        "task_link": {"DATA_TYPE": "link", "href": f"/v0.10/task/{task_id}?format=json",
                      "rel": "related", "resource": "task", "title": "related task"},
    }


def _int_param(query: Dict[str, str], key: str, default: int, *, low: int,
               high: Optional[int]) -> int:
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "ClientError.BadRequest", f"Invalid {key}: {raw!r}") from None
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ApiError(400, "ClientError.BadRequest", f"Invalid {key}: must be {bound}")
    return value


def _time_range(value: str, what: str) -> Tuple[Optional[float], Optional[float]]:
    start, sep, end = value.partition(",")
    if not sep:
        raise ApiError(400, "ClientError.BadRequest",
                       f"Invalid {what} filter: expected START,END (either may be empty)")
    return (_parse_time(start, what) if start else None,
            _parse_time(end, what) if end else None)


def _task_filter(spec: str) -> Callable[[Task], bool]:
    checks: List[Callable[[Task], bool]] = []
    for clause in filter(None, spec.split("/")):
        key, sep, value = clause.partition(":")
        if not sep:
            raise ApiError(400, "ClientError.BadRequest",
                           f"Invalid filter clause {clause!r}: expected FIELD:VALUE")
        if key == "task_id":
            ids = set(value.split(","))
            checks.append(lambda t, ids=ids: t.task_id in ids)
        elif key == "status":
            statuses = set(value.upper().split(","))
            checks.append(lambda t, s=statuses: t.status in s)
        elif key == "type":
            types = set(value.upper().split(","))
            checks.append(lambda t, s=types: "TRANSFER" in s)
        elif key == "label":
            if value.startswith("~"):
                needle = value[1:].lower()
                checks.append(lambda t, n=needle: n in (t.label or "").lower())
            else:
                checks.append(lambda t, v=value: t.label == v)
        elif key in ("request_time", "completion_time"):
            lo, hi = _time_range(value, key)

            def in_range(t: Task, key: str = key, lo: Optional[float] = lo,
                         hi: Optional[float] = hi) -> bool:
                ts = getattr(t, key)
                if ts is None:
                    return False
                return (lo is None or ts >= lo) and (hi is None or ts <= hi)
            checks.append(in_range)
        else:
            raise ApiError(400, "ClientError.BadRequest", f"Invalid filter field {key!r}")
    return lambda t: all(c(t) for c in checks)


def _task_list(emu: "GlobusEmulator", query: Dict[str, str], who: str) -> Dict[str, Any]:
    limit = _int_param(query, "limit", TASK_LIST_DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    offset = _int_param(query, "offset", 0, low=0, high=None)
    keep = _task_filter(query.get("filter", ""))
    tasks = [t for t in emu._tasks.values() if t.owner_id == who and keep(t)]
    order = query.get("orderby", "request_time DESC")
    for clause in reversed([c.strip() for c in order.split(",") if c.strip()]):
        field, _, direction = clause.partition(" ")
        if field not in ("request_time", "completion_time", "label", "status", "task_id"):
            raise ApiError(400, "ClientError.BadRequest", f"Invalid orderby field {field!r}")
        tasks.sort(key=lambda t, f=field: (getattr(t, f) is None, getattr(t, f) or 0)
                   if f.endswith("time") else (getattr(t, f) or ""),
                   reverse=direction.strip().upper() == "DESC")
    now = emu.now()
    page = tasks[offset:offset + limit]
    return {"DATA_TYPE": "task_list", "DATA": [t.to_doc(now) for t in page],
            "length": len(page), "limit": limit, "offset": offset, "total": len(tasks)}


def _get_task(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
              path: str) -> Dict[str, Any]:
    return task.to_doc(emu.now())


def _update_task(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
                 path: str) -> Dict[str, Any]:
    doc = _json_body(body)
    if task.finished:
        raise ApiError(409, "Conflict", "Task is already complete")
    if "label" in doc:
        task.label = _check_label(doc["label"])
    if doc.get("deadline") is not None:
        when = _parse_time(doc["deadline"], "deadline")
        if when <= emu.now():
            raise ApiError(400, "ClientError.BadRequest",
                           "Invalid deadline: must be in the future")
        task.deadline, task.explicit_deadline = when, True
    return {"DATA_TYPE": "result", "code": "Updated", "message": "Task updated successfully",
            "request_id": new_request_id(), "resource": path}


def _cancel(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
            path: str) -> Dict[str, Any]:
    if task.finished:
        return {"DATA_TYPE": "result", "code": "TaskComplete",
                "message": f"Task {task.task_id} is already complete",
                "request_id": new_request_id(), "resource": path[len("/v0.10"):]}
    emu._engine.finish(task, emu.now(), FAILED, "CANCELED", "canceled",
                       counter="subtasks_canceled")
    return {"DATA_TYPE": "result", "code": "Canceled",
            "message": "The task has been cancelled successfully.",
            "request_id": new_request_id(), "resource": path[len("/v0.10"):]}


def _event_list(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
                path: str) -> Dict[str, Any]:
    limit = _int_param(query, "limit", TASK_LIST_DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    offset = _int_param(query, "offset", 0, low=0, high=None)
    events = list(reversed(task.events))           # newest first, as Globus
    spec = query.get("filter", "")
    if spec:
        key, _, value = spec.partition(":")
        if key != "is_error" or value not in ("0", "1"):
            raise ApiError(400, "ClientError.BadRequest",
                           "Invalid filter: only is_error:0 or is_error:1")
        events = [e for e in events if e["is_error"] == (value == "1")]
    page = events[offset:offset + limit]
    return {"DATA_TYPE": "event_list", "DATA": [dict(e) for e in page], "length": len(page),
            "limit": limit, "offset": offset, "total": len(events)}


def _marker_page(rows: List[Dict[str, Any]], query: Dict[str, str],
                 data_type: str) -> Dict[str, Any]:
    marker = _int_param(query, "marker", 0, low=0, high=None)
    page = rows[marker:marker + SUCCESSFUL_PAGE]
    nxt = marker + len(page)
    return {"DATA_TYPE": data_type, "marker": marker,
            "next_marker": nxt if nxt < len(rows) else None, "DATA": page}


def _successful(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
                path: str) -> Dict[str, Any]:
    rows = [{"DATA_TYPE": "successful_transfer", "source_path": s, "destination_path": d}
            for s, d in task.successful]
    return _marker_page(rows, query, "successful_transfers")


def _skipped(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
             path: str) -> Dict[str, Any]:
    return _marker_page([dict(r) for r in task.skipped_errors], query, "skipped_errors")


def _pause_info(emu: "GlobusEmulator", task: Task, query: Dict[str, str], body: bytes,
                path: str) -> Dict[str, Any]:
    rules = []
    for side, cid in (("source", task.source_endpoint_id),
                      ("destination", task.destination_endpoint_id)):
        if emu._collections[cid].paused:
            rules.append({"DATA_TYPE": "pause_rule_limited", "id": f"emulated-{side}",
                          "message": "Paused by the collection's activity manager",
                          "start_time": None, "endpoint_id": cid,
                          "identity_id": None, "modify_time": None,
                          "pause_ls": False, "pause_mkdir": False, "pause_rename": False,
                          "pause_task_delete": False, "pause_task_transfer_write": True,
                          "pause_task_transfer_read": True})
    return {"DATA_TYPE": "pause_info_limited", "pause_rules": rules,
            "source_pause_message": None, "source_pause_message_share": None,
            "destination_pause_message": None, "destination_pause_message_share": None}


_TASK_ROUTES: Dict[Tuple[str, str], Callable[..., Dict[str, Any]]] = {
    ("GET", ""): _get_task,
    ("PUT", ""): _update_task,
    ("POST", "/cancel"): _cancel,
    ("GET", "/event_list"): _event_list,
    ("GET", "/successful_transfers"): _successful,
    ("GET", "/skipped_errors"): _skipped,
    ("GET", "/pause_info"): _pause_info,
}


def _endpoint_doc(coll: Any) -> Dict[str, Any]:
    return {
        "DATA_TYPE": "endpoint", "id": coll.collection_id, "display_name": coll.name,
        "canonical_name": coll.name, "organization": "Emulated Site", "username": "emulator",
        "owner_id": None, "owner_string": "emulator", "description": None,
        "entity_type": coll.entity_type, "public": True,
        "is_globus_connect": False, "globus_connect_setup_key": None,
        "gcp_connected": None, "gcp_paused": None, "gcs_version": "5.4.70",
        "non_functional": False, "non_functional_endpoint_id": None,
        "non_functional_endpoint_display_name": None, "mapped_collection_id": None,
        "host_endpoint_id": None, "host_path": None, "s3_url": None,
        "s3_owner_activated": False, "french_english_bilingual": False,
        "disable_verify": False, "disable_anonymous_writes": False, "force_verify": False,
        "force_encryption": False, "mfa_required": False, "myproxy_server": None,
        "myproxy_dn": None, "oauth_server": None, "default_directory": "/~/",
        "activated": False, "expires_in": -1, "expire_time": None, "shareable": False,
        "acl_available": False, "acl_editable": False, "in_use": False,
        "high_assurance": coll.high_assurance, "subscription_id": None,
        "https_server": None, "tlsftp_server": None, "gcs_manager_url": None,
        "DATA": [],
    }


def _ls(emu: "GlobusEmulator", collection_id: str, query: Dict[str, str],
        who: str) -> Dict[str, Any]:
    coll = emu._collections.get(collection_id)
    if coll is None:
        raise ApiError(404, "ClientError.NotFound", f"Endpoint '{collection_id}' not found")
    authz.check_access(emu, emu._request_token, (collection_id,))
    raw = query.get("path", "/~/")
    try:
        norm = normalize(raw)
        if not emu._allowed(who, collection_id, norm, write=False):
            raise PathRefused(norm)
        target = local_path(coll, norm)
    except PathRefused:
        raise ApiError(403, "EndpointError.PermissionDenied",
                       f"Permission denied: {raw}") from None
    # As the caller's local account (fsaccess), so the kernel decides what it sees.
    fs = emu._files(who)
    try:
        kind = fs.probe(target)
        if kind is None:
            raise ApiError(404, "ClientError.NotFound", f"Directory '{raw}' not found")
        if kind != "dir":
            raise ApiError(400, "ClientError.BadRequest", f"Path '{raw}' is not a directory")
        listing = fs.listing(target)
    except PermissionError as exc:
        raise ApiError(403, "EndpointPermissionDenied",
                       f"Denied by endpoint: {raw}: {exc.strerror}") from None
    except OSError as exc:
        raise ApiError(502, "ExternalError.DirListingFailed",
                       f"Directory listing of '{raw}' failed: {exc.strerror}") from None
    # show_hidden "Defaults to true" (globus-sdk TransferClient.operation_ls);
    # globus ls sends show_hidden=0 unless --all (globus_cli/commands/ls.py)
    hidden = query.get("show_hidden", "1").lower() not in ("0", "false")
    entries = []
    for name, kind, size, mtime, mode, uid, gid in listing:
        if name.startswith(".") and not hidden:
            continue
        entries.append({"DATA_TYPE": "file", "name": name, "type": kind,
                        "size": size, "last_modified": iso(mtime).replace(
                            "T", " "), "permissions": oct(mode & 0o777)[2:].zfill(4),
                        "user": _owner_name(uid), "group": _group_name(gid),
                        "link_target": None})
    return {"DATA_TYPE": "file_list", "DATA": entries, "path": norm if norm.endswith("/")
            else norm + "/", "endpoint": collection_id, "absolute_path": norm,
            "length": len(entries), "total": len(entries), "rename_supported": True,
            "symlink_supported": False}


def _mapped_path(emu: "GlobusEmulator", collection_id: str, raw: str, who: str, *,
                 write: bool) -> Any:
    coll = emu._collections.get(collection_id)
    if coll is None:
        raise ApiError(404, "ClientError.NotFound", f"Endpoint '{collection_id}' not found")
    authz.check_access(emu, emu._request_token, (collection_id,))
    try:
        norm = normalize(raw)
        if not emu._allowed(who, collection_id, norm, write=write):
            raise PathRefused(norm)
        return norm, local_path(coll, norm)
    except PathRefused:
        raise ApiError(403, "EndpointPermissionDenied",
                       f"Denied by endpoint: {raw}: Permission denied") from None


def _stat(emu: "GlobusEmulator", collection_id: str, raw: str, who: str) -> Dict[str, Any]:
    """``operation_stat`` as the caller's local account; shapes of globus-sdk's
    ``testing/data/transfer/operation_stat.py`` (404 NotFound, 403
    EndpointPermissionDenied)."""
    _norm, target = _mapped_path(emu, collection_id, raw, who, write=False)
    fs = emu._files(who)
    try:
        kind = fs.probe(target)
        if kind is None:
            raise ApiError(404, "NotFound", f"Path not found: {raw}: No such file or directory")
        size, mtime, _atime, mode, uid, gid = fs.stat(target)
    except PermissionError as exc:
        raise ApiError(403, "EndpointPermissionDenied",
                       f"Denied by endpoint: {raw}: {exc.strerror}") from None
    except OSError as exc:
        raise ApiError(502, "ExternalError", f"stat of '{raw}' failed: {exc.strerror}") from None
    return {"DATA_TYPE": "file", "name": target.name, "type": "dir" if kind == "dir" else "file",
            "size": size, "last_modified": iso(mtime).replace("T", " "),
            "permissions": oct(mode & 0o777)[2:].zfill(4), "user": _owner_name(uid),
            "group": _group_name(gid), "link_target": None, "link_user": None,
            "link_group": None, "link_size": None, "link_last_modified": None}


def _mkdir(emu: "GlobusEmulator", collection_id: str, doc: Dict[str, Any], who: str,
           path: str) -> Dict[str, Any]:
    """``operation_mkdir`` as the caller's local account (who then owns the
    directory); result of globus-sdk's ``testing/data/transfer/operation_mkdir.py``."""
    raw = doc.get("path")
    if not isinstance(raw, str) or not raw:
        raise ApiError(400, "ClientError.BadRequest", "Invalid path: must be a string")
    _norm, target = _mapped_path(emu, collection_id, raw, who, write=True)
    try:
        emu._files(who).mkdir(target)
    except FileExistsError:
        raise ApiError(502, "ExternalError.MkdirFailed.Exists",
                       f"Path already exists: {raw}") from None
    except PermissionError as exc:
        raise ApiError(403, "EndpointPermissionDenied",
                       f"Denied by endpoint: {raw}: {exc.strerror}") from None
    except OSError as exc:
        raise ApiError(502, "ExternalError.MkdirFailed",
                       f"mkdir of '{raw}' failed: {exc.strerror}") from None
    return {"DATA_TYPE": "mkdir_result", "code": "DirectoryCreated",
            "message": "The directory was created successfully",
            "request_id": new_request_id(), "resource": path}


def _owner_name(uid: int) -> str:
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    import grp
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


__all__ = ["handle", "ApiError"]
