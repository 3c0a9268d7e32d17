"""Shared set-up for the Globus backend and credentials tests.

A "site" on the emulator: two collections backed by temp directories, one
Globus identity with access to both, and helpers that build the real
credential providers and the real ``GlobusBackend`` pointed at the emulator.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import pwd
import typing as t

import pytest

from pbs_globus_staging.backend import TransferItem, TransferSpec
from pbs_globus_staging.credentials import (
    ClientCredentialsProvider,
    UserTokenProvider,
    UserTokens,
    write_user_tokens,
)
from pbs_globus_staging.globus_backend import GlobusBackend

USER = "nobody"  # an account every Linux box has; tests run as root and chown to it


@dataclasses.dataclass
class Site:
    emu: t.Any
    tmp: pathlib.Path
    src_id: str
    dst_id: str
    src_dir: pathlib.Path
    dst_dir: pathlib.Path
    identity_id: str
    state: pathlib.Path

    @property
    def url(self) -> str:
        return self.emu.url + "/"

    def spec(self, submission_id: str, *, items: t.Sequence[TransferItem] = (),
             label: str = "job 1.server stage-in", **kw: t.Any) -> TransferSpec:
        items = tuple(items) or (TransferItem("/in/", "/out/", recursive=True),)
        return TransferSpec(submission_id=submission_id, source_collection=self.src_id,
                            destination_collection=self.dst_id, items=items, label=label, **kw)

    def write_src(self, rel: str, size: int = 1000) -> pathlib.Path:
        path = self.src_dir / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        return path

    def client_provider(self) -> ClientCredentialsProvider:
        cid, secret = self.emu.add_client(self.identity_id)
        secret_file = self.state / "client-secret"
        secret_file.write_text(secret + "\n")
        secret_file.chmod(0o600)
        return ClientCredentialsProvider(
            client_id=cid, client_secret_file=secret_file,
            token_storage_path=self.state / "cc-tokens.db", auth_url=self.url,
        )

    def user_provider(self, *, user: str = USER, cache: str = "user-tokens.db",
                      native_client: str | None = None, scope: str | None = None,
                      session_policies: t.Sequence[str] = ()
                      ) -> tuple[UserTokenProvider, str]:
        """Log ``user`` in (as ``globus-staging login`` would) and return the
        agent's provider plus the refresh token.  ``scope`` None: the login
        consented to every collection's data_access."""
        native = native_client or self.emu.add_native_client()
        toks = self.emu.issue_tokens(self.identity_id, client_id=native, scope=scope,
                                     session_policies=tuple(session_policies))
        token_dir = self.user_token_dir(user)
        token_dir.parent.mkdir(parents=True, exist_ok=True)
        if token_dir.exists():  # a second login: this helper writes as root, then chowns
            os.chown(token_dir, 0, 0)
        write_user_tokens(
            UserTokens(client_id=native, refresh_token=toks["refresh_token"],
                       scope=toks["scope"], collections=(), created_at=1),
            token_dir=token_dir,
        )
        pw = pwd.getpwnam(user)
        for path in (token_dir, token_dir / "tokens.json"):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        provider = UserTokenProvider(
            client_id=native, token_dir_template=str(self.tmp / "homes" / "{user}" / ".globus-staging"),
            cache_path=self.state / cache, auth_url=self.url,
        )
        return provider, toks["refresh_token"]

    def user_token_dir(self, user: str = USER) -> pathlib.Path:
        return self.tmp / "homes" / user / ".globus-staging"

    def backend(self, provider: t.Any, **kw: t.Any) -> GlobusBackend:
        return GlobusBackend(credentials=provider, transfer_url=self.url, **kw)


@pytest.fixture
def site(globus_emulator: t.Any, tmp_path: pathlib.Path) -> Site:
    emu = globus_emulator
    src_dir, dst_dir, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    for d in (src_dir, dst_dir):
        d.mkdir()
    state.mkdir(mode=0o700)
    src = emu.add_collection("remote-dtn", directory=src_dir)
    dst = emu.add_collection("site-fs", directory=dst_dir)
    ident = emu.add_identity("alice@example.org")
    emu.grant(ident, src, "/")
    emu.grant(ident, dst, "/")
    return Site(emu=emu, tmp=tmp_path, src_id=src, dst_id=dst, src_dir=src_dir,
                dst_dir=dst_dir, identity_id=ident, state=state)
