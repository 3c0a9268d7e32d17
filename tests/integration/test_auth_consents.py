"""Issue 11 point 2: credentials and consents as Globus requires them.

Through the real globus-sdk over HTTP against the emulator, whose Globus Auth
grants data_access consents into tokens (emulator/auth.py) and whose
collections are GCSv5 mapped ones unless told otherwise.
"""
from __future__ import annotations

import json
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from e2e_helpers import make_site, remote_file, request_state, tasks_for
from globus_setup import USER, Site, site  # noqa: F401
from pbs_globus_staging.credentials import (ClientCredentialsProvider, UserTokens,
                                            login_scope)
from pbs_globus_staging.errors import WaitingForUser
from pbs_globus_staging_sim.browser import LoginPageError, cli_login, follow_login_url
from pbs_globus_staging_sim.invariants import assert_invariants
from pbs_globus_staging_sim.site import EAGLE_COLLECTION, REMOTE_COLLECTION


def _refusals(emu) -> int:
    return sum(1 for c in emu.calls if c.status == 403)


# -- client-credentials mode ---------------------------------------------------------


def test_client_mode_asks_for_data_access_of_mapped_collections(site: Site):
    """The site client's token gets the dependent data_access scopes: the
    submission goes through (on the old code it waited forever for an admin)."""
    provider = site.client_provider()
    backend = site.backend(provider)
    site.write_src("in/a.dat")
    res = backend.submit("alice", site.spec(backend.new_submission_id("alice")))
    assert res.task_id
    site.emu.wait_for_status(res.task_id, "SUCCEEDED")
    assert set(provider.data_access_collections) == {site.src_id, site.dst_id}
    assert _refusals(site.emu) == 1          # one ConsentRequired, then the same call again
    backend.close()

    # A new agent process (same token cache) asks for them from the start.
    site.emu.reset_calls()
    again = ClientCredentialsProvider(
        client_id=provider.client_id, client_secret_file=provider.client_secret_file,
        token_storage_path=site.state / "cc-tokens.db", auth_url=site.url)
    assert set(again.data_access_collections) == {site.src_id, site.dst_id}
    backend = site.backend(again)
    site.write_src("in/b.dat")
    spec = site.spec(backend.new_submission_id("alice"), label="job 2.server stage-in")
    assert backend.submit("alice", spec).task_id
    assert _refusals(site.emu) == 0
    assert site.emu.count_calls("/v2/oauth2/token") == 0    # the cached token still fits
    backend.close()


def test_client_mode_site_config_data_access_needs_no_refusal(site: Site):
    plain = site.client_provider()
    provider = ClientCredentialsProvider(
        client_id=plain.client_id, client_secret_file=plain.client_secret_file,
        token_storage_path=site.state / "other.db", auth_url=site.url,
        data_access_collections=[site.src_id.upper(), site.dst_id])
    backend = site.backend(provider)
    site.write_src("in/a.dat")
    assert backend.submit("alice", site.spec(backend.new_submission_id("alice"))).task_id
    assert _refusals(site.emu) == 0
    backend.close()


def test_client_mode_consent_refused_despite_the_scope_needs_the_admin(site: Site):
    """A ConsentRequired the scope does not cure is not retried in a loop."""
    provider = site.client_provider()
    backend = site.backend(provider)
    site.write_src("in/a.dat")
    backend.submit("alice", site.spec(backend.new_submission_id("alice")))
    site.emu.fail_requests(403, code="ConsentRequired", path_prefix="/v0.10/transfer",
                           count=5)
    with pytest.raises(WaitingForUser) as err:
        backend.submit("alice", site.spec(backend.new_submission_id("alice"),
                                          label="job 2.server stage-in"))
    assert err.value.code == "ConsentRequired"
    assert err.value.action.startswith("ask the site admin")
    backend.close()


def test_site_config_data_access_resolves_aliases(tmp_path):
    from pbs_globus_staging.errors import ConfigError
    from pbs_globus_staging.siteconfig import from_dict

    cfg = from_dict({"collections": {"theta-dtn": REMOTE_COLLECTION,
                                     "data_access": ["theta-dtn", EAGLE_COLLECTION.upper()]}},
                    source="site.yaml")
    assert cfg.collections.data_access == (REMOTE_COLLECTION, EAGLE_COLLECTION)
    assert "data_access" not in cfg.collections.aliases
    with pytest.raises(ConfigError, match=r"collections.data_access\[0\]: expected an alias"):
        from_dict({"collections": {"data_access": ["nowhere"]}}, source="site.yaml")


# -- user mode: consents and session policies ------------------------------------------


