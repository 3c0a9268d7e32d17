"""The README's main command: the demo runs all five scenarios and says so."""
from pbs_globus_staging import demo


def test_demo_runs_every_scenario(tmp_path, capsys):
    assert demo.main(workdir=str(tmp_path / "demo")) == 0
    out = capsys.readouterr().out
    for scenario in ("Scenario A", "Scenario B", "Scenario C", "Scenario D", "Scenario E"):
        assert scenario in out
    assert "all scenarios behaved as expected" in out
    assert "[PBS staging] job" in out and "stage-in failed" in out     # alerts were mailed
