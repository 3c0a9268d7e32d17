"""The emulator's JSON carries every key globus-sdk's own canned payloads carry,
with the same JSON types, recursively."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Dict, List

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig

from pbs_globus_staging_sim.emulator import GlobusEmulator


def _canned(name: str, case: str = "default") -> Any:
    """Load ``globus_sdk/testing/data/<name>.py`` without importing
    ``globus_sdk.testing`` (it needs the ``responses`` package, not installed)."""
    spec = importlib.util.find_spec("globus_sdk")
    assert spec is not None and spec.submodule_search_locations
    testing_dir = Path(list(spec.submodule_search_locations)[0]) / "testing"

    class RegisteredResponse:
        def __init__(self, *, json: Any = None, status: int = 200, **_: Any) -> None:
            self.json, self.status = json, status

    class ResponseSet:
        def __init__(self, metadata: Any = None, **cases: RegisteredResponse) -> None:
            self.cases = cases

    saved = {k: v for k, v in sys.modules.items()
             if k == "globus_sdk.testing" or k.startswith("globus_sdk.testing.")}
    for key in saved:
        del sys.modules[key]
    pkg = types.ModuleType("globus_sdk.testing")
    pkg.__path__ = [str(testing_dir)]  # type: ignore[attr-defined]
    models = types.ModuleType("globus_sdk.testing.models")
    models.RegisteredResponse = RegisteredResponse  # type: ignore[attr-defined]
    models.ResponseSet = ResponseSet  # type: ignore[attr-defined]
    sys.modules["globus_sdk.testing"] = pkg
    sys.modules["globus_sdk.testing.models"] = models
    try:
        module = importlib.import_module(f"globus_sdk.testing.data.{name}")
        return module.RESPONSES.cases[case]
    finally:
        for key in [k for k in sys.modules
                    if k == "globus_sdk.testing" or k.startswith("globus_sdk.testing.")]:
            del sys.modules[key]
        sys.modules.update(saved)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(value)]


def _shape_problems(canned: Any, ours: Any, where: str = "$") -> List[str]:
    problems: List[str] = []
    if canned is None or ours is None:
        return problems                     # nullable fields: either side may be null
    if _json_type(canned) != _json_type(ours):
        return [f"{where}: {_json_type(ours)}, globus-sdk has {_json_type(canned)}"]
    if isinstance(canned, dict):
        for key, value in canned.items():
            if key not in ours:
                problems.append(f"{where}.{key}: missing")
            else:
                problems += _shape_problems(value, ours[key], f"{where}.{key}")
    elif isinstance(canned, list) and canned and ours:
        problems += _shape_problems(canned[0], ours[0], f"{where}[0]")
    return problems


def test_shape_checker_catches_differences() -> None:
    assert _shape_problems({"a": 1, "b": {"c": "x"}}, {"a": 2, "b": {"c": "y"}, "z": 0}) == []
    assert _shape_problems({"a": 1, "b": {"c": "x"}}, {"a": "1", "b": {}}) == [
        "$.a: string, globus-sdk has number", "$.b.c: missing"]


@pytest.fixture
def docs(globus_emulator: GlobusEmulator) -> Dict[str, Any]:
    """One real response per route, fetched through the SDK."""
    emu = globus_emulator
    src, dst = emu.add_collection("src"), emu.add_collection("dst")
    who = emu.add_identity("alice")
    emu.grant(who, src, "/")
    emu.grant(who, dst, "/")
    cid, secret = emu.add_client(who)
    (emu.root / "src" / "f").write_text("data")
    auth = globus_sdk.ConfidentialAppAuthClient(cid, secret)
    tc = globus_sdk.TransferClient(
        authorizer=globus_sdk.ClientCredentialsAuthorizer(
            auth, globus_sdk.TransferClient.scopes.all.with_dependencies(
                globus_sdk.scopes.GCSCollectionScopes(c).data_access for c in (src, dst))),
        retry_config=RetryConfig(max_retries=0))
    out: Dict[str, Any] = {}
    out["get_submission_id"] = tc.get_submission_id().data
    td = globus_sdk.TransferData(src, dst, label="shape")
    td.add_item("/f", "/f")
    out["submit_transfer"] = tc.submit_transfer(td).data
    task_id = out["submit_transfer"]["task_id"]
    emu.wait_for_status(task_id, "SUCCEEDED")
    out["task_list"] = tc.task_list(limit=10).data
    out["successful_transfers"] = tc.task_successful_transfers(task_id).data
    out["get_endpoint"] = tc.get_endpoint(src).data
    emu.set_rate(0)
    td = globus_sdk.TransferData(src, dst)
    td.add_item("/f", "/g")
    out["cancel_task"] = tc.cancel_task(tc.submit_transfer(td)["task_id"]).data
    try:
        tc.submit_transfer(globus_sdk.TransferData(src, dst))
    except globus_sdk.TransferAPIError as err:
        out["submit_transfer_failure"] = err.raw_json
    tokens = auth.oauth2_client_credentials_tokens(globus_sdk.TransferClient.scopes.all)
    out["oauth2_client_credentials_tokens"] = tokens.data
    token = tokens.by_resource_server["transfer.api.globus.org"]["access_token"]
    out["oauth2_token_introspect"] = auth.oauth2_token_introspect(token).data
    out["oauth2_revoke_token"] = auth.oauth2_revoke_token(token).data
    return out


CASES = [
    ("transfer.get_submission_id", "default", "get_submission_id"),
    ("transfer.submit_transfer", "default", "submit_transfer"),
    ("transfer.submit_transfer", "failure", "submit_transfer_failure"),
    ("transfer.task_list", "default", "task_list"),
    ("transfer.cancel_task", "default", "cancel_task"),
    ("transfer.get_endpoint", "default", "get_endpoint"),
    ("transfer.endpoint_manager_task_successful_transfers", "default",
     "successful_transfers"),
    ("auth.oauth2_client_credentials_tokens", "default", "oauth2_client_credentials_tokens"),
    ("auth.oauth2_token_introspect", "default", "oauth2_token_introspect"),
    ("auth.oauth2_revoke_token", "default", "oauth2_revoke_token"),
]


def test_emulator_json_has_every_key_of_sdk_canned_payloads(docs: Dict[str, Any]) -> None:
    problems = []
    for module, case, ours in CASES:
        canned = _canned(module, case)
        assert canned.json, module
        problems += [f"{module}/{case}: {p}"
                     for p in _shape_problems(canned.json, docs[ours])]
    assert problems == []
    # statuses where the canned payload names one
    assert _canned("transfer.submit_transfer", "failure").status == 400
