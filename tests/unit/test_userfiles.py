"""userfiles.read_user_file: the one race-free reader of user-controlled files."""
import os
import pwd
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from pbs_globus_staging import userfiles
from pbs_globus_staging.userfiles import UserFileError, read_user_file

SECRET = b"s3cr3t-content\n"
ME = os.geteuid()


def _users():
    try:
        return pwd.getpwnam("alice").pw_uid, pwd.getpwnam("bob").pw_uid
    except KeyError:
        return None


@pytest.fixture
def d():
    # Not under tmp_path (pytest keeps it 0700): the access checks walk it.
    base = Path(tempfile.mkdtemp(prefix="userfiles-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def put(path: Path, data: bytes = SECRET, mode: int = 0o600) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


def refused(path, **kw) -> UserFileError:
    kw.setdefault("owner", ME)
    kw.setdefault("max_bytes", 4096)
    with pytest.raises(UserFileError) as ei:
        read_user_file(str(path), **kw)
    err = ei.value
    msg = str(err)
    assert "\n" not in msg and msg.strip()
    assert "s3cr3t" not in msg          # never the content
    return err


def test_reads_a_good_file(d):
    assert read_user_file(put(d / "f"), owner=ME, max_bytes=4096, forbid_mode=0o077) == SECRET


def test_symlink_at_the_leaf(d):
    put(d / "real")
    (d / "link").symlink_to(d / "real")
    err = refused(d / "link")
    assert err.reason == userfiles.SYMLINK and not err.directory
    assert err.where == str(d / "link") and "symbolic link" in str(err)


def test_symlink_at_a_parent(d):
    (d / "real").mkdir()
    put(d / "real" / "f")
    (d / "alias").symlink_to(d / "real")
    err = refused(d / "alias" / "f")
    assert err.reason == userfiles.SYMLINK and err.directory
    assert err.where == str(d / "alias") and err.name == "alias"
    # ... unless it is part of the caller's root-controlled base (root's view)
    assert read_user_file(str(d / "alias" / "f"), owner=ME, max_bytes=4096,
                          base=str(d / "alias")) == SECRET


def test_component_swapped_for_a_symlink_during_the_walk(d, monkeypatch):
    """A directory replaced by a symlink right before it is opened is refused;
    one replaced right after is harmless (the walk goes on from the open fd)."""
    (d / "sub").mkdir()
    put(d / "sub" / "f")
    other = d / "other"
    other.mkdir()
    put(other / "f", b"other\n")
    real_open = os.open
    outcomes = []

    for after in (False, True):
        def swap():
            os.rename(d / "sub", d / "sub-old")
            os.symlink(other, d / "sub")

        def spy(path, flags, mode=0o777, *, dir_fd=None):
            if path == "sub" and not after:
                swap()
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            if path == "sub" and after:
                swap()
            return fd

        monkeypatch.setattr(userfiles.os, "open", spy)
        try:
            outcomes.append(read_user_file(str(d / "sub" / "f"), owner=ME, max_bytes=4096))
        except UserFileError as err:
            outcomes.append(err.reason)
        finally:
            monkeypatch.setattr(userfiles.os, "open", real_open)
        os.unlink(d / "sub")
        os.rename(d / "sub-old", d / "sub")
    assert outcomes == [userfiles.SYMLINK, SECRET]


def test_leaf_replaced_between_lstat_and_open(d, monkeypatch):
    p = put(d / "f")
    put(d / "g", b"other\n")
    real_open = os.open

    def spy(path, flags, mode=0o777, *, dir_fd=None):
        if path == "f":
            os.rename(d / "g", d / "f")
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(userfiles.os, "open", spy)
    assert refused(p).reason == userfiles.CHANGED


@pytest.mark.skipif(os.geteuid() != 0 or _users() is None,
                    reason="needs root and the users alice and bob (id alice) to chown files")
def test_wrong_owner(d):
    alice, bob = _users()
    p = put(d / "f")
    os.chown(p, bob, -1)
    err = refused(p, owner=alice)
    assert err.reason == userfiles.OWNER and err.st.st_uid == bob
    assert f"owned by uid {bob}; expected uid {alice}" in str(err)
    os.chown(p, alice, -1)
    assert read_user_file(p, owner=alice, max_bytes=4096) == SECRET
    # directories below the base: the user's or root's; the file's own: the user's
    sub = d / "sub"
    sub.mkdir(mode=0o755)
    q = put(sub / "f")
    os.chown(q, alice, -1)
    os.chown(sub, bob, -1)
    err = refused(q, owner=alice, base=str(d), dir_owners=(alice, 0))
    assert err.reason == userfiles.DIR_OWNER and err.where == str(sub)
    os.chown(sub, 0, -1)
    assert read_user_file(q, owner=alice, max_bytes=4096, base=str(d),
                          dir_owners=(alice, 0)) == SECRET
    err = refused(q, owner=alice, base=str(d), dir_owners=(alice, 0), parent_owners=(alice,))
    assert err.reason == userfiles.DIR_OWNER
    # as alice, root may not look into bob's private directory: same words
    # whether the file is there or not (no oracle)
    private = d / "private"
    private.mkdir(mode=0o700)
    os.chown(private, bob, -1)
    there = put(private / "f")
    os.chown(there, alice, -1)
    a = refused(there, owner=alice, access_uid=alice)
    b = refused(private / "missing", owner=alice, access_uid=alice)
    assert a.reason == b.reason == userfiles.DENIED and str(a) == str(b)
    assert a.where == str(private)


@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_group_or_world_writable(d, mode):
    p = put(d / "f", mode=mode)
    err = refused(p, forbid_mode=0o022)
    assert err.reason == userfiles.MODE and f"chmod go-w {p}" in str(err)
    # a secret may not even be readable by others
    q = put(d / "s", mode=0o640)
    assert "chmod go-rwx" in str(refused(q, forbid_mode=0o077))
    assert read_user_file(q, owner=ME, max_bytes=4096, forbid_mode=0o022) == SECRET


def test_writable_directory_below_the_base(d):
    sub = d / "sub"
    sub.mkdir()
    sub.chmod(0o777)
    p = put(sub / "f")
    err = refused(p, base=str(d), private_dirs=True)
    assert err.reason == userfiles.DIR_WRITABLE and err.where == str(sub)
    sub.chmod(0o755)
    assert read_user_file(p, owner=ME, max_bytes=4096, base=str(d), private_dirs=True) == SECRET


def test_too_big(d):
    p = put(d / "f", b"x" * 101)
    err = refused(p, max_bytes=100)
    assert err.reason == userfiles.TOO_BIG and "is 101 bytes; expected at most 100" in str(err)
    assert read_user_file(p, owner=ME, max_bytes=101) == b"x" * 101


def test_fifo_is_refused_without_blocking(d):
    fifo = d / "fifo"
    os.mkfifo(fifo, 0o600)
    out = []
    t = threading.Thread(target=lambda: out.append(refused(fifo)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "reading a fifo blocked"
    assert out[0].reason == userfiles.NOT_REGULAR


def test_directory_is_not_a_file(d):
    (d / "sub").mkdir()
    err = refused(d / "sub")
    assert err.reason == userfiles.NOT_REGULAR and "not a regular file" in str(err)
    f = put(d / "f")
    err = refused(f + "/x")
    assert err.reason == userfiles.NOT_DIR and err.where == f


def test_missing(d):
    err = refused(d / "absent")
    assert err.reason == userfiles.MISSING and err.where == str(d / "absent")
    err = refused(d / "no" / "pe")
    assert err.reason == userfiles.MISSING and err.directory and err.where == str(d / "no")


def test_bad_paths(d):
    for bad in ("relative/f", "/a/../f", "/"):
        assert refused(bad).reason == userfiles.BAD_PATH


def test_the_descriptors_are_closed_and_cloexec(d, monkeypatch):
    p = put(d / "f")
    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *, dir_fd=None):
        seen.append(flags)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(userfiles.os, "open", spy)
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    read_user_file(p, owner=ME, max_bytes=4096)
    assert seen and all(f & os.O_CLOEXEC for f in seen)
    assert all(f & os.O_NOFOLLOW for f in seen[1:])          # all but "/" itself
    assert seen[-1] & os.O_NONBLOCK
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) == before
