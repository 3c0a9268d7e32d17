"""The README's main command: the demo runs all six scenarios and says so."""
from pbs_globus_staging_sim import demo


def test_demo_runs_every_scenario(tmp_path, capsys):
    assert demo.main(workdir=str(tmp_path / "demo")) == 0
    out = capsys.readouterr().out
    for scenario in ("Scenario A", "Scenario B", "Scenario C", "Scenario D", "Scenario E",
                     "Scenario F"):
        assert scenario in out
    # F: the user logged in through the printed URL and pasted the code
    assert "Please authenticate with Globus here" in out and "/v2/oauth2/authorize?" in out
    assert "$ globus-staging login --collection 05d2c76a-e867-4f67-aa57-76edeb0beda0" in out
    assert "all scenarios behaved as expected" in out
    assert "[PBS staging] job" in out and "stage-in failed" in out     # alerts were mailed
