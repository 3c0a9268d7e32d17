"""Property tests of the grammar: nothing but RequestError escapes, messages are one
line, render/parse round-trip, render never needs PBS quoting."""
from __future__ import annotations

import datetime as dt
import string

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pbs_globus_staging import request
from pbs_globus_staging.errors import RequestError
from pbs_globus_staging.request import (Deadline, Direction, Item, Options, StagingRequest,
                                        parse, render)

SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

GRAMMAR_ALPHABET = (
    "/@:+%=~.-_#,' \t\n\r\x00\x1b\x7f" "abcxyzAZ019" "2B40FfEe"
    "\u202e\u200b\u00a0\uff0f\u2215\u2024\uff0e\ufeff\u0338" "é数"
)
WORDS = st.sampled_from([
    "/", "@", ":", "+", "~/", "/~/", "..", ".", "%2B", "%40", "%2F", "%2e", "%", "%zz",
    "task=", "manifest=", "sync=", "checksum=", "deadline=", "onfail=", "cleanup=", "when=",
    "size", "yes", "7d", "2030-01-01", "hold", "ok", "theta-dtn",
    "08925f04-569f-11e7-bef8-22000b9a448b", "/lus/alice/in/", "/lus/a/x", "\u202e", "\x00",
])


def assert_parses_or_request_error(value, direction):
    try:
        r = parse(value, direction=direction)
    except RequestError as e:
        msg = str(e)
        assert msg.startswith(("stagein_globus: ", "stageout_globus: "))
        assert msg == " ".join(msg.split()), repr(msg)          # one line, no stray space
        assert msg.isprintable(), repr(msg)                      # no control/bidi chars
        assert len(msg) < 700
        return None
    assert isinstance(r, StagingRequest)
    # Whatever parses must also round-trip.
    assert parse(render(r), direction=direction) == r
    return r


@SETTINGS
@given(st.text(), st.sampled_from(["in", "out"]))
@example("/a\u202e@c:/x", "in")
@example("\x00" * 5000, "in")
@example("%" * 10, "out")
@example("/a\ud800@c:/x", "in")
@example("/lus/a/x@c:/\U0001d7ce\U000e0001", "out")
def test_any_text_parses_or_raises_request_error(value, direction):
    assert_parses_or_request_error(value, direction)


@SETTINGS
@given(st.text(alphabet=GRAMMAR_ALPHABET, max_size=80), st.sampled_from(["in", "out"]))
def test_grammar_alphabet_text(value, direction):
    assert_parses_or_request_error(value, direction)


@SETTINGS
@given(st.lists(WORDS, max_size=12).map("".join), st.sampled_from(["in", "out"]))
def test_grammar_words(value, direction):
    assert_parses_or_request_error(value, direction)


def test_huge_inputs_fail_fast():
    for value in ("/a@c:/" + "x" * 10_000_000, "+" * 100_000, "\u202e" * 50_000):
        assert_parses_or_request_error(value, "in")


# --- generated valid requests ---------------------------------------------

SEGMENT_CHARS = "".join(c for c in string.printable if c not in "/\t\n\r\x0b\x0c") + "éü数据ßΩ"
segment = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and not s.startswith("~"))
uuid = st.uuids().map(str)
alias = st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,10}", fullmatch=True).filter(
    lambda a: not request.is_uuid(a))


@st.composite
def items(draw):
    recursive = draw(st.booleans())
    local_parts = draw(st.lists(segment, min_size=1, max_size=4))
    remote_parts = draw(st.lists(segment, min_size=0 if recursive else 1, max_size=4))
    home = draw(st.booleans())
    local = "/" + "/".join(local_parts)
    remote = ("/~/" if home else "/") + "/".join(remote_parts)
    if recursive:
        local += "/"
        remote = remote if remote.endswith("/") else remote + "/"
    elif not remote_parts:
        remote += "x"
    coll = draw(st.one_of(uuid, alias))
    return Item(local, coll, remote, recursive)


relative_deadline = st.builds(
    lambda n, u: Deadline(seconds=n * {"m": 60, "h": 3600, "d": 86400}[u], form=f"{n}{u}"),
    st.integers(1, 400), st.sampled_from("mhd"))


@st.composite
def absolute_deadline(draw):
    at = draw(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 1, 1)))
    if draw(st.booleans()):
        at = at.replace(second=0, microsecond=0, tzinfo=dt.timezone.utc)
        return Deadline(at=at, form=at.strftime("%Y-%m-%dT%H:%M"))
    at = at.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=dt.timezone.utc)
    return Deadline(at=at, form=at.strftime("%Y-%m-%d"))


def file_path():
    return st.lists(segment, min_size=1, max_size=3).map(lambda p: "/" + "/".join(p))


@st.composite
def requests(draw):
    d = draw(st.sampled_from([Direction.IN, Direction.OUT]))
    dest = (lambda i: i.local) if d is Direction.IN else (lambda i: (i.collection, i.remote))
    its = draw(st.lists(items(), max_size=5, unique_by=dest))
    tasks = draw(st.lists(uuid, max_size=2, unique=True)) if d is Direction.IN else []
    manifests = draw(st.lists(file_path(), max_size=2, unique=True))
    if not (its or tasks or manifests):
        its = [draw(items())]
    maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
    options = Options(
        sync_level=draw(maybe(st.sampled_from(["exists", "size", "mtime", "checksum"]))),
        verify_checksum=draw(maybe(st.booleans())),
        deadline=draw(maybe(st.one_of(relative_deadline, absolute_deadline()))),
        onfail=draw(maybe(st.sampled_from(["hold", "delete"]))) if d is Direction.IN else None,
        cleanup=draw(maybe(file_path())) if d is Direction.IN else None,
        when=draw(maybe(st.sampled_from(["ok", "always", "notok"]))) if d is Direction.OUT else None,
    )
    return StagingRequest(d, tuple(its), tuple(tasks), tuple(manifests), options)


# Generating whole requests is the slow part, so one test checks all three
# properties of each generated request.
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.text(max_size=20))
def test_render_round_trips_needs_no_quoting_and_keys_are_stable(r, identity):
    text = render(r)
    assert parse(text, direction=r.direction) == r
    # render is canonical: a second trip gives the same text
    assert render(parse(text, direction=r.direction)) == text
    # PBS splits an unquoted value at ',' and whitespace; quotes change its parsing
    assert "," not in text
    assert not any(c.isspace() for c in text)
    assert '"' not in text and "'" not in text
    k = request.request_key(r, identity=identity)
    assert k == request.request_key(parse(text, direction=r.direction), identity=identity)
    assert k != request.request_key(r, identity=identity + "x")
