"""One duration grammar for the whole site.yaml and one byte format for what a
PBS admin or user reads (the job comment, the mail, ``globus-staging show``)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pbs_globus_staging import alerts, decide, report, siteconfig, units
from pbs_globus_staging.alerts import AlertEngine, StagingEvent, parse_rules
from pbs_globus_staging.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PY36 = "/root/.pyenv/versions/3.6.15/bin/python"
SRC = "site.yaml"

# ----------------------------------------------------------------------------- durations

ACCEPTED = [
    (90, 90.0), (0.5, 0.5), ("90", 90.0), ("1.5", 1.5), ("30s", 30.0), ("10m", 600.0),
    ("2h", 7200.0), ("1.5h", 5400.0), (" 1.5 h ", 5400.0), ("7d", 604800.0),
    ("1w", 604800.0), ("1h30m", 5400.0), ("1h 30m", 5400.0), ("1w2d", 777600.0),
    ("1d12h30m15s", 131415.0), ("0.5d", 43200.0), ("2h0.5m", 7230.0),
]
REJECTED = ["abc", "", "  ", "h", "1x", "1H", "30m1h", "1h1h", "1e3", "-5", "1.h", ".5h",
            "1h-30m", "1,5h", True, None, [], -1, float("inf"), float("nan"),
            "9" * 400 + "w"]


def site_seconds(value):
    return siteconfig.from_dict({"agent": {"slow_after": value}}, source=SRC).agent.slow_after


def alert_seconds(value):
    cfg = parse_rules({"rules": [{"name": "x", "on": ["slow"], "do": ["log"],
                                  "repeat": value}]}, source=SRC)
    return cfg.rules[0].repeat


@pytest.mark.parametrize("value,seconds", ACCEPTED)
def test_one_grammar_accepted_everywhere(value, seconds):
    assert units.parse_duration(value) == seconds
    assert siteconfig.parse_duration(value) == seconds
    assert site_seconds(value) == seconds
    if seconds >= alerts.MIN_REPEAT:  # repeat has its own floor; retry_for a bigger one
        assert alert_seconds(value) == seconds
    assert alerts.parse_duration(value) == seconds


def test_what_used_to_be_one_sides_only():
    # the drift named by issue 13: each side refused the other's forms
    assert site_seconds("1h30m") == 5400.0
    assert alert_seconds("1.5h") == 5400.0
    assert alert_seconds("1w") == 604800.0
    assert parse_rules({"retry_for": "1.5d"}, source=SRC).retry_for == 129600.0


@pytest.mark.parametrize("value", REJECTED)
def test_rejected_with_one_line_naming_value_and_form(value):
    with pytest.raises(units.DurationError) as ei:
        units.parse_duration(value)
    text = str(ei.value)
    assert "\n" not in text and text.startswith(repr(value)[:20])
    assert units.DURATION_FORM in text
    assert siteconfig.parse_duration(value) is None
    with pytest.raises(ConfigError) as ei:
        siteconfig.from_dict({"agent": {"slow_after": value}}, source=SRC)
    text = str(ei.value)
    assert "\n" not in text and "agent.slow_after" in text
    assert units.DURATION_EXAMPLES in text and "(got " in text
    if value is None:
        return  # `repeat: null` in a rule means "do not repeat"
    with pytest.raises(ConfigError) as ei:
        alert_seconds(value)
    text = str(ei.value)
    assert "\n" not in text and ".repeat" in text
    assert f"is not a duration (expected {units.DURATION_FORM})" in text


def test_range_stays_with_the_key():
    assert units.parse_duration(0) == 0.0 and units.parse_duration("0s") == 0.0
    assert siteconfig.from_dict({"agent": {"batch_window": "0s"}},
                                source=SRC).agent.batch_window == 0
    with pytest.raises(ConfigError, match="agent.slow_after: must be a positive number"):
        site_seconds("0m")
    with pytest.raises(ValueError):
        alerts.parse_duration("0h")
    with pytest.raises(ConfigError, match=r"repeat: '30s' is too short"):
        alert_seconds("30s")


UNITS = dict(units.DURATION_UNITS)
number = st.one_of(st.integers(min_value=0, max_value=10**6),
                   st.decimals(min_value=0, max_value=10**6, places=3,
                               allow_nan=False, allow_infinity=False))


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.tuples(st.sampled_from([u for u, _ in units.DURATION_UNITS]), number),
                      min_size=1, max_size=5, unique_by=lambda p: p[0]),
       spaces=st.sampled_from(["", " "]))
def test_compound_is_the_sum_of_its_parts(parts, spaces):
    order = [u for u, _ in units.DURATION_UNITS]
    parts = sorted(parts, key=lambda p: order.index(p[0]))
    text = spaces.join(f"{n}{u}" for u, n in parts)
    expected = sum(float(n) * UNITS[u] for u, n in parts)
    assert units.parse_duration(text) == pytest.approx(expected, rel=1e-12)
    assert siteconfig.parse_duration(text) == units.parse_duration(text)
    if len(parts) > 1:  # the same parts smallest first: a typo, refused
        backwards = "".join(f"{n}{u}" for u, n in reversed(parts))
        with pytest.raises(units.DurationError):
            units.parse_duration(backwards)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_plain_seconds_as_number_or_text(n):
    assert units.parse_duration(n) == units.parse_duration(str(n)) == \
        units.parse_duration(f"{n}s") == float(n)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=12))
def test_any_text_parses_or_fails_with_the_one_error(text):
    try:
        seconds = units.parse_duration(text)
    except units.DurationError as e:
        assert "\n" not in str(e)
    else:
        assert seconds >= 0 and seconds == siteconfig.parse_duration(text)


def test_units_module_runs_on_python36():
    python = PY36 if os.path.exists(PY36) else sys.executable
    code = ("import sys; sys.path.insert(0, %r); import units; "
            "print(units.parse_duration('1h30m'), units.parse_duration(' 1.5h'), "
            "units.human_bytes(12345678))" % str(REPO / "lib" / "pbs_globus_staging"))
    out = subprocess.run([python, "-I", "-c", code], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["5400.0", "5400.0", "11.8", "MiB"]


def test_grammar_is_documented_once():
    doc = (REPO / "docs" / "grammar.md").read_text()
    assert doc.count("## Durations in site.yaml") == 1
    for example in units.DURATION_EXAMPLES.split(", "):
        assert f"`{example}`" in doc
    alerts_doc = (REPO / "docs" / "alerts.md").read_text()
    assert "grammar.md#durations-in-siteyaml" in alerts_doc


# ----------------------------------------------------------------------------- bytes

@pytest.mark.parametrize("n,text", [
    (0, "0 B"), (1, "1 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (6000, "5.9 KiB"),
    (1048575, "1.0 MiB"), (12_345_678, "11.8 MiB"), (5 * 2**30, "5.0 GiB"),
    (3 * 2**40, "3.0 TiB"), (2**50 * 7, "7.0 PiB"), (2**60, "1024.0 PiB"),
])
def test_byte_format(n, text):
    assert units.human_bytes(n) == text
    assert "," not in text   # it goes into PBS job comments


def test_one_function_everywhere():
    assert decide.human_bytes is units.human_bytes
    assert alerts._fmt_bytes(12_345_678) == units.human_bytes(12_345_678)


def mail_body(nbytes: int) -> str:
    cfg = parse_rules({"rules": [{"name": "x", "on": ["slow"], "do": ["log"]}]}, source=SRC)
    eng = AlertEngine(cfg, ledger=None, deliver=lambda d: None, hostname="pbs01")
    ev = StagingEvent(kind="slow", job_id="12.pbs01", owner="alice@login1",
                      task_id="8f4c2a1e-1111-2222-3333-444455556666", bytes=nbytes, files=3)
    return eng.render(ev, rule_name="x")[1]


def show_text(nbytes: int) -> str:
    view = {"job_id": "12.pbs01", "owner": "alice", "queue": "workq", "timeline": [],
            "requests": [{"direction": "in", "state": "active", "request": "r",
                          "transfers": [{"task_id": "8f4c2a1e", "status": "active",
                                         "files_transferred": 1, "files": 3,
                                         "bytes_transferred": nbytes}]}]}
    return report.format_timeline(view)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=2**55))
def test_comment_mail_and_show_say_the_same_for_one_transfer(nbytes):
    """Issue 13: the comment said 12.3 MB and the mail 11.8 MiB for one transfer."""
    comment = decide.progress_text(files=3, files_done=1, bytes_done=nbytes, rate=0,
                                   nice_status=None, task_id="8f4c2a1e")
    text = units.human_bytes(nbytes)
    assert f"files {text}" in comment
    assert f"Data:      {text} in 3 files" in mail_body(nbytes)
    assert f"1/3 files  {text}" in show_text(nbytes)


def test_the_issue_transfer():
    comment = decide.progress_text(files=3, files_done=1, bytes_done=12_345_678, rate=0,
                                   nice_status=None, task_id="8f4c2a1e")
    assert "11.8 MiB" in comment and "11.8 MiB in 3 files" in mail_body(12_345_678)