def test_user_login_without_the_collections_consent_waits_then_works(site: Site):
    provider, _ = site.user_provider(scope=str(login_scope([site.src_id])))
    backend = site.backend(provider)
    site.write_src("in/a.dat")
    with pytest.raises(WaitingForUser) as err:
        backend.submit(USER, site.spec(backend.new_submission_id(USER)))
    assert err.value.code == "ConsentRequired"
    assert err.value.action == f"globus-staging login --collection {site.dst_id.lower()}"
    assert site.emu.tasks == {}
    backend.close()
    provider, _ = site.user_provider(cache="second.db")   # logged in with both consents
    backend = site.backend(provider)
    assert backend.submit(USER, site.spec(backend.new_submission_id(USER))).task_id
    backend.close()


def test_auth_policy_failed_waits_for_a_login_meeting_the_policy(site: Site):
    policy = str(uuid.uuid4())
    site.emu.require_policy(site.dst_id, policy)
    provider, _ = site.user_provider()
    backend = site.backend(provider)
    site.write_src("in/a.dat")
    with pytest.raises(WaitingForUser) as err:
        backend.submit(USER, site.spec(backend.new_submission_id(USER)))
    assert err.value.code == "AuthPolicyFailed"
    assert err.value.action == f"globus-staging login --policy {policy}"
    assert "Failing collection authentication policy" in str(err.value)
    assert site.emu.tasks == {}
    backend.close()
    provider, _ = site.user_provider(cache="second.db", session_policies=(policy,))
    backend = site.backend(provider)
    assert backend.submit(USER, site.spec(backend.new_submission_id(USER))).task_id
    backend.close()


def test_session_identities_and_domains_become_login_flags(site: Site):
    provider, _ = site.user_provider()
    backend = site.backend(provider)
    ident = str(uuid.uuid4())
    body = {"code": "AuthenticationFailed", "message": "need another identity",
            "authorization_parameters": {"session_message": "log in with your lab identity",
                                         "session_required_identities": [ident],
                                         "session_required_single_domain": ["lab.example",
                                                                            "bad; rm -rf /"],
                                         "session_required_mfa": True}}

    # The SDK's own parsing of such an answer (no emulator route produces
    # identity/domain requirements: see docs/globus-fidelity.md).
    import requests
    from globus_sdk import TransferAPIError

    resp = requests.Response()
    resp.status_code, resp._content = 403, json.dumps(body).encode()
    resp.headers["Content-Type"] = "application/json"
    resp.url = site.url + "v0.10/transfer"
    resp.request = requests.Request("POST", resp.url).prepare()
    err = TransferAPIError(resp)
    with pytest.raises(WaitingForUser) as waited:
        backend._raise_transfer(USER, "submit_transfer", err, [site.dst_id])
    assert waited.value.action == (f"globus-staging login --identity {ident} "
                                   "--domain lab.example --mfa")
    assert "log in with your lab identity" in str(waited.value)
    backend.close()


# -- the browser login, end to end --------------------------------------------------


def test_authorize_page_checks_pkce_and_redirect(site: Site):
    import globus_sdk

    native = site.emu.add_native_client()
    client = globus_sdk.NativeAppAuthClient(native, base_url=site.url)
    client.oauth2_start_flow(requested_scopes=str(login_scope([site.dst_id])),
                             refresh_tokens=True)
    code = follow_login_url(client.oauth2_get_authorize_url(), "alice@example.org")
    tokens = client.oauth2_exchange_code_for_tokens(code)
    data = tokens.by_resource_server["transfer.api.globus.org"]
    assert data["refresh_token"] and f"scopes/{site.dst_id}/data_access" in data["scope"]
    with pytest.raises(globus_sdk.AuthAPIError) as err:        # a code works once
        client.oauth2_exchange_code_for_tokens(code)
    assert err.value.raw_json["error"] == "invalid_grant"
    # another verifier (an attacker holding only the code) is refused
    code = follow_login_url(client.oauth2_get_authorize_url(), "alice@example.org")
    other = globus_sdk.NativeAppAuthClient(native, base_url=site.url)
    other.oauth2_start_flow(requested_scopes="openid")
    with pytest.raises(globus_sdk.AuthAPIError):
        other.oauth2_exchange_code_for_tokens(code)
    # a redirect_uri the native app did not register
    url = client.oauth2_get_authorize_url()
    bad = url.replace(urllib.parse.quote(site.url + "v2/web/auth-code", safe=""),
                      urllib.parse.quote("https://evil.example/cb", safe=""))
    assert bad != url
    with pytest.raises(urllib.error.HTTPError) as http:
        urllib.request.urlopen(bad, timeout=5)
    assert http.value.code == 400
    # session_required_identities: only that identity may log in
    bob = site.emu.add_identity("bob@example.org")
    url = client.oauth2_get_authorize_url(session_required_identities=[bob])
    with pytest.raises(LoginPageError, match=r"offered: \['bob@example.org'\]"):
        follow_login_url(url, "alice@example.org")
    assert follow_login_url(url, "bob@example.org")


