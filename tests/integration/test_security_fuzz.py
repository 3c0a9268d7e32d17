"""CI's sample of bench/fuzz_queuejob.py (issue 6, item 3): hostile requests
through the real queuejob hook script in the PBS double's hook runner.  The
full run (100,000 requests) is ``python bench/fuzz_queuejob.py``."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench" / "fuzz_queuejob.py"


def _load():
    spec = importlib.util.spec_from_file_location("fuzz_queuejob", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_thousand_hostile_requests_no_crash_no_escape(tmp_path):
    fuzz = _load()
    r = fuzz.run(2000, seed=7, workdir=tmp_path)
    assert r["crashes"] == [], r["crashes"][:5]
    assert r["escapes"] == [], r["escapes"][:5]
    # the generator really exercises both sides
    assert r["accepts"] > 200 and r["refusals"] > 1000
    assert len(r["shapes"]) > 40
    for shape, example in r["examples"].items():
        assert example.startswith(("stagein_globus: ", "stageout_globus: ")), example
        assert "\n" not in example and "\r" not in example
        assert "Traceback" not in example


def test_classifier_catches_a_hook_that_crashes(tmp_path, monkeypatch):
    """The harness must not hide a crash: a hookcore that raises is counted."""
    fuzz = _load()
    from pbs_globus_staging import hookcore

    def broken(**kw):
        raise ValueError("boom")

    monkeypatch.setattr(hookcore, "queuejob", broken)
    r = fuzz.run(50, seed=1, workdir=tmp_path)
    # every request carries a staging value, so every one reaches hookcore
    assert r["accepts"] == 0 and r["refusals"] == 0
    assert len(r["crashes"]) == 50
    assert all("could not be checked" in c for c in r["crashes"])


def test_command_line_prints_figures_and_command():
    proc = subprocess.run([sys.executable, str(BENCH), "--count", "300", "--seed", "3",
                           "--shapes", "5"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "# command: python bench/fuzz_queuejob.py --count 300 --seed 3" in out
    assert "crashes:   0" in out and "escapes:   0" in out
    assert "requests:  300" in out
