"""pytest plugin: ``globus_emulator``, a started emulator rooted in ``tmp_path``.

The SDK environment variables are set for the test (``monkeypatch``) so that
globus-sdk clients created inside it talk to the emulator.
"""
from __future__ import annotations

from typing import Iterator

import pytest

from .core import GlobusEmulator


@pytest.fixture
def globus_emulator(tmp_path, monkeypatch) -> Iterator[GlobusEmulator]:  # noqa: ANN001
    emu = GlobusEmulator(tmp_path / "globus").start()
    for key, value in emu.env().items():
        monkeypatch.setenv(key, value)
    try:
        yield emu
    finally:
        emu.stop()
    assert not emu.internal_errors, f"emulator internal errors: {emu.internal_errors!r}"
