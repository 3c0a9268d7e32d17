"""cli.main turns every failure into one line and an exit code scripts can use."""
import argparse

from pbs_globus_staging import cli
from pbs_globus_staging.errors import ConfigError, RetryableError


def run_with(monkeypatch, capsys, exc):
    def boom(args):
        raise exc

    def parser():
        p = argparse.ArgumentParser()
        p.set_defaults(func=boom, command="status")
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    code = cli.main([])
    return code, capsys.readouterr().err


def test_bug_gives_one_line_not_a_traceback(monkeypatch, capsys):
    code, err = run_with(monkeypatch, capsys, ValueError("bad thing"))
    assert code == cli.EXIT_BAD
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("globus-staging: internal error (ValueError: bad thing)")


def test_error_classes_map_to_exit_codes(monkeypatch, capsys):
    assert run_with(monkeypatch, capsys, ConfigError("x.yaml: agent: bad"))[0] == cli.EXIT_USAGE
    code, err = run_with(monkeypatch, capsys, RetryableError("PBS unreachable"))
    assert code == cli.EXIT_RETRY and "try again later" in err
