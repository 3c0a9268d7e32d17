"""Credential providers against the emulator's Globus Auth (real SDK, real HTTP)."""
from __future__ import annotations

import os
import pwd
import stat

import pytest

from globus_sdk.login_flows import LoginFlowManager

from pbs_globus_staging.credentials import (
    ClientCredentialsProvider,
    UserTokenProvider,
    UserTokens,
    expand_token_dir,
    login_flow,
    login_scope,
    read_secret_file,
    write_user_tokens,
)
from pbs_globus_staging.errors import ConfigError, WaitingForUser

from globus_setup import USER, Site, site  # noqa: F401  (fixture)

TOKEN_PATH = "/v2/oauth2/token"


# -- client credentials --------------------------------------------------------------


def test_secret_file_must_be_root_only(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o640)
    with pytest.raises(ConfigError) as err:
        read_secret_file(secret)
    assert f"chmod 600 {secret}" in str(err.value)
    assert "s3cr3t" not in str(err.value)
    secret.chmod(0o600)
    assert read_secret_file(secret) == "s3cr3t-value"


def test_secret_file_symlink_directory_owner_refused(tmp_path):
    real = tmp_path / "real"
    real.write_text("abc")
    real.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match="symlink"):
        read_secret_file(link)
    with pytest.raises(ConfigError, match="regular file"):
        read_secret_file(tmp_path)
    os.chown(real, 12345, 0)
    with pytest.raises(ConfigError, match="owned by uid 0"):
        read_secret_file(real)
    with pytest.raises(ConfigError, match="does not exist"):
        read_secret_file(tmp_path / "absent")


def test_client_credentials_token_cached_across_instances(site: Site):
    emu = site.emu
    provider = site.client_provider()
    emu.reset_calls()
    header = provider.authorizer("alice").get_authorization_header()
    assert header.startswith("Bearer ")
    assert emu.count_calls(TOKEN_PATH) == 1
    # Same instance, another identity: the one client serves every user.
    assert provider.authorizer("bob").get_authorization_header() == header
    # A new agent process (new provider, same cache file) does not ask Auth again.
    again = ClientCredentialsProvider(
        client_id=provider.client_id, client_secret_file=provider.client_secret_file,
        token_storage_path=site.state / "cc-tokens.db", auth_url=site.url,
    )
    assert again.authorizer("alice").get_authorization_header() == header
    assert emu.count_calls(TOKEN_PATH) == 1
    mode = stat.S_IMODE(os.stat(site.state / "cc-tokens.db").st_mode)
    assert mode & 0o077 == 0
    secret = (site.state / "client-secret").read_text().strip()
    assert secret not in repr(provider) and secret not in provider.describe("alice")


def test_client_credentials_wrong_secret_is_waiting_not_crash(site: Site):
    provider = site.client_provider()
    (site.state / "client-secret").write_text("wrong-secret\n")
    bad = ClientCredentialsProvider(
        client_id=provider.client_id, client_secret_file=site.state / "client-secret",
        token_storage_path=site.state / "other.db", auth_url=site.url,
    )
    with pytest.raises(WaitingForUser) as err:
        bad.authorizer("alice")
    assert "wrong-secret" not in str(err.value)
    assert "client" in err.value.action


# -- per-user refresh tokens --------------------------------------------------------------


def test_user_refresh_works_and_access_token_is_cached(site: Site):
    emu = site.emu
    provider, rt = site.user_provider()
    emu.reset_calls()
    header = provider.authorizer(USER).get_authorization_header()
    assert header.startswith("Bearer ") and rt not in header
    assert emu.count_calls(TOKEN_PATH) == 1
    # Same process: the authorizer is reused while the file is unchanged.
    assert provider.authorizer(USER).get_authorization_header() == header
    # New process, same root-only cache: no refresh.
    again = UserTokenProvider(client_id=provider.client_id,
                              token_dir_template=provider.token_dir_template,
                              cache_path=site.state / "user-tokens.db", auth_url=site.url)
    assert again.authorizer(USER).get_authorization_header() == header
    assert emu.count_calls(TOKEN_PATH) == 1
    # Nothing was written into the user's directory by root.
    assert sorted(os.listdir(site.user_token_dir())) == ["tokens.json"]
    assert stat.S_IMODE(os.stat(site.state / "user-tokens.db").st_mode) & 0o077 == 0


