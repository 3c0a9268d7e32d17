"""The end-to-end sites install in-process (StagingSite(install="in-process")): the
install code runs in the test's process and the double applies each directive there.
These pin that it installs exactly what ``globus-staging install`` as a subprocess,
through ``PBS_EXEC/bin/qmgr``, installs, and that both report a refused directive alike."""
import json

import pytest

from pbs_globus_staging.errors import StagingError
from pbs_globus_staging.installer import Qmgr

from pbs_globus_staging_sim.site import DoubleQmgr, StagingSite


def _installed(site):
    """What PBS holds after the install, with the site's own directory named ROOT."""
    def qmgr(line):
        proc = site.pbs.run(["qmgr", "-c", line])
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.replace(str(site.root), "ROOT")

    hooks_dir = site.pbs.conf.hooks_dir
    files = {p.name: p.read_text().replace(str(site.root), "ROOT")
             for p in sorted(hooks_dir.iterdir()) if p.is_file()}
    hook_config = json.loads((site.pbs.home / "globus_staging" / "globus_staging.json")
                             .read_text().replace(str(site.root), "ROOT"))
    return {"hooks": qmgr("print hook"), "resources": qmgr("list resource"),
            "hook files": files, "hook config": hook_config}


@pytest.fixture
def both(tmp_path):
    sites = [StagingSite(tmp_path / mode, install=mode) for mode in ("command", "in-process")]
    try:
        for site in sites:
            site.start()
        yield sites
    finally:
        for site in sites:
            site.stop()


def test_in_process_install_installs_what_the_command_installs(both):
    by_command, in_process = (_installed(site) for site in both)
    assert "create hook globus_staging_periodic" in by_command["hooks"]
    assert "stagein_globus" in by_command["resources"]
    assert any(name.endswith(".PY") for name in by_command["hook files"])
    assert in_process == by_command


def test_both_qmgrs_refuse_a_directive_with_the_same_words(both, monkeypatch):
    site = both[0]
    monkeypatch.setenv("PBS_CONF_FILE", str(site.pbs.conf_file))   # as the CLI's env has it
    line = "create hook globus_staging_queuejob"       # exists: qmgr refuses a second
    with pytest.raises(StagingError) as by_command:
        Qmgr(pbs_exec=str(site.pbs.exec_dir)).run(line)
    with pytest.raises(StagingError) as in_process:
        DoubleQmgr(site.pbs).run(line)
    assert "failed (exit " in str(by_command.value)
    assert str(in_process.value) == str(by_command.value)
    assert DoubleQmgr(site.pbs).exists("hook", "globus_staging_queuejob")
    assert not DoubleQmgr(site.pbs).exists("hook", "no_such_hook")


def test_an_unknown_install_way_is_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"install='pip': expected one of command, in-process"):
        StagingSite(tmp_path, install="pip")
