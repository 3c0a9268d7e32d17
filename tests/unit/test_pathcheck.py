"""pathcheck.resolve: where a local path really leads (client mode, issue 11 point 4)."""
from __future__ import annotations

import os

import pytest

from pbs_globus_staging import pathcheck
from pbs_globus_staging.errors import RequestError
from pbs_globus_staging.request import parse


@pytest.fixture
def tree(tmp_path):
    home = tmp_path / "home"
    (home / "bob" / "sub").mkdir(parents=True)
    (home / "alice" / "data").mkdir(parents=True)
    (home / "bob" / "file").write_text("x")
    (home / "bob" / "x").symlink_to(home / "alice")
    (home / "bob" / "rel").symlink_to("../alice/data")
    (home / "bob" / "self").symlink_to(home / "bob" / "sub")
    (home / "bob" / "chain").symlink_to("self")
    (home / "bob" / "loop1").symlink_to("loop2")
    (home / "bob" / "loop2").symlink_to("loop1")
    return home


@pytest.mark.parametrize("rel,linked", [
    ("bob/x/f", True), ("bob/rel/y/z", True), ("bob/self/new/f", True),
    ("bob/chain/new", True), ("bob/sub/../x/data", True), ("bob/plain", False),
    ("bob/sub/", False), ("bob/new/../x", True), ("bob/file/under", False),
])
def test_resolve_agrees_with_the_kernel(tree, rel, linked):
    path = f"{tree}/{rel}"
    real, followed = pathcheck.resolve(path)
    assert real == os.path.realpath(path)
    assert followed is linked


def test_link_loops_end(tree):
    with pytest.raises(pathcheck._Loop):
        pathcheck.resolve(f"{tree}/bob/loop1/a")


def test_a_directory_swapped_for_a_link_during_the_walk_is_resolved(tree, monkeypatch):
    """Between the lstat and the O_NOFOLLOW open of 'sub' it becomes a link to
    alice's home: the open fails, the walk looks again and resolves the link
    instead of being fooled by what it saw a moment before."""
    real_open = os.open
    swapped = []

    def racing_open(name, flags, *a, **kw):
        if name == "sub" and not swapped:
            swapped.append(True)
            os.rename(tree / "bob" / "sub", tree / "bob" / "sub.old")
            (tree / "bob" / "sub").symlink_to(tree / "alice")
        return real_open(name, flags, *a, **kw)

    monkeypatch.setattr(pathcheck.os, "open", racing_open)
    assert pathcheck.resolve(f"{tree}/bob/sub/data") == (f"{tree}/alice/data", True)
    assert swapped


def test_check_request_names_the_path_and_the_rule(tree):
    req = parse(f"{tree}/bob/x/secret@theta-dtn:/bob/loot", direction="out")
    with pytest.raises(RequestError) as err:
        pathcheck.check_request(req, user="bob", roots=(f"{tree}/bob/",),
                                resource="stageout_globus")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("stageout_globus: item 1: local path '")
    assert f"leads through a symbolic link to '{tree}/alice/secret', which is outside the " \
           f"areas you may use; allowed for bob: {tree}/bob/" in msg
    ok = parse(f"{tree}/bob/self/in.dat@theta-dtn:/bob/in.dat", direction="in")
    pathcheck.check_request(ok, user="bob", roots=(f"{tree}/bob/",), resource="stagein_globus")


def test_a_root_behind_a_symlink_is_compared_resolved(tree, tmp_path):
    """A site whose roots sit behind a link (/home -> /data/home) still works."""
    (tmp_path / "homes").symlink_to(tree)
    req = parse(f"{tmp_path}/homes/bob/sub/in.dat@theta-dtn:/bob/in.dat", direction="in")
    pathcheck.check_request(req, user="bob", roots=(f"{tmp_path}/homes/bob/",),
                            resource="stagein_globus")
