"""The staging request grammar: every rule, every error, manifests on real files."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pbs_globus_staging import request
from pbs_globus_staging.errors import RequestError
from pbs_globus_staging.request import (Deadline, Direction, Item, Options, StagingRequest,
                                        expand_manifests, parse, render, request_key)

UUID = "08925f04-569f-11e7-bef8-22000b9a448b"
TASK = "1f2e3d4c-0000-11ee-8000-0242ac120002"
IN_FORM = "expected LOCAL@COLLECTION:REMOTE, e.g. /lus/alice/in/@theta-dtn:/~/in/"


def pin(value: str) -> StagingRequest:
    return parse(value, direction="in")


def pout(value: str) -> StagingRequest:
    return parse(value, direction="out")


def err_in(value: str, **kw) -> str:
    with pytest.raises(RequestError) as ei:
        parse(value, direction="in", **kw)
    msg = str(ei.value)
    assert "\n" not in msg and "\r" not in msg
    return msg


def err_out(value: str) -> str:
    with pytest.raises(RequestError) as ei:
        parse(value, direction="out")
    return str(ei.value)


# --- accepted forms --------------------------------------------------------

def test_single_directory_item():
    r = pin("/lus/alice/in/@theta-dtn:/~/in/")
    assert r == StagingRequest(Direction.IN, (Item("/lus/alice/in/", "theta-dtn", "/~/in/", True),))
    assert r.items[0].origin == "item 1"


def test_single_file_item_and_uuid_lowercased():
    r = pin(f"/lus/alice/a.dat@{UUID.upper()}:/data/a.dat")
    assert r.items == (Item("/lus/alice/a.dat", UUID, "/data/a.dat", False),)


def test_home_relative_remote_is_normalised_to_globus_form():
    assert pin("/lus/a/x@c:~/x").items[0].remote == "/~/x"
    assert pin("/lus/a/x/@c:~/").items[0].remote == "/~/"
    assert pin("/lus/a/x/@c:/~/").items[0].remote == "/~/"


def test_several_items_tasks_manifests_and_all_stagein_options():
    r = pin(f"/a/x@c1:/x+/a/y/@c2:/y/+task={TASK.upper()}+manifest=/a/m.txt"
            "+sync=checksum+checksum=yes+deadline=7d+onfail=delete+cleanup=/a/clean.sh")
    assert [i.local for i in r.items] == ["/a/x", "/a/y/"]
    assert r.tasks == (TASK,)
    assert r.manifests == ("/a/m.txt",)
    assert r.options == Options(sync_level="checksum", verify_checksum=True,
                                deadline=Deadline(seconds=7 * 86400, form="7d"),
                                onfail="delete", cleanup="/a/clean.sh")


def test_stageout_options():
    r = pout("/a/out/@c:/res/+when=always+sync=mtime+checksum=no")
    assert r.direction is Direction.OUT
    assert r.options == Options(sync_level="mtime", verify_checksum=False, when="always")


def test_options_may_come_first_and_task_alone_is_enough():
    r = pin(f"sync=size+task={TASK}")
    assert r.items == () and r.tasks == (TASK,) and r.options.sync_level == "size"


def test_manifest_alone_is_enough():
    assert pout("manifest=/home/a/list.txt").manifests == ("/home/a/list.txt",)


def test_paths_are_normalised():
    r = pin("/lus//alice/./in/.@c:/x//y/./")
    assert r.items[0] == Item("/lus/alice/in/", "c", "/x/y/", True)


def test_colon_and_hash_and_equals_are_literal_in_paths():
    r = pin("/a/b:c#d=e@c:/r:s@t")
    assert r.items[0].local == "/a/b:c#d=e"
    assert r.items[0].remote == "/r:s@t"


def test_percent_escapes_decode():
    r = pin("/a/b%2Bc%40d%20e%2Cf%25g@c:/x%2b%3a")
    assert r.items[0].local == "/a/b+c@d e,f%g"
    assert r.items[0].remote == "/x+:"


def test_escaped_slash_counts_as_separator():
    with pytest.raises(RequestError, match="one side ends with '/'"):
        pin("/a/b@c:/x%2F")


def test_non_ascii_letters_are_allowed():
    r = pin("/lus/josé/données/@c:/数据/")
    assert r.items[0].local == "/lus/josé/données/"


def test_outer_whitespace_is_ignored():
    assert pin("  /a@c:/b \n").items[0].local == "/a"


def test_alias_shapes():
    for alias in ("a", "theta-dtn", "Eagle_2.x", "x" * 64):
        assert pin(f"/a@{alias}:/b").items[0].collection == alias


# --- deadlines -------------------------------------------------------------

@pytest.mark.parametrize("text,seconds,form", [
    ("90m", 5400, "90m"), ("36h", 36 * 3600, "36h"), ("07d", 7 * 86400, "7d"),
    ("400d", 400 * 86400, "400d"),
])
def test_relative_deadlines(text, seconds, form):
    d = pin(f"/a@c:/b+deadline={text}").options.deadline
    assert d == Deadline(seconds=seconds, form=form)
    now = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    assert d.resolve(now=now) == now + dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text,at,form", [
    ("2030-01-02", dt.datetime(2030, 1, 2, tzinfo=dt.timezone.utc), "2030-01-02"),
    ("2030-01-02T13:45", dt.datetime(2030, 1, 2, 13, 45, tzinfo=dt.timezone.utc),
     "2030-01-02T13:45"),
    ("2030-01-02T13:45Z", dt.datetime(2030, 1, 2, 13, 45, tzinfo=dt.timezone.utc),
     "2030-01-02T13:45"),
])
def test_absolute_deadlines_are_utc(text, at, form):
    d = pin(f"/a@c:/b+deadline={text}").options.deadline
    assert d == Deadline(at=at, form=form)
    assert d.resolve(now=dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)) == at


@pytest.mark.parametrize("text", ["0d", "401d", "1w", "2030-02-30", "2030-1-2", "soon",
                                  "2030-01-01T25:00", "1234567d", ""])
def test_bad_deadlines(text):
    msg = err_in(f"/a@c:/b+deadline={text}")
    assert msg.startswith("stagein_globus: item 2 'deadline=")
    assert "expected deadline=YYYY-MM-DD, YYYY-MM-DDTHH:MM (UTC) or a duration" in msg


# --- exact messages for a representative set ------------------------------

def test_message_no_at():
    assert err_in("/a@c:/b+foo") == f"stagein_globus: item 2 'foo' has no '@'; {IN_FORM}"


def test_message_resource_override():
    assert err_in("foo", resource="Resource_List.x").startswith("Resource_List.x: item 1 'foo'")


def test_message_no_colon():
    assert err_in("/a@theta-dtn") == \
        f"stagein_globus: item 1 '/a@theta-dtn' has no ':' after the collection; {IN_FORM}"


def test_message_no_remote():
    assert err_in("/a@c:") == f"stagein_globus: item 1 '/a@c:' has no remote path after ':'; {IN_FORM}"


def test_message_relative_local():
    assert err_in("lus/a@c:/b") == ("stagein_globus: item 1: local path 'lus/a' is not an "
                                   f"absolute path (it must start with /); {IN_FORM}")


def test_message_empty_value():
    assert err_in("") == f"stagein_globus: the value is empty; {IN_FORM}, joined by '+'"


def test_message_empty_element():
    assert err_in("/a@c:/b++/c@c:/d") == ("stagein_globus: item 2 is empty (two '+' in a row, "
                                         f"or a '+' at an end); {IN_FORM}")
    assert "item 2 is empty" in err_in("/a@c:/b+")


def test_message_nothing_to_transfer():
    assert err_in("sync=size+deadline=2d") == (
        "stagein_globus: 'sync=size+deadline=2d' names nothing to transfer; "
        f"{IN_FORM} (or task=UUID or manifest=PATH)")


def test_message_dir_mismatch():
    assert err_in("/a/in/@c:/in") == (
        "stagein_globus: item 1 '/a/in/@c:/in': one side ends with '/' and the other does "
        "not; end both with '/' for a directory, neither for a file")


def test_message_bad_choice():
    assert err_in("/a@c:/b+sync=fast") == \
        "stagein_globus: item 2 'sync=fast' is not valid; expected sync=exists|size|mtime|checksum"
    assert "expected checksum=yes|no" in err_in("/a@c:/b+checksum=true")
    assert "expected onfail=hold|delete" in err_in("/a@c:/b+onfail=requeue")
    assert "expected when=ok|always|notok" in err_out("/a@c:/b+when=never")


def test_message_unknown_option():
    assert err_in("/a@c:/b+colour=red") == (
        "stagein_globus: item 2: unknown option 'colour='; expected one of task= manifest= "
        "sync= checksum= deadline= onfail= cleanup= or an item like /lus/alice/in/@theta-dtn:/~/in/")


def test_options_per_direction():
    assert err_in("/a@c:/b+when=ok") == (
        "stagein_globus: when= is only allowed for stage-out (in stageout_globus); "
        "stagein_globus accepts task= manifest= sync= checksum= deadline= onfail= cleanup=")
    assert err_out("/a@c:/b+onfail=hold").startswith(
        "stageout_globus: onfail= is only allowed for stage-in (in stagein_globus)")
    assert "cleanup= is only allowed for stage-in" in err_out("/a@c:/b+cleanup=/a/x")
    assert "task= is only allowed for stage-in" in err_out(f"/a@c:/b+task={TASK}")


def test_repeated_option_task_manifest():
    assert "item 3 'sync=size' is given twice; give sync= once" in err_in("/a@c:/b+sync=size+sync=size")
    assert "is given twice" in err_in(f"task={TASK}+task={TASK.upper()}")
    assert "is given twice" in err_in("manifest=/a/m+manifest=/a//m")


def test_bad_task():
    assert "item 1 'task=1234' is not valid; expected task=UUID" in err_in("task=1234")


def test_manifest_and_cleanup_must_be_files():
    assert "ends with '/'; it must name a file; expected manifest=/absolute/path/to/file" in \
        err_in("manifest=/a/dir/")
    assert "expected cleanup=/absolute/path/to/script" in err_in("/a@c:/b+cleanup=x.sh")


def test_duplicate_items():
    assert err_in("/a/x@c:/x+/a/x@c:/x") == \
        "stagein_globus: item 2 '/a/x@c:/x' repeats item 1; name each item once"
    # same destination after normalisation
    assert "item 2 '/a/x@c:/x' repeats item 1" in err_in("/a/x@c:/x+/a//x@c:/./x")


def test_two_items_writing_one_destination():
    assert "item 2 '/a/x@d:/y' writes to the same destination as item 1" in \
        err_in("/a/x@c:/x+/a/x@d:/y")
    assert "writes to the same destination" in err_out("/a/x@c:/x+/a/y@c:/x")
    # stage-out: same remote path on different collections is fine
    assert len(pout("/a/x@c:/x+/a/y@d:/x").items) == 2


@pytest.mark.parametrize("coll", ["1abc", "the dtn", "x" * 65, "_x", "08925f04-569f",
                                  "a/b", "ｔｈｅｔａ"])
def test_bad_collection(coll):
    msg = err_in(f"/a@{coll}:/b")
    assert "is neither a collection UUID nor an alias" in msg or "contains a space" in msg \
        or "has no ':'" in msg


# --- path rules ------------------------------------------------------------

@pytest.mark.parametrize("value,needle", [
    ("/a/../b@c:/x", "local path '/a/../b' contains a '..' component"),
    ("/a@c:/x/..", "remote path '/x/..' contains a '..' component"),
    ("/a%2F..%2Fb@c:/x", "contains a '..' component"),
    ("/a@c:%2E%2E/x", "is not an absolute path"),
    ("/a@c:/x/%2e%2e/y", "contains a '..' component"),
    ("/a@c:~bob/x", "remote path '~bob/x' starts with '~user'; only ~/ (your own home) is allowed"),
    ("/a@c:/~bob/x", "starts with '~user'"),
    ("/a@c:~", "write ~/ for your home directory"),
    ("/a@c:/~", "write ~/ for your home directory"),
    ("~/a@c:/x", "local path '~/a' is not an absolute path"),
    ("/~/a@c:/x", "local path '/~/a' starts with '~'"),
    ("/a@c:x", "remote path 'x' is not an absolute path (it must start with / or ~/)"),
    ("/a b@c:/x", "local path '/a b' contains a space; write it as %20"),
    ("/a@c:/x\ty", "remote path '/x\\x09y' contains the control character \\x09"),
    ("/a\x00@c:/x", "local path '/a\\x00' contains the control character \\x00"),
    ("/a\x7f@c:/x", "contains the control character \\x7f"),
    ("/a,b@c:/x", "contains ','; write it as %2C"),
    ("/a%zz@c:/x", "has an invalid escape '%zz'; write % as %25"),
    ("/a%@c:/x", "has an invalid escape '%'"),
    ("/a%0A@c:/x", "has the escape %0A, which is not a printable ASCII character"),
    ("/a%C3%A9@c:/x", "has the escape %C3"),
    ("/a\u202eb@c:/x", "contains the invisible or control character U+202E"),
    ("/a\u200bb@c:/x", "contains the invisible or control character U+200B"),
    ("/a\u00a0b@c:/x", "contains the invisible or control character U+00A0"),
    ("/a\ufeff@c:/x", "U+FEFF"),
    ("/a\ue000@c:/x", "U+E000"),
    ("/a\uff0fetc@c:/x", "contains U+FF0F, which looks like '/'"),
    ("/a\u2215etc@c:/x", "contains U+2215, which looks like '/'"),
    ("/a\u2044etc@c:/x", "U+2044, which looks like '/'"),
    ("/a/\uff0e\uff0e/b@c:/x", "U+FF0E, which looks like '.'"),
    ("/a/\u2024\u2024/b@c:/x", "U+2024, which looks like '.'"),
    ("/a@c:/x\u0338y", "U+0338, which looks like '/'"),
])
def test_path_rules(value, needle):
    msg = err_in(value)
    assert needle in msg, msg


def test_message_escapes_rtl_override_and_control_chars():
    msg = err_in("/\u202egpj.exe\x1b[31m@c:x")
    assert "\u202e" not in msg and "\x1b" not in msg
    assert "\\u202e" in msg


def test_long_offending_part_is_truncated():
    msg = err_in("/" + "x" * 3000 + "/end")
    assert "item 1 '/" + "x" * 19 + "..." + "x" * 36 + "/end' has no '@'" in msg
    assert len(msg) < 300


def test_value_length_cap():
    assert err_in("/a@c:/" + "b" * 5000) == (
        "stagein_globus: the value is 5006 characters long; at most 4096 are allowed "
        "(put long lists in a file and use manifest=PATH)")
    assert "at most 50 are allowed" in err_in("/a@c:/" + "b" * 50, max_length=50)


def test_item_count_cap():
    value = "+".join(f"/a/{i}@c:/{i}" for i in range(11))
    assert len(pin(value).items) == 11
    assert "more than 10 items" in err_in(value, max_items=10)


def test_non_text_value():
    with pytest.raises(RequestError, match="the value must be text"):
        parse(None, direction="in")  # type: ignore[arg-type]


def test_bad_direction_is_a_programming_error():
    with pytest.raises(ValueError):
        parse("/a@c:/b", direction="sideways")


# --- render / key ----------------------------------------------------------

def test_render_canonical_order_and_escapes():
    r = pin("deadline=2d+sync=size+/a/b%2Bc%40d%20e%2C@C:~/x'y\"+task=" + TASK.upper())
    assert render(r) == f"/a/b%2Bc%40d%20e%2C@C:/~/x%27y%22+task={TASK}+sync=size+deadline=2d"
    assert pin(render(r)) == r


def test_render_has_no_comma_or_space():
    r = pin("/a%20b%2Cc/@c:/d%20e/")
    out = render(r)
    assert "," not in out and " " not in out


def test_request_key_stable_and_sensitive():
    r1 = pin("/a@c:/b+sync=size")
    r2 = pin("sync=size+/a@c:/./b")
    assert request_key(r1, identity="alice") == request_key(r2, identity="alice")
    assert len(request_key(r1, identity="alice")) == 64
    assert request_key(r1, identity="alice") != request_key(r1, identity="bob")
    assert request_key(r1, identity="alice") != request_key(pout("/a@c:/b+sync=size"),
                                                            identity="alice")
    assert request_key(r1, identity="alice") != request_key(pin("/a@c:/b"), identity="alice")
    # the identity cannot be confused with the request by concatenation
    assert request_key(pin("/a@c:/b"), identity="x+") != \
        request_key(pin("/a@c:/b"), identity="x")


def test_request_key_is_pinned():
    # A changed key would make the agent forget in-flight requests across an upgrade.
    assert request_key(pin("/lus/a/in/@theta-dtn:/~/in/"), identity="alice") == \
        hashlib.sha256(
            b'[1,"alice","in","/lus/a/in/@theta-dtn:/~/in/"]').hexdigest()


# --- manifests -------------------------------------------------------------

OWNER = 12345


@pytest.fixture
def mdir():
    # Not under tmp_path: pytest keeps that 0700, and the job owner (OWNER) must be
    # able to search every directory on the way, as on a real filesystem.
    base = Path(tempfile.mkdtemp(prefix="manifests-"))
    base.chmod(0o711)
    d = base / "m"
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(base)


def write_manifest(path, text, *, uid=OWNER, mode=0o644):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    os.chown(path, uid, -1)
    os.chmod(path, mode)
    return str(path)


def manifest_req(path: str, extra: str = "", direction="in") -> StagingRequest:
    return parse(f"manifest={path}{extra}", direction=direction)


def expand_err(req, **kw) -> str:
    with pytest.raises(RequestError) as ei:
        expand_manifests(req, owner_uid=kw.pop("owner_uid", OWNER), **kw)
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_manifest_items_are_appended(mdir):
    p = write_manifest(mdir / "list.txt",
                       "# inputs\n\n/a/x@c:/x\r\n   /a/y/@d:~/y/  \n/a/p+q@c:/p+q\n")
    r = expand_manifests(manifest_req(p, "+/a/z@c:/z"), owner_uid=OWNER)
    assert [i.local for i in r.items] == ["/a/z", "/a/x", "/a/y/", "/a/p+q"]
    assert r.items[2].remote == "/~/y/"
    assert r.items[1].origin == f"manifest '{p}' line 3"
    assert r.manifests == (p,)


def test_no_manifest_is_identity():
    r = pin("/a@c:/b")
    assert expand_manifests(r, owner_uid=0) is r


def test_manifest_bad_line_names_line(mdir):
    p = write_manifest(mdir / "l", "/a/x@c:/x\n# c\nfoo\n")
    assert expand_err(manifest_req(p)) == (
        f"stagein_globus: manifest '{p}' line 3: item 'foo' has no '@'; {IN_FORM}")


def test_manifest_options_are_refused(mdir):
    p = write_manifest(mdir / "l", "sync=size\n")
    assert "line 1 'sync=size': a manifest holds items only" in expand_err(manifest_req(p))


def test_manifest_space_in_path(mdir):
    p = write_manifest(mdir / "l", "/a/x y@c:/x\n")
    assert "line 1: item: local path '/a/x y' contains a space; write it as %20" in \
        expand_err(manifest_req(p))


def test_manifest_duplicates_across_value_and_file(mdir):
    p = write_manifest(mdir / "l", "/a/x@c:/x\n")
    msg = expand_err(manifest_req(p, "+/a/x@c:/x"))
    assert f"manifest '{p}' line 1 '/a/x@c:/x' repeats item 2" in msg


def test_manifest_item_cap(mdir):
    p = write_manifest(mdir / "l", "".join(f"/a/{i}@c:/{i}\n" for i in range(6)))
    assert "more than 5 items with manifests" in expand_err(manifest_req(p), max_items=5)


def test_manifest_not_utf8(mdir):
    p = write_manifest(mdir / "l", b"/a/x@c:/x\n/a/\xff@c:/y\n")
    assert f"manifest '{p}' line 2 is not UTF-8 text" in expand_err(manifest_req(p))


def test_manifest_symlink_file_refused(mdir):
    real = write_manifest(mdir / "real", "/a/x@c:/x\n")
    link = mdir / "link"
    link.symlink_to(real)
    os.lchown(link, OWNER, -1)
    assert "is a symbolic link" in expand_err(manifest_req(str(link)))


def test_manifest_symlink_parent_refused(mdir):
    write_manifest(mdir / "real", "/a/x@c:/x\n")
    (mdir.parent / "alias").symlink_to(mdir)
    path = str(mdir.parent / "alias" / "real")
    msg = expand_err(manifest_req(path))
    assert f"'{mdir.parent}/alias' is a symbolic link" in msg


def test_manifest_wrong_owner(mdir):
    p = write_manifest(mdir / "l", "/a/x@c:/x\n", uid=OWNER)
    assert "is not owned by the job owner" in expand_err(manifest_req(p), owner_uid=OWNER + 1)


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_manifest_writable_by_others(mdir, mode):
    p = write_manifest(mdir / "l", "/a/x@c:/x\n", mode=mode)
    assert f"is writable by others; run: chmod go-w {p}" in expand_err(manifest_req(p))


def test_manifest_too_big(mdir):
    p = write_manifest(mdir / "l", "/a/x@c:/x\n" + "#" * 200 + "\n")
    assert "a manifest may be at most 100 bytes" in expand_err(manifest_req(p), max_bytes=100)


def test_manifest_missing_and_not_regular(mdir):
    assert "No such file or directory" in expand_err(manifest_req(str(mdir / "nope")))
    assert "No such file or directory" in expand_err(manifest_req(str(mdir / "no" / "pe")))
    os.mkfifo(mdir / "fifo")
    os.chown(mdir / "fifo", OWNER, -1)
    assert "is not a regular file" in expand_err(manifest_req(str(mdir / "fifo")))
    (mdir / "d").mkdir()
    assert "is not a regular file" in expand_err(manifest_req(str(mdir / "d")))
    f = write_manifest(mdir / "f", "x")
    assert "is not a directory" in expand_err(manifest_req(f + "/x"))


def test_manifest_in_a_directory_the_owner_cannot_search_is_no_oracle(mdir):
    # The hook runs as root: a file that exists in another user's private
    # directory must be refused in the same words as one that does not.
    private = mdir / "private"
    private.mkdir(mode=0o700)
    os.chown(private, OWNER + 1, -1)
    there = write_manifest(private / "there", "/a/x@c:/x\n", uid=OWNER + 1)
    msgs = [expand_err(manifest_req(p)).replace(p, "PATH")
            for p in (there, str(private / "missing"), str(private / "sub" / "deeper"))]
    assert msgs[0] == msgs[1] == msgs[2] == (
        f"stagein_globus: manifest 'PATH' cannot be read: '{private}': Permission denied")
    # the same for the job owner's own file in there: they could not read it either
    os.chown(there, OWNER, -1)
    assert "'%s': Permission denied" % private in expand_err(manifest_req(there))


def test_manifest_access_is_checked_with_the_owners_groups_and_modes(mdir):
    shared = mdir / "shared"
    shared.mkdir(mode=0o750)
    os.chown(shared, OWNER + 1, 4242)
    p = write_manifest(shared / "l", "/a/x@c:/x\n")
    assert "Permission denied" in expand_err(manifest_req(p))
    ok = request.read_manifest(p, owner_uid=OWNER, owner_gids=[4242])     # a group member
    assert ok == b"/a/x@c:/x\n"
    shared.chmod(0o751)                                  # search for others, no listing
    assert request.read_manifest(p, owner_uid=OWNER) == ok
    os.chmod(p, 0o200)                                   # the owner's own file, unreadable
    assert f"cannot be read: '{p}': Permission denied" in expand_err(manifest_req(p))


def test_manifest_read_file_override():
    calls = []

    def fake(path):
        calls.append(path)
        return "/a/x@c:/x\n"

    r = expand_manifests(pin("manifest=/nowhere/m"), owner_uid=0, read_file=fake)
    assert calls == ["/nowhere/m"] and r.items[0].local == "/a/x"

    def broken(path):
        raise PermissionError(13, "Permission denied")

    assert "a manifest may be at most 10 bytes" in expand_err(
        pin("manifest=/nowhere/m"), read_file=lambda p: "/a/x@c:/x\n" * 2, max_bytes=10)

    msg = expand_err(pin("manifest=/nowhere/m"), read_file=broken)
    assert msg == "stagein_globus: manifest '/nowhere/m' cannot be read (Permission denied)"
