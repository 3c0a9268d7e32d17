"""The agent's root-only token cache: one SQLite file, one namespace per login."""
from __future__ import annotations

import logging
import os
import pathlib
import stat
import threading
import time
import typing as t

from globus_sdk.token_storage import SQLiteTokenStorage, TokenStorage, TokenStorageData

from ..errors import ConfigError
from .common import _MIN_CACHED_TOKEN_LIFE

log = logging.getLogger("pbs_globus_staging.credentials")

def _secure_state_dir(path: pathlib.Path) -> None:
    """Create the parent of a root-only state file (0700) if needed."""
    parent = path.parent
    parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(parent)
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"{parent}: expected a directory for the token cache")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ConfigError(
            f"{parent}: token cache directory must be owned by uid {os.geteuid()} "
            f"and not group/world-writable (chmod 700 {parent})"
        )


def _open_token_cache(path: pathlib.Path, namespace: str) -> SQLiteTokenStorage:
    """A root-only SQLite token store (the SDK creates it 0600; we keep it so)."""
    path = pathlib.Path(path)
    _secure_state_dir(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: token cache must be a regular file (not a symlink)")
        if st.st_uid != os.geteuid():
            raise ConfigError(f"{path}: token cache must be owned by uid {os.geteuid()}")
        if st.st_mode & 0o077:
            # Our own state file; tighten rather than refuse to start.
            os.chmod(path, 0o600)
            log.warning("token cache %s had group/other permissions; set to 0600", path)
    try:
        return SQLiteTokenStorage(
            path,
            namespace=namespace,
            # The agent may poll from a worker thread; every use is under our lock.
            connect_params={"check_same_thread": False, "timeout": 10},
        )
    except Exception as err:  # sqlite3 errors, ValueError from the SDK
        raise ConfigError(f"{path}: cannot open the token cache ({type(err).__name__}: {err})")


class _Namespaced(TokenStorage):
    """One namespace of a shared SQLiteTokenStorage.

    One SQLite connection serves every user (thousands of users must not mean
    thousands of open files); the SDK's storage keys rows by its ``namespace``
    attribute, which we set under a lock for each operation.
    """

    def __init__(self, shared: SQLiteTokenStorage, lock: threading.Lock, namespace: str):
        super().__init__(namespace=namespace)
        self._shared = shared
        self._lock = lock

    def store_token_data_by_resource_server(
        self, token_data_by_resource_server: t.Mapping[str, TokenStorageData]
    ) -> None:
        with self._lock:
            self._shared.namespace = self.namespace
            self._shared.store_token_data_by_resource_server(token_data_by_resource_server)

    def get_token_data_by_resource_server(self) -> dict[str, TokenStorageData]:
        with self._lock:
            self._shared.namespace = self.namespace
            return self._shared.get_token_data_by_resource_server()

    def remove_token_data(self, resource_server: str) -> bool:
        with self._lock:
            self._shared.namespace = self.namespace
            return self._shared.remove_token_data(resource_server)


def _usable_cached(data: TokenStorageData | None, *, scope: str | None = None) -> bool:
    if data is None or not data.access_token:
        return False
    if scope is not None and set(data.scope.split()) != set(scope.split()):
        return False
    return data.expires_at_seconds > time.time() + _MIN_CACHED_TOKEN_LIFE