def test_user_relogin_with_new_token_takes_effect(site: Site):
    provider, rt = site.user_provider()
    first = provider.authorizer(USER)
    _, rt2 = site.user_provider(native_client=provider.client_id)
    assert rt2 != rt
    assert provider.authorizer(USER) is not first


def test_user_revoked_refresh_token_is_waiting_for_login(site: Site):
    provider, rt = site.user_provider(cache="fresh.db")
    site.emu.revoke_refresh_token(rt)
    with pytest.raises(WaitingForUser) as err:
        provider.authorizer(USER)
    assert err.value.action == "globus-staging login"
    assert err.value.code == "invalid_grant"
    assert rt not in str(err.value)


def _refused(provider: UserTokenProvider) -> WaitingForUser:
    with pytest.raises(WaitingForUser) as err:
        provider.authorizer(USER)
    return err.value


def test_user_token_file_symlink_refused(site: Site):
    provider, _ = site.user_provider()
    tdir = site.user_token_dir()
    (tdir / "tokens.json").rename(tdir / "real.json")
    (tdir / "tokens.json").symlink_to(tdir / "real.json")
    err = _refused(provider)
    assert "symlink" in str(err) and "globus-staging login" in err.action


def test_user_token_dir_symlink_refused(site: Site):
    provider, _ = site.user_provider()
    tdir = site.user_token_dir()
    elsewhere = site.tmp / "elsewhere"
    tdir.rename(elsewhere)
    tdir.symlink_to(elsewhere)
    err = _refused(provider)
    assert "symlink" in str(err)
    assert err.code == "TokenFileUnsafe"


def test_user_token_file_wrong_owner_refused(site: Site):
    provider, _ = site.user_provider()
    os.chown(site.user_token_dir() / "tokens.json", 12345, 12345)
    err = _refused(provider)
    assert "owned by uid 12345" in str(err)
    assert "globus-staging login" in err.action


def test_user_token_dir_wrong_owner_refused(site: Site):
    provider, _ = site.user_provider()
    os.chown(site.user_token_dir(), 12345, 12345)
    err = _refused(provider)
    assert "owned by uid 12345" in str(err)


def test_user_token_file_group_readable_refused(site: Site):
    provider, rt = site.user_provider()
    path = site.user_token_dir() / "tokens.json"
    path.chmod(0o640)
    err = _refused(provider)
    assert err.action == f"chmod 600 ~{USER}/.globus-staging/tokens.json" or \
        err.action == f"chmod 600 {path}"
    assert "chmod 600" in str(err)
    assert rt not in str(err) and rt not in err.action


def test_user_token_dir_group_writable_refused(site: Site):
    provider, _ = site.user_provider()
    site.user_token_dir().chmod(0o770)
    err = _refused(provider)
    assert "chmod 700" in err.action


def test_user_not_logged_in(site: Site):
    provider, _ = site.user_provider()
    (site.user_token_dir() / "tokens.json").unlink()
    err = _refused(provider)
    assert err.action == "globus-staging login" and err.code == "NotLoggedIn"


def test_user_token_file_for_other_client_or_garbage(site: Site):
    provider, _ = site.user_provider()
    path = site.user_token_dir() / "tokens.json"
    path.write_text("{not json")
    assert "not valid JSON" in str(_refused(provider))
    path.write_text(UserTokens(client_id="other", refresh_token="x").to_json())
    assert "another Globus client" in str(_refused(provider))