def test_cli_login_follows_the_printed_url_and_the_job_runs(tmp_path):
    """The user types `globus-staging login --collection eagle`, opens the
    printed URL, picks an identity, pastes the code; held jobs resume."""
    site = make_site(tmp_path)
    try:
        remote = site.eagle_dir / site.user / "in" / "a.dat"
        remote.parent.mkdir(parents=True)
        remote.write_text("eagle data\n")
        local = f"{site.site_dir}/{site.user}/e/a.dat"
        job = site.submit("-l", f"stagein_globus={local}@eagle:~/{site.user}/in/a.dat")
        site.run_until(lambda: request_state(site, job) == "user-action", timeout=60,
                       schedule=False)
        comment = site.qstat(job).get("comment", "")
        assert f"globus-staging login --collection {EAGLE_COLLECTION}" in comment
        assert tasks_for(site, job) == []

        proc = cli_login(str(site.config_path), site.user, ["--collection", "eagle"],
                         env=site.env())
        assert proc.returncode == 0, proc.stderr
        assert "Please authenticate with Globus here" in proc.stdout
        assert "logged in" in proc.stdout
        token = site.token_dir(site.user) / "tokens.json"
        assert stat.S_IMODE(token.stat().st_mode) == 0o600
        saved = UserTokens.from_json(token.read_text())
        # the new consent, and the earlier ones kept
        assert set(saved.collections) >= {EAGLE_COLLECTION, REMOTE_COLLECTION}
        assert saved.refresh_token not in proc.stdout + proc.stderr
        site.run_until(lambda: site.job_state(job) == "F", timeout=60)
        assert open(local).read() == "eagle data\n"
        assert_invariants(site)
    finally:
        site.stop()


def test_cli_login_for_a_collection_policy_then_the_job_runs(tmp_path):
    site = make_site(tmp_path)
    try:
        policy = str(uuid.uuid4())
        site.emulator.require_policy(REMOTE_COLLECTION, policy)
        remote_file(site, "in/a.dat", "policy data\n")
        local = f"{site.site_dir}/{site.user}/p/a.dat"
        job = site.submit("-l", f"stagein_globus={local}@theta-dtn:~/{site.user}/in/a.dat")
        site.run_until(lambda: request_state(site, job) == "user-action", timeout=60,
                       schedule=False)
        assert site.job_state(job) == "H"
        comment = site.qstat(job).get("comment", "")
        assert f"--policy {policy}" in comment and "globus-staging login" in comment
        # The command from the comment, as the user would copy it.
        command = re.search(r"run (globus-staging login[^:]*)", comment).group(1).split()
        assert command == ["globus-staging", "login", "--policy", policy]
        proc = cli_login(str(site.config_path), site.user, command[2:], env=site.env())
        assert proc.returncode == 0, proc.stderr
        site.run_until(lambda: site.job_state(job) == "F", timeout=60)
        assert open(local).read() == "policy data\n"
        assert_invariants(site)
    finally:
        site.stop()


# -- globus-staging check: the collection documents against collections.data_access ---


def _client_cfg(site: Site, tmp_path, **collections):
    from pbs_globus_staging.siteconfig import from_dict

    tmp_path.mkdir(parents=True, exist_ok=True)
    cid, secret = site.emu.add_client(site.identity_id)
    secret_file = tmp_path / "secret"
    secret_file.write_text(secret + "\n")
    secret_file.chmod(0o600)
    state = tmp_path / "agent-state"
    state.mkdir(mode=0o700, exist_ok=True)
    return from_dict({
        "collections": collections,
        "credentials": {"mode": "client", "client_id": cid,
                        "client_secret_file": str(secret_file)},
        "globus": {"transfer_url": site.url, "auth_url": site.url, "max_retries": 0},
        "journal": {"path": str(state / "journal.sqlite")},
        "policy": [{"users": ["*"], "allow": ["src:/{user}/"]}],
    }, source="site.yaml")


def test_check_compares_collection_documents_with_data_access(site: Site, tmp_path):
    from pbs_globus_staging.commands.check import Checks, check_globus

    guest = site.emu.add_collection("guest", entity_type="GCSv5_guest_collection")
    site.emu.grant(site.identity_id, guest, "/")
    c = Checks()
    check_globus(c, _client_cfg(site, tmp_path / "a", src=site.src_id, dst=site.dst_id,
                                guest=guest, data_access=["src"]))
    rows = {i["check"]: i for i in c.items}
    assert rows["Globus login"]["status"] == "ok"
    assert rows[f"collection {site.src_id}"]["status"] == "ok"
    assert rows[f"collection {site.dst_id}"]["status"] == "WARN"
    assert "not listed under collections.data_access" in rows[f"collection {site.dst_id}"]["detail"]
    assert rows[f"collection {guest}"]["status"] == "ok"

    c = Checks()   # a guest collection listed: Globus Auth refuses the whole token
    check_globus(c, _client_cfg(site, tmp_path / "b", src=site.src_id, guest=guest,
                                data_access=["guest"]))
    login = next(i for i in c.items if i["check"] == "Globus login")
    assert login["status"] == "FAIL" and "invalid_scope" in login["detail"]
    assert "remove it" in login["fix"] and c.failed