def test_unknown_user(site: Site):
    provider, _ = site.user_provider()
    with pytest.raises(WaitingForUser, match="no account"):
        provider.authorizer("no-such-user-xyz")


def test_token_dir_template_forms():
    assert expand_token_dir("~{user}/.globus-staging", "root", "/root") == (
        os.path.realpath("/root"), ".globus-staging")
    assert expand_token_dir("/var/lib/gs/{user}", "bob", "/home/bob") == ("/", "var/lib/gs/bob")
    with pytest.raises(ConfigError):
        expand_token_dir("relative/{user}", "bob", "/home/bob")
    with pytest.raises(ConfigError):
        expand_token_dir("/x/{user}/../y", "bob", "/home/bob")
    with pytest.raises(ConfigError):
        UserTokenProvider(client_id="6a1c0000-0000-4000-8000-000000000000",
                          token_dir_template="/shared/tokens", cache_path="/tmp/x.db")


# -- login (user side) --------------------------------------------------------------


class _EmulatedBrowser(LoginFlowManager):
    """The browser step: opens the authorize URL on the emulator's Globus Auth,
    picks the identity, and exchanges the code the page shows (PKCE)."""

    def __init__(self, emu, identity_id, login_client):
        super().__init__(login_client, request_refresh_tokens=True)
        self.emu, self.identity_id = emu, identity_id
        self.asked: list[str] = []

    def run_login_flow(self, auth_parameters):
        from pbs_globus_staging_sim.browser import follow_login_url

        self.asked = list(auth_parameters.required_scopes)
        url = self._get_authorize_url(auth_parameters, self.emu.url + "/v2/web/auth-code")
        assert "access_type=offline" in url  # refresh tokens were requested
        code = follow_login_url(url, self.emu._identities[self.identity_id].username)
        return self.login_client.oauth2_exchange_code_for_tokens(code)


def test_login_flow_asks_for_data_access_and_writes_0600(site: Site, tmp_path):
    import globus_sdk

    native = site.emu.add_native_client()
    login_client = globus_sdk.NativeAppAuthClient(native, base_url=site.url)
    browser = _EmulatedBrowser(site.emu, site.identity_id, login_client)
    tokens = login_flow(client_id=native, collection_ids=[site.src_id, site.dst_id],
                        auth_url=site.url, flow_manager=browser)
    assert f"https://auth.globus.org/scopes/{site.src_id}/data_access" in browser.asked[0]
    assert f"https://auth.globus.org/scopes/{site.dst_id}/data_access" in browser.asked[0]
    assert browser.asked[0].startswith("urn:globus:auth:scope:transfer.api.globus.org:all[")
    assert tokens.collections == (site.src_id.lower(), site.dst_id.lower())
    assert tokens.refresh_token not in repr(tokens)

    token_dir = tmp_path / "home" / ".globus-staging"
    token_dir.parent.mkdir()
    old_umask = os.umask(0)  # a careless umask must not widen the file
    try:
        path = write_user_tokens(tokens, token_dir=token_dir)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(token_dir).st_mode) == 0o700
    assert UserTokens.from_json(path.read_text()) == tokens


def test_write_user_tokens_refuses_symlinked_dir(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    from pbs_globus_staging.errors import StagingError

    with pytest.raises(StagingError, match="symlink"):
        write_user_tokens(UserTokens(client_id="c", refresh_token="r"),
                          token_dir=tmp_path / "link")
    assert os.listdir(tmp_path / "target") == []


def test_login_scope_rejects_non_uuid():
    with pytest.raises(ValueError, match="collection"):
        login_scope(["theta-dtn"])
    assert str(login_scope()) == "urn:globus:auth:scope:transfer.api.globus.org:all"


def test_nobody_exists():
    # The tests above rely on an unprivileged account existing.
    assert pwd.getpwnam(USER).pw_uid != 0
